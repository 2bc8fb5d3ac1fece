"""The `storegate` command: a thin shell that dispatches to edge, cloud and simulators."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("storegate")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"
