"""The `domains.lockers` section of the cloud config.

```yaml
domains:
  lockers:
    banks:
      - {store: store-042, node: pi-1, bank: bank-1, codes_key_env: STOREGATE_LOCKER_KEY_042_1}
    hold_hours: 48
    webhook: {url: https://shop.example/hooks/orders, max_attempts: 6}
    intake_webhook_secret_env: STOREGATE_ORDER_WEBHOOK_SECRET
```

A bank's pickup-code key is named by its environment variable, never written in the file.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from protocols.ids import IDENTIFIER_PATTERN
from protocols.pickup import PickupKey

CompartmentSize = Literal["small", "medium", "large"]
SIZE_RANK: dict[str, int] = {"small": 0, "medium": 1, "large": 2}
CompartmentId = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]


class BankConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store: str = Field(pattern=IDENTIFIER_PATTERN)
    node: str = Field(pattern=IDENTIFIER_PATTERN, description="the edge node driving the bank")
    bank: str = Field(pattern=IDENTIFIER_PATTERN, description="the locker_bank device id")
    codes_key_env: str = Field(
        min_length=1, description="NAME of the env var with the bank's hex key (as at the edge)"
    )
    code_digits: int = Field(default=8, ge=6, le=10)
    compartment_sizes: dict[Annotated[str, Field(pattern=IDENTIFIER_PATTERN)], CompartmentSize] = (
        Field(
            default_factory=dict,
            description="size per compartment id (e.g. `0-01: large`); unlisted ones are medium."
            " A locker return takes the smallest free compartment of at least the size asked for",
        )
    )


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    max_attempts: int = Field(default=6, ge=1, le=50)
    backoff_base_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    queue_size: int = Field(
        default=1000, ge=1, description="deliveries waiting; when full the oldest is dropped"
    )


class LockersOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    banks: list[BankConfig] = Field(default_factory=list)
    hold_hours: float = Field(default=48, gt=0, le=24 * 14)
    command_expiry_s: float = Field(default=120, gt=0)
    expiry_check_s: float = Field(default=30, gt=0)
    webhook: WebhookConfig | None = None
    cloud_node: str = Field(
        default="cloud", pattern=IDENTIFIER_PATTERN, description="`node` of order updates"
    )
    reserve_stock: bool = Field(
        default=True,
        description="an order reserves its lines out of what RFID counts on the shelves and is"
        " refused (409) when they are not available; false only for stores whose goods carry"
        " no RFID tags (nothing would ever be available)",
    )

    intake_webhook_secret_env: str | None = Field(
        default=None,
        min_length=1,
        description="NAME of the env var with the HMAC secret of the order webhook"
        " (`POST /api/v1/webhooks/orders`); unset: the webhook refuses every delivery",
    )

    @model_validator(mode="after")
    def _unique_banks(self) -> LockersOptions:
        keys = [(b.store, b.bank) for b in self.banks]
        twice = sorted({f"{s}/{b}" for s, b in keys if keys.count((s, b)) > 1})
        if twice:
            raise ValueError(f"banks listed twice: {', '.join(twice)}")
        return self

    def intake_secret(self) -> bytes | None:
        """The order webhook's HMAC secret from its environment variable (None: unset)."""
        if self.intake_webhook_secret_env is None:
            return None
        value = os.environ.get(self.intake_webhook_secret_env)
        if not value:
            raise ValueError(
                f"intake_webhook_secret_env: environment variable"
                f" {self.intake_webhook_secret_env} is not set"
            )
        return value.encode()

    def load_keys(self) -> dict[tuple[str, str], PickupKey]:
        """Each bank's key from its environment variable; a missing one is a config error."""
        return {(b.store, b.bank): PickupKey.from_env(b.codes_key_env) for b in self.banks}
