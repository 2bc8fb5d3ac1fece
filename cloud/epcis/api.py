"""The EPCIS 2.0 REST query interface for the stored events: `GET /epcis/events`.

Query parameters are the REST binding's fixed-name ones (EPCIS 2.0 OpenAPI, `/events`):
values of list parameters are pipe-delimited (`EQ_bizStep=stocking|retail_selling`), times
are RFC 3339 with an offset. Pages follow the binding: `perPage` events at most, and while
more remain a `Link: <...&nextPageToken=...>; rel="next"` header; the token is an opaque
cursor (eventTime, row id), so pages neither skip nor repeat events however many arrive
meanwhile. Results are in eventTime order (oldest first). A parameter this server does not
implement, or a value it cannot use, is a `QueryParameterException` (400), as the standard
asks, never an empty result that looks like an answer.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import ColumnElement, and_, false, or_, select

from cloud.api.deps import Cloud, Reader
from cloud.api.errors import ApiError
from cloud.api.params import MAX_ROW_ID
from cloud.api.timestamps import as_utc
from cloud.config import Role
from cloud.epcis.cbv import query_document
from cloud.epcis.tables import epcis_events

if TYPE_CHECKING:
    from cloud.epcis import EpcisDomain

TAG = "epcis"
MAX_VALUES = 100  # values of one list parameter
MAX_URI = 256  # the columns' width: a longer value can match nothing
# The CBV's other spellings of a standard term; events store the bare word (EPCIS 2.0 JSON)
CBV_PREFIXES = {
    "EQ_bizStep": ("urn:epcglobal:cbv:bizstep:", "https://ref.gs1.org/cbv/BizStep-"),
    "EQ_disposition": ("urn:epcglobal:cbv:disp:", "https://ref.gs1.org/cbv/Disp-"),
}
PARAMETER = "QueryParameterException"

# name -> description, in the order the OpenAPI lists them
PARAMETERS = {
    "perPage": "events per page (default and limit in docs/epcis.md)",
    "nextPageToken": "the cursor from the previous page's Link header",
    "eventType": "pipe-delimited event types; this repository holds ObjectEvents",
    "GE_eventTime": "eventTime >= this (RFC 3339 date-time with offset)",
    "LT_eventTime": "eventTime < this",
    "GE_recordTime": "recordTime >= this",
    "LT_recordTime": "recordTime < this",
    "EQ_action": "pipe-delimited actions (ADD, OBSERVE, DELETE)",
    "EQ_bizStep": "pipe-delimited CBV business steps, e.g. retail_selling",
    "EQ_disposition": "pipe-delimited CBV dispositions, e.g. retail_sold",
    "EQ_readPoint": "pipe-delimited read point URIs (SGLN)",
    "EQ_bizLocation": "pipe-delimited business location URIs: a store's SGLN",
    "MATCH_epc": "pipe-delimited EPC URIs or patterns (urn:epc:idpat:sgtin:0614141.812345.*)",
    "MATCH_anyEPC": "as MATCH_epc (ObjectEvents carry their EPCs in epcList)",
    "EQ_eventID": "pipe-delimited eventIDs",
}


def _fail(detail: str) -> ApiError:
    return ApiError(400, PARAMETER, detail)


def parse_time(name: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(f"{name}: {value[:40]!r} is not an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise _fail(f"{name}: {value[:40]!r} has no time zone offset (e.g. Z or +01:00)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise _fail(f"{name}: {value[:40]!r} is out of range") from None


def parse_list(name: str, value: str) -> list[str]:
    values = value.split("|")
    if len(values) > MAX_VALUES:
        raise _fail(f"{name}: more than {MAX_VALUES} values")
    if any(not v for v in values):
        raise _fail(f"{name}: empty value")
    return values


def parse_per_page(value: str | None, default: int, limit: int) -> int:
    if value is None:
        return default
    if not re.fullmatch(r"[0-9]{1,6}", value) or not 1 <= int(value) <= limit:
        raise _fail(f"perPage: {value[:40]!r} is not a whole number from 1 to {limit}")
    return int(value)


def encode_token(event_time: datetime, row_id: int) -> str:
    raw = f"{as_utc(event_time).isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        at, row = raw.split("|")
        if not re.fullmatch(r"[0-9]{1,19}", row) or int(row) > MAX_ROW_ID:
            raise ValueError(row)
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError(at)
        return parsed.astimezone(UTC), int(row)
    except (ValueError, UnicodeDecodeError, binascii.Error, OverflowError):
        raise _fail("nextPageToken: not a token this server gave out") from None


def _uri_match(column: Any, name: str, value: str) -> ColumnElement[bool]:
    conditions = []
    for uri in parse_list(name, value):
        if len(uri) > MAX_URI:
            raise _fail(f"{name}: value longer than {MAX_URI} characters")
        for prefix in CBV_PREFIXES.get(name, ()):
            uri = uri.removeprefix(prefix)
        conditions.append(column == uri)
    return or_(*conditions)


def _epc_match(name: str, value: str) -> ColumnElement[bool]:
    """EPCIS 2.0 §8.2.7.1.1: an EPC pure-identity URI matches itself; an `idpat` pattern
    matches every EPC of its scheme whose fields equal the pattern's up to a `*`."""
    column = epcis_events.c.epc
    conditions = []
    for uri in parse_list(name, value):
        if len(uri) > MAX_URI:
            raise _fail(f"{name}: value longer than {MAX_URI} characters")
        pattern = re.fullmatch(r"urn:epc:idpat:([a-z0-9-]+):([^*]*?)(\*(\.\*)*)?", uri)
        whole_fields = pattern is not None and (
            pattern.group(3) is None or pattern.group(2) == "" or pattern.group(2).endswith(".")
        )
        if pattern is None or not whole_fields:
            if uri.startswith("urn:epc:idpat:"):
                raise _fail(f"{name}: {uri!r}: only whole trailing fields may be '*'")
            conditions.append(column == uri)
            continue
        identity = f"urn:epc:id:{pattern.group(1)}:{pattern.group(2)}"
        if pattern.group(3) is None:
            conditions.append(column == identity)
        else:
            conditions.append(column.startswith(identity, autoescape=True))
    return or_(*conditions)


