"""Smart lockers and BOPIS orders in the cloud (docs/lockers.md, "Cloud: orders").

Loaded by `cloud.domains`; `create_domain` validates the `domains.lockers` config section.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from cloud.config import CloudSettings
    from cloud.lockers.domain import LockersDomain


def create_domain(settings: CloudSettings, options: dict[str, Any]) -> LockersDomain:
    from cloud.inventory.config import parse_options as parse_inventory_options
    from cloud.lockers import tables  # noqa: F401  (registers the tables on the metadata)
    from cloud.lockers.config import LockersOptions
    from cloud.lockers.domain import LockersDomain

    try:
        parsed = LockersOptions.model_validate(options)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise ValueError(f"{where}: {problem['msg']}") from None
    # Orders reserve stock by the inventory domain's one definition of "available";
    # Pick lists name each shelf's zone by its zones.
    inventory = parse_inventory_options(settings.domains.get("inventory", {}))
    return LockersDomain(
        parsed,
        parsed.load_keys(),
        inventory.availability.safety_for,
        intake_secret=parsed.intake_secret(),
        zone_of=inventory.zones.zone_of,
    )
