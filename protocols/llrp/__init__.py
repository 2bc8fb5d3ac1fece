"""LLRP (EPCglobal Low Level Reader Protocol) over asyncio: codec and framing.

Shared by the edge's reader client and the simulated reader. Standard library only.
"""

from protocols.llrp.codec import (
    LLRPError,
    Message,
    Param,
    RawParam,
    decode_body,
    decode_message,
    encode_body,
    encode_message,
    message,
    param,
    status,
    view,
)
from protocols.llrp.framing import (
    FrameBuffer,
    LLRPFrameError,
    MessageWriter,
    read_frame,
    read_message,
)

__all__ = [
    "FrameBuffer",
    "LLRPError",
    "LLRPFrameError",
    "Message",
    "MessageWriter",
    "Param",
    "RawParam",
    "decode_body",
    "decode_message",
    "encode_body",
    "encode_message",
    "message",
    "param",
    "read_frame",
    "read_message",
    "status",
    "view",
]