def build_filters(params: dict[str, str]) -> list[ColumnElement[bool]]:
    """The WHERE clauses for the query parameters (all but the paging ones)."""
    t = epcis_events
    time_bounds: dict[str, Callable[[datetime], ColumnElement[bool]]] = {
        "GE_eventTime": lambda at: t.c.event_time >= at,
        "LT_eventTime": lambda at: t.c.event_time < at,
        "GE_recordTime": lambda at: t.c.record_time >= at,
        "LT_recordTime": lambda at: t.c.record_time < at,
    }
    columns = {
        "EQ_bizStep": t.c.biz_step,
        "EQ_disposition": t.c.disposition,
        "EQ_readPoint": t.c.read_point,
        "EQ_bizLocation": t.c.biz_location,
        "EQ_eventID": t.c.event_id,
    }
    filters: list[ColumnElement[bool]] = []
    for name, value in params.items():
        if name in time_bounds:
            filters.append(time_bounds[name](parse_time(name, value)))
        elif name in columns:
            filters.append(_uri_match(columns[name], name, value))
        elif name in ("MATCH_epc", "MATCH_anyEPC"):
            filters.append(_epc_match(name, value))
        elif name == "eventType":
            types = parse_list(name, value)
            if "ObjectEvent" not in types:
                filters.append(false())
        elif name == "EQ_action":
            actions = parse_list(name, value)
            if unknown := set(actions) - {"ADD", "OBSERVE", "DELETE"}:
                raise _fail(f"EQ_action: {sorted(unknown)[0]!r} is not ADD, OBSERVE or DELETE")
            if "OBSERVE" not in actions:
                filters.append(false())
    return filters


