"""Proximity offers: campaigns triggered by BLE zone presence of opted-in shoppers.

See docs/offers.md. Loaded by cloud.domains (the `domains.offers` config section).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from cloud.offers import tables  # noqa: F401  (registers the tables on the shared metadata)
from cloud.offers.options import OffersOptions

if TYPE_CHECKING:
    from cloud.config import CloudSettings
    from cloud.offers.domain import OffersDomain


def create_domain(settings: CloudSettings, options: dict[str, Any]) -> OffersDomain:
    from cloud.offers.domain import OffersDomain

    try:
        parsed = OffersOptions.model_validate(options)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "(section)"
        raise ValueError(f"{where}: {problem['msg']}") from None
    return OffersDomain(parsed)
