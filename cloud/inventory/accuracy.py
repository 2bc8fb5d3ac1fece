"""Inventory accuracy: what RFID counts against the book stock the POS/ERP holds.

Per store, per category (the book's) and in total:

- `item_accuracy`: the share of GTINs whose RFID count equals the book (the retail
  industry's record accuracy: a GTIN is right or wrong as a whole);
- `unit_accuracy`: 1 - Σ|rfid - book| / Σ book (how far off the units are; 1.0 when both
  are 0 everywhere);
- the GTINs that differ, with `difference` = rfid - book (negative: the book holds more).

A GTIN counted by RFID but absent from the book counts in category `(not in book)` with a
book of 0. Approving differences records them (who, when, the figures at that moment); the
approved differences are exported as CSV for posting back to the ERP.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.inventory.config import InventoryOptions
from cloud.inventory.stock import levels
from cloud.inventory.tables import book_stock

NOT_IN_BOOK = "(not in book)"
BOOK_COLUMNS = ("gtin", "quantity", "category")
MAX_BOOK_ROWS = 200_000


@dataclass(frozen=True, slots=True)
class BookLine:
    gtin: str
    quantity: int
    category: str


class BookError(ValueError):
    """An import that cannot be taken; the message names the lines (nothing is imported)."""


def parse_book(body: bytes, content_type: str) -> list[BookLine]:
    """A book-stock import: CSV (`gtin,quantity[,category]` with a header) or JSON
    (`{"items": [{"gtin", "quantity", "category"?}]}`). Every bad line is named; one bad
    line rejects the import, so accuracy is never measured against half a book."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BookError("the body is not UTF-8") from None
    raw: list[tuple[str, dict[str, Any]]] = []
    if content_type.startswith("text/csv"):
        reader = csv.DictReader(io.StringIO(text))
        fields = set(reader.fieldnames or ())
        if not {"gtin", "quantity"} <= fields:
            raise BookError("CSV header must name gtin and quantity (category optional)")
        raw = [(f"line {n}", dict(row)) for n, row in enumerate(reader, start=2)]
    elif content_type.startswith("application/json"):
        try:
            items = json.loads(text)["items"]
        except (ValueError, KeyError, TypeError):
            raise BookError('JSON body must be {"items": [...]}') from None
        if not isinstance(items, list):
            raise BookError('"items" must be a list')
        raw = [
            (f"item {n}", item if isinstance(item, dict) else {}) for n, item in enumerate(items)
        ]
    else:
        raise BookError("send text/csv or application/json")
    if len(raw) > MAX_BOOK_ROWS:
        raise BookError(f"at most {MAX_BOOK_ROWS} lines per import")
    lines: dict[str, BookLine] = {}
    problems: list[str] = []
    for where, row in raw:
        gtin = str(row.get("gtin") or "").strip()
        quantity = str(row.get("quantity") if row.get("quantity") is not None else "").strip()
        category = str(row.get("category") or "").strip() or "(none)"
        if not (len(gtin) == 14 and gtin.isascii() and gtin.isdigit()):
            problems.append(f"{where}: gtin {gtin[:20]!r} is not a GTIN-14")
        elif not (quantity.isascii() and quantity.isdigit() and int(quantity) < 2**31):
            problems.append(f"{where}: quantity {quantity[:20]!r} is not a whole number >= 0")
        elif len(category) > 64:
            problems.append(f"{where}: category longer than 64 characters")
        elif gtin in lines:
            problems.append(f"{where}: gtin {gtin} listed twice")
        else:
            lines[gtin] = BookLine(gtin, int(quantity), category)
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise BookError("; ".join(problems[:10]) + more)
    return list(lines.values())


@dataclass(frozen=True, slots=True)
class Line:
    gtin: str
    category: str
    rfid: int
    book: int

    @property
    def difference(self) -> int:
        return self.rfid - self.book


def summarise(lines: Iterable[Line]) -> dict[str, Any]:
    items = list(lines)
    book_units = sum(line.book for line in items)
    off = sum(abs(line.difference) for line in items)
    exact = sum(1 for line in items if line.difference == 0)
    return {
        "gtins": len(items),
        "exact": exact,
        "item_accuracy": round(exact / len(items), 4) if items else None,
        "rfid_units": sum(line.rfid for line in items),
        "book_units": book_units,
        "absolute_difference": off,
        "unit_accuracy": round(1 - off / book_units, 4)
        if book_units
        else (1.0 if not off else 0.0),
    }


async def lines_of(
    connection: AsyncConnection, options: InventoryOptions, store: str
) -> tuple[list[Line], Any]:
    """Every GTIN of the store's book or RFID count, and the book's newest import time."""
    b = book_stock
    book = {
        row.gtin: row for row in await connection.execute(select(b).where(b.c.store_id == store))
    }
    counted = await levels(connection, lambda _store: 0, zones=options.zones, stores=[store])
    rfid = {gtin: level.on_hand for (_store, gtin), level in counted.items()}
    lines = []
    for gtin in sorted(set(book) | set(rfid)):
        row = book.get(gtin)
        if row is None and rfid.get(gtin, 0) == 0:
            continue  # counted once, gone now, never in the book: nothing to compare
        lines.append(
            Line(
                gtin,
                row.category if row is not None else NOT_IN_BOOK,
                rfid.get(gtin, 0),
                row.quantity if row is not None else 0,
            )
        )
    imported = max((row.imported_at for row in book.values()), default=None)
    return lines, imported


def report(store: str, lines: list[Line], imported_at: Any) -> dict[str, Any]:
    categories: dict[str, list[Line]] = {}
    for line in lines:
        categories.setdefault(line.category, []).append(line)
    return {
        "store": store,
        "book_imported_at": imported_at,
        "total": summarise(lines),
        "categories": [
            {"category": name, **summarise(items)} for name, items in sorted(categories.items())
        ],
        "differences": [
            {
                "gtin": line.gtin,
                "category": line.category,
                "rfid": line.rfid,
                "book": line.book,
                "difference": line.difference,
            }
            for line in lines
            if line.difference
        ],
    }