def _param(name: str) -> Any:
    return Query(alias=name, description=PARAMETERS[name])


Param = str | None


def create_router(domain: EpcisDomain) -> APIRouter:
    router = APIRouter(prefix="/epcis", tags=[TAG])
    options = domain.options

    # The parameters are declared for the OpenAPI document only; the handler reads them
    # from the query string itself, so every value, however hostile, gets the same
    # QueryParameterException treatment and an unknown name is refused.
    @router.get(
        "/events",
        response_class=JSONResponse,
        responses={
            200: {"description": "an EPCISQueryDocument (GS1 EPCIS 2.0 JSON-LD)"},
            400: {"description": "QueryParameterException: a parameter or value not usable"},
        },
    )
    async def query_events(
        request: Request,
        principal: Reader,
        cloud: Cloud,
        per_page: Annotated[Param, _param("perPage")] = None,
        next_page_token: Annotated[Param, _param("nextPageToken")] = None,
        event_type: Annotated[Param, _param("eventType")] = None,
        ge_event_time: Annotated[Param, _param("GE_eventTime")] = None,
        lt_event_time: Annotated[Param, _param("LT_eventTime")] = None,
        ge_record_time: Annotated[Param, _param("GE_recordTime")] = None,
        lt_record_time: Annotated[Param, _param("LT_recordTime")] = None,
        eq_action: Annotated[Param, _param("EQ_action")] = None,
        eq_biz_step: Annotated[Param, _param("EQ_bizStep")] = None,
        eq_disposition: Annotated[Param, _param("EQ_disposition")] = None,
        eq_read_point: Annotated[Param, _param("EQ_readPoint")] = None,
        eq_biz_location: Annotated[Param, _param("EQ_bizLocation")] = None,
        match_epc: Annotated[Param, _param("MATCH_epc")] = None,
        match_any_epc: Annotated[Param, _param("MATCH_anyEPC")] = None,
        eq_event_id: Annotated[Param, _param("EQ_eventID")] = None,
    ) -> JSONResponse:
        """EPCIS 2.0 events query (REST binding, `GET /events`): the stored EPCIS events
        that match, as an EPCISQueryDocument, oldest first, paged (docs/epcis.md)."""
        params: dict[str, str] = {}
        for name, value in request.query_params.multi_items():
            if name not in PARAMETERS:
                raise _fail(f"{name[:40]}: not a query parameter this repository supports")
            if name in params:
                raise _fail(f"{name}: given more than once")
            params[name] = value
        size = parse_per_page(
            params.pop("perPage", None), options.default_page_size, options.max_page_size
        )
        token = params.pop("nextPageToken", None)
        t = epcis_events
        query = select(t.c.id, t.c.event_time, t.c.event).order_by(t.c.event_time, t.c.id)
        for condition in build_filters(params):
            query = query.where(condition)
        if principal.role is Role.STAFF:
            query = query.where(t.c.store_id.in_(sorted(principal.stores)))
        if token is not None:
            after_time, after_id = decode_token(token)
            query = query.where(
                or_(
                    t.c.event_time > after_time,
                    and_(t.c.event_time == after_time, t.c.id > after_id),
                )
            )
        async with cloud.engine.connect() as connection:
            rows = (await connection.execute(query.limit(size + 1))).all()
        page, more = rows[:size], len(rows) > size
        headers = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}
        if more:
            last = page[-1]
            next_url = request.url.include_query_params(
                nextPageToken=encode_token(last.event_time, last.id), perPage=size
            )
            headers["Link"] = f'<{next_url}>; rel="next"'
        body = query_document([row.event for row in page], datetime.now(UTC))
        return JSONResponse(body, headers=headers, media_type="application/json")

    return router
