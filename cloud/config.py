"""The cloud's config file (`storegate cloud -c cloud.yaml`), with environment overrides.

Environment variables win over the file: `STOREGATE_CLOUD_MQTT__HOST=broker`,
`STOREGATE_CLOUD_DATABASE_URL=postgresql+asyncpg://...`. API keys are stored as sha256
hashes so that the config file (often in a repository or a config map) never holds a key.
"""

from __future__ import annotations

import hashlib
import os
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from cloud.timeseries.config import HistorySettings
from protocols.ids import IDENTIFIER_PATTERN
from protocols.mqtt import MqttSettings
from protocols.settings import FileSettings, load_settings

DATA_DIR_ENV = "STOREGATE_CLOUD_DATA_DIR"


def default_data_dir() -> Path:
    """Where `storegate cloud` keeps its files unless told otherwise.

    `$XDG_STATE_HOME/storegate` when the user has a state home (the XDG rule for data that
    should survive a restart but is not worth a backup), else `./.storegate`: never loose
    files in the working folder.
    """
    state_home = os.environ.get("XDG_STATE_HOME")
    return Path(state_home) / "storegate" if state_home else Path(".storegate")


class Role(StrEnum):
    OPS = "ops"  # everything, every store, registration
    STAFF = "staff"  # its stores only: read, plus store-team writes (reorder points,
    # planograms, alert acks, locker loading)
    SHOPPER_APP = "shopper_app"  # the online channel: GTIN availability only


def hash_key(key: str) -> str:
    """The form a key is stored in: lowercase hex sha256."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="who holds it, for logs")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 hex of the key")
    role: Role
    stores: list[str] = Field(default_factory=list, description="staff keys: allowed stores")

    @model_validator(mode="after")
    def _staff_needs_stores(self) -> ApiKey:
        if self.role is Role.STAFF and not self.stores:
            raise ValueError(f"staff key {self.name!r} must list the stores it may see")
        return self


class StoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=IDENTIFIER_PATTERN)
    name: str = ""
    nodes: list[str] = Field(default_factory=list)

    @field_validator("nodes")
    @classmethod
    def _node_ids(cls, nodes: list[str]) -> list[str]:
        from protocols.ids import is_identifier

        for node in nodes:
            if not is_identifier(node):
                raise ValueError(f"node id {node!r} is not a valid identifier")
        return nodes


class InfluxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="e.g. http://influxdb:8086")
    api: Literal["v2", "v1"] = Field(
        default="v2",
        description="v2: /api/v2/write (InfluxDB 2.x, 3, 1.8+, VictoriaMetrics); v1: /write"
        " with basic auth (any InfluxDB 1.x, needed before 1.8)",
    )
    org: str = ""
    bucket: str = Field(
        default="storegate", description="2.x/3: the bucket; 1.x: `database` or `database/rp`"
    )
    token: SecretStr | None = Field(
        default=None, description="2.x/3: an API token; 1.x: `user:password` (none: no auth)"
    )


class BrokerAdminSettings(BaseModel):
    """This replica's login to the broker's dynamic-security control topic, which it uses
    to create shopper app logins (deploy/mosquitto/logins.yaml `admins`)."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=IDENTIFIER_PATTERN, description="also its client id")
    password: SecretStr | None = Field(
        default=None, description="STOREGATE_CLOUD_BROKER_ADMIN__PASSWORD"
    )
    timeout_s: float = Field(default=10.0, gt=0, le=120)


class IngestSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(default="storegate-cloud-ingest", pattern=IDENTIFIER_PATTERN)
    shared_group: str = Field(
        default="",
        description="MQTT 5 shared subscription group for ingestor replicas (EMQX with a hash"
        " strategy; on Mosquitto use `shards`)",
    )
    shards: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="store shards, each one persistent MQTT session `<client_id>-s<k>` leased by"
        " one replica at a time (PostgreSQL); 1 = one session on every store, no leases",
    )
    shard_password: SecretStr | None = Field(
        default=None,
        description="password of the shard logins (STOREGATE_CLOUD_INGEST__SHARD_PASSWORD);"
        " default: `mqtt.password`",
    )
    replica_id: str = Field(
        default="",
        max_length=128,
        description="this replica's name in the lease table; default: host name and process id",
    )
    lease_ttl_s: float = Field(
        default=5.0, ge=1, le=300, description="a shard lease not renewed this long is taken over"
    )
    lease_renew_s: float = Field(
        default=1.0, gt=0, le=100, description="how often leases are renewed and rebalanced"
    )
    store_poll_s: float = Field(
        default=2.0,
        gt=0,
        le=300,
        description="how often a sharded replica reads the stores table for new stores",
    )
    queue_size: int = Field(
        default=2000,
        ge=10,
        description="un-acked messages held at most; at the bound the socket is not read",
    )
    batch_max: int = Field(default=500, ge=1, le=10_000)
    batch_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=5_000,
        description=(
            "extra wait to fill a batch; 0 = take what has arrived: messages that arrive while"
            " a batch commits form the next one, so batches grow with the load on their own"
        ),
    )
    dedup_window: int = Field(
        default=1024, ge=16, description="out-of-order seqs remembered per stream above its mark"
    )
    commit_interval_ms: float = Field(
        default=200.0,
        gt=0,
        le=60_000,
        description="how often the committed positions go to the edges (one message per node)",
    )
    resync_min_interval_s: float = Field(default=30.0, ge=0)
    resync_expiry_s: float = Field(default=60.0, gt=0)
    snapshot_part_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="a split snapshot not complete this long after its first part is dropped"
        " and the node asked to resync",
    )
    spool_dir: Path | None = Field(
        default=None, description="time-series spool; default: `spool/` in the data dir"
    )
    spool_capacity_bytes: int = Field(
        default=256 * 1024 * 1024,
        gt=0,
        description="spool size on disk; when full the ingestor stops acking (backpressure)",
    )
    spool_replay_window_s: float = Field(
        default=60.0,
        ge=0,
        description=(
            "acknowledged history lines kept this long (before the newest acknowledgement) and"
            " written again after the time-series server restarts or returns from an outage,"
            " which may lose what it acknowledged; 0 = delete on acknowledgement"
        ),
    )
    spool_replay_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="at most this many bytes of acknowledged lines kept (the oldest go first)",
    )

    @model_validator(mode="after")
    def _lease_timing(self) -> IngestSettings:
        if self.shards > 1 and self.lease_renew_s * 3 > self.lease_ttl_s:
            raise ValueError(
                "ingest.lease_renew_s must be at most a third of ingest.lease_ttl_s: a replica"
                " stops a shard it could not renew one interval before its lease expires"
            )
        if self.shards > 1 and self.shared_group:
            raise ValueError("ingest.shards and ingest.shared_group exclude each other")
        return self


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    keys: list[ApiKey] = Field(default_factory=list)
    sse_queue_size: int = Field(default=256, ge=1)
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="larger request bodies are refused (413) before they are read or parsed",
    )
    auth_failure_burst: int = Field(
        default=10,
        ge=1,
        description="failed authentications a client IP (or a presented key) may make at once",
    )
    auth_failure_refill_s: float = Field(
        default=6.0,
        gt=0,
        description="one more failed attempt allowed per this many seconds (10 a minute)",
    )
    auth_failure_tracked: int = Field(
        default=10_000,
        ge=16,
        description="client IPs and keys whose failures are remembered (each table)",
    )
    metrics_key: SecretStr | None = Field(
        default=None,
        description="when set, /metrics answers only `Authorization: Bearer <key>` (or"
        " X-API-Key); default: public, for a scraper on a private network",
    )


class RetentionSettings(BaseModel):
    """How long rows that only record the past are kept (cloud/state/retention.py)."""

    model_config = ConfigDict(extra="forbid")

    dead_letters_days: float = Field(
        default=30, gt=0, description="rejected messages are deleted this long after arrival"
    )
    history_days: float = Field(
        default=90,
        gt=0,
        description="points of the SQL `history` table (no InfluxDB configured) older than"
        " this are deleted; InfluxDB keeps its own retention policy",
    )
    interval_s: float = Field(default=3600, gt=0, description="how often a pass runs")
    batch_rows: int = Field(
        default=10_000, ge=1, description="rows deleted per statement (short write locks)"
    )


class CloudSettings(FileSettings):
    model_config = SettingsConfigDict(
        env_prefix="STOREGATE_CLOUD_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="the cloud's own files (SQLite database, time-series spool);"
        " `--data-dir` or STOREGATE_CLOUD_DATA_DIR override it",
    )
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    broker_admin: BrokerAdminSettings | None = Field(
        default=None,
        description="the broker admin login; without it the cloud cannot give shopper apps"
        " broker logins (503)",
    )
    database_url: str = Field(default="", description="default: SQLite `cloud.db` in the data dir")
    influxdb: InfluxSettings | None = None
    history: HistorySettings = Field(default_factory=HistorySettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    stores: list[StoreConfig] = Field(default_factory=list)
    domains: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per-domain settings (inventory, lockers, offers, dashboard); each"
        " domain validates its own section",
    )

    @model_validator(mode="after")
    def _files_in_data_dir(self) -> CloudSettings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'cloud.db'}"
        if self.ingest.spool_dir is None:
            self.ingest.spool_dir = self.data_dir / "spool"
        return self

    @model_validator(mode="after")
    def _shards_need_postgresql(self) -> CloudSettings:
        if self.ingest.shards == 1:
            return self
        if not self.database_url.startswith("postgresql"):
            raise ValueError(
                "ingest.shards > 1 needs a PostgreSQL database_url: the shard leases and the"
                " state all replicas share live there"
            )
        if not self.mqtt.client_id or self.mqtt.client_id == self.ingest.client_id:
            raise ValueError(
                "ingest.shards > 1: every replica shares ingest.client_id (the prefix of the"
                " shard sessions) and needs its own mqtt.client_id (= its login) for its other"
                " sessions, such as the offer listener"
            )
        return self

    @property
    def spool_dir(self) -> Path:
        assert self.ingest.spool_dir is not None  # set by the validator
        return self.ingest.spool_dir

    @model_validator(mode="after")
    def _unique_stores(self) -> CloudSettings:
        ids = [store.id for store in self.stores]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"stores listed twice: {', '.join(duplicates)}")
        return self


def load_cloud_settings(path: str | Path | None) -> CloudSettings:
    return load_settings(CloudSettings, path)
