"""The `domains.epcis` section of the cloud config: where each store and read point is.

Locations are GS1 Global Location Numbers. A GLN is given as its 13 digits (the check digit
is checked) with the length of the GS1 Company Prefix inside it, which the EPC pure
identity needs to split it (Tag Data Standard, SGLN: `urn:epc:id:sgln:CompanyPrefix.
LocationReference.Extension`). A read point is either a GLN of its own or the store's GLN
with an extension (GS1 AI 254), e.g. one per shelf, door or till.

A store without a GLN, and a read point the config does not name, keep a URN of ours
(`urn:storegate:{store}`, `urn:storegate:{store}:shelf:{shelf}`): the events still say
what happened, only not in GS1 location terms.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocols.ids import Identifier

GLN_DIGITS = 13
# GS1 AI 254 (GLN extension component) allows up to 20 characters of GS1's set 82; these are
# the ones a pure-identity URI carries without escaping.
EXTENSION_PATTERN = r"^[A-Za-z0-9_.\-]{1,20}$"


def gs1_check_digit(body: str) -> int:
    """The GS1 mod-10 check digit of `body` (weights 3, 1, 3, ... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def check_gln(gln: str) -> str:
    """The GLN if it is 13 digits with the right check digit; ValueError saying why not."""
    if not re.fullmatch(r"\d{13}", gln):
        raise ValueError(f"GLN {gln!r} is not 13 digits")
    expected = gs1_check_digit(gln[:-1])
    if int(gln[-1]) != expected:
        raise ValueError(
            f"GLN {gln!r} has check digit {gln[-1]}, expected {expected}: a typo in the GLN?"
        )
    return gln


def sgln_uri(gln: str, company_prefix_digits: int, extension: str = "0") -> str:
    """The SGLN pure-identity URI of a GLN (extension "0": the location itself)."""
    prefix, reference = gln[:company_prefix_digits], gln[company_prefix_digits:-1]
    return f"urn:epc:id:sgln:{prefix}.{reference}.{extension}"


class ReadPointRole(StrEnum):
    SHELF = "shelf"  # a shelf or display: items arrive, move and leave
    EXIT = "exit"  # a customer entrance/exit door: an item read here leaves the store
    POS = "pos"  # a point-of-sale reader: an item read here is sold


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gln: str | None = Field(default=None, description="13 digits, check digit checked")
    company_prefix_digits: int | None = Field(
        default=None, ge=6, le=12, description="length of the GS1 Company Prefix in the GLN"
    )

    @field_validator("gln")
    @classmethod
    def _gln(cls, value: str | None) -> str | None:
        return None if value is None else check_gln(value)

    @model_validator(mode="after")
    def _prefix_with_gln(self) -> Location:
        if self.gln is not None and self.company_prefix_digits is None:
            raise ValueError("a GLN needs company_prefix_digits (6-12) to make its SGLN URI")
        return self


class ReadPoint(Location):
    role: ReadPointRole = ReadPointRole.SHELF
    extension: str | None = Field(
        default=None,
        pattern=EXTENSION_PATTERN,
        description="the store's GLN with this extension, when the read point has no GLN",
    )

    @model_validator(mode="after")
    def _gln_or_extension(self) -> ReadPoint:
        if self.gln is not None and self.extension is not None:
            raise ValueError("give a read point either its own gln or an extension, not both")
        return self


class StoreLocations(Location):
    read_points: dict[Identifier, ReadPoint] = Field(
        default_factory=dict, description="by shelf id (the edge's antenna → shelf mapping)"
    )

    @model_validator(mode="after")
    def _extensions_need_a_store_gln(self) -> StoreLocations:
        for name, point in self.read_points.items():
            if point.gln is None and point.extension is not None and self.gln is None:
                raise ValueError(f"read point {name!r} has an extension but the store no gln")
        return self


class EpcisOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stores: dict[Identifier, StoreLocations] = Field(default_factory=dict)
    unsold_exit_disposition: Literal["unknown", "stolen"] = Field(
        default="unknown",
        description="what an exit read of an item never sold says: `unknown` (default), or"
        " `stolen` for a store whose policy treats every such read as a theft",
    )
    default_page_size: int = Field(default=30, ge=1, le=10_000, description="perPage default")
    max_page_size: int = Field(default=1000, ge=1, le=10_000, description="perPage limit")

    @model_validator(mode="after")
    def _page_sizes(self) -> EpcisOptions:
        if self.default_page_size > self.max_page_size:
            raise ValueError("default_page_size is larger than max_page_size")
        return self

    def store_uri(self, store: str) -> str:
        located = self.stores.get(store)
        if located is None or located.gln is None or located.company_prefix_digits is None:
            return f"urn:storegate:{store}"
        return sgln_uri(located.gln, located.company_prefix_digits)

    def read_point(self, store: str, shelf: str) -> tuple[str, ReadPointRole]:
        """The read point's URI and role."""
        located = self.stores.get(store)
        point = None if located is None else located.read_points.get(shelf)
        fallback = f"urn:storegate:{store}:shelf:{shelf}"
        if located is None or point is None:
            return fallback, ReadPointRole.SHELF
        if point.gln is not None and point.company_prefix_digits is not None:
            return sgln_uri(point.gln, point.company_prefix_digits), point.role
        if point.extension is not None and located.gln and located.company_prefix_digits:
            return sgln_uri(located.gln, located.company_prefix_digits, point.extension), point.role
        return fallback, point.role


def parse_options(options: dict[str, Any]) -> EpcisOptions:
    """Validate the section; a bad option raises ValueError naming it and why."""
    try:
        return EpcisOptions.model_validate(options)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise ValueError(f"{where}: {problem['msg']}") from None
