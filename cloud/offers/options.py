"""The `domains.offers` section of the cloud config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class WebhookOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, description="POST target for every triggered offer")
    secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key for the X-Storegate-Signature header"
    )
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    queue_size: int = Field(
        default=500, ge=1, description="deliveries in memory; the rest wait in the offers table"
    )
    concurrency: int = Field(default=8, ge=1, le=64)
    max_attempts: int = Field(default=8, ge=1)
    backoff_min_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    poll_s: float = Field(default=1.0, gt=0, description="sweep for due retries")

    @model_validator(mode="after")
    def _url_scheme(self) -> WebhookOptions:
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"webhook.url must be http(s)://..., got {self.url!r}")
        return self


class OffersOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cloud_node: str = Field(
        default="cloud", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Offer.node"
    )
    offer_ttl_s: float = Field(default=900.0, gt=0, description="how long an offer is valid")
    max_event_age_s: float = Field(
        default=120.0,
        gt=0,
        description="presence events older than this (replayed after an outage) make no offer",
    )
    arbitration_window_s: float = Field(
        default=10.0, ge=0, description="reports of one shopper in two zones this close conflict"
    )
    switch_db: float = Field(default=6.0, ge=0, description="RSSI margin to win a conflict")
    visit_gap_s: float = Field(
        default=1800.0, gt=0, description="unseen this long ends a visit (and its presence row)"
    )
    token_grace_s: float = Field(
        default=3600.0, ge=0, description="expired tokens are erased this long after expiry"
    )
    analytics_retention_days: int = Field(default=90, ge=1)
    housekeeping_s: float = Field(default=60.0, gt=0)
    delivery_listener: bool = Field(
        default=True,
        description="record `delivered` when the broker routes the offer back to the cloud",
    )
    webhook: WebhookOptions = Field(default_factory=WebhookOptions)
