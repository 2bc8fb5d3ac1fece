"""The EPCIS domain's table (on the core metadata; alembic revision 0006_epcis).

`epcis_events`: one row per EPCIS event, the event itself in `event` (JSON, as served)
and the fields the standard query filters on in columns of their own. `id` orders events
with the same eventTime and is the page cursor's tie-breaker; `event_id` (the EPCIS
eventID, derived from the message's msg_id and position) is unique, so an event can never be
stored twice.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from cloud.state.schema import metadata

ID = String(64)
TS = DateTime(timezone=True)
URI = String(256)
# 64-bit on PostgreSQL; SQLite autoincrements only an INTEGER primary key (64-bit there too)
ROW_ID = BigInteger().with_variant(Integer, "sqlite")

epcis_events = Table(
    "epcis_events",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("event_id", String(100), nullable=False),
    Column("store_id", ID, nullable=False),
    Column("event_time", TS, nullable=False),  # UTC, to the millisecond
    Column("record_time", TS, nullable=False),
    Column("epc", URI, nullable=False),  # pure identity (or raw) URI
    Column("biz_step", String(64), nullable=False),
    Column("disposition", String(64), nullable=True),
    Column("read_point", URI, nullable=True),
    Column("biz_location", URI, nullable=True),
    Column("event", JSON, nullable=False),
    UniqueConstraint("event_id", name="uq_epcis_events_event_id"),
)
Index("ix_epcis_events_time", epcis_events.c.event_time, epcis_events.c.id)
Index("ix_epcis_events_epc", epcis_events.c.epc, epcis_events.c.event_time)
Index("ix_epcis_events_store", epcis_events.c.store_id, epcis_events.c.event_time)
Index("ix_epcis_events_biz_location", epcis_events.c.biz_location, epcis_events.c.event_time)
Index("ix_epcis_events_read_point", epcis_events.c.read_point, epcis_events.c.event_time)
