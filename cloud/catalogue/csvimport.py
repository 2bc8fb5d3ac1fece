"""Reading a product CSV: every good row becomes a `Product`, every bad one a `Rejection`
with its line number and the reason, and the rest keeps flowing.

The first line is the header. `gtin` and `name` are required columns; `size`, `colour`
(or `color`), `price`, `currency` and `category` are optional; other columns are ignored
and reported. A GTIN may be given as GTIN-8, -12, -13 or -14: its check digit is checked
and it is stored left-padded to 14 digits, the form every other table uses.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

REQUIRED = ("gtin", "name")
OPTIONAL = ("size", "colour", "price", "currency", "category")
ALIASES = {"color": "colour"}
LIMITS = {"name": 200, "size": 40, "colour": 40, "category": 100}
MAX_PRICE = Decimal("9999999999.99")  # Numeric(12, 2)
_GTIN = re.compile(r"^(\d{8}|\d{12}|\d{13}|\d{14})$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class CatalogueFileError(ValueError):
    """The file as a whole cannot be read (no header, a required column missing)."""


@dataclass(frozen=True, slots=True)
class Product:
    gtin: str
    name: str
    size: str | None
    colour: str | None
    price: Decimal | None
    currency: str | None
    category: str | None


@dataclass(frozen=True, slots=True)
class Rejection:
    line: int
    reason: str


@dataclass(slots=True)
class ParsedCatalogue:
    products: list[Product] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)


def gs1_check_digit(body: str) -> int:
    """The GS1 mod-10 check digit of `body` (weights 3, 1, 3, ... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def normalise_gtin(text: str) -> str:
    """The GTIN-14 form of a GTIN-8/12/13/14; ValueError saying what is wrong."""
    digits = text.strip()
    if not _GTIN.fullmatch(digits):
        raise ValueError(f"gtin {text!r} is not 8, 12, 13 or 14 digits")
    if gs1_check_digit(digits[:-1]) != int(digits[-1]):
        raise ValueError(
            f"gtin {digits} has check digit {digits[-1]}, expected {gs1_check_digit(digits[:-1])}"
        )
    return digits.zfill(14)


def parse_catalogue(
    text: str, *, max_rows: int, default_currency: str | None = None
) -> ParsedCatalogue:
    """Every data row of `text` becomes a product or a rejection. Rows past `max_rows` are
    rejected (each one counted, so nothing is dropped silently)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise CatalogueFileError("the file is empty: a header line is required") from None
    except csv.Error as exc:
        raise CatalogueFileError(f"line 1: {exc}") from None
    columns = [ALIASES.get(c.strip().lower(), c.strip().lower()) for c in header]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        present = ", ".join(columns) or "nothing"
        raise CatalogueFileError(
            f"line 1: the header lacks {', '.join(missing)} (it has {present}); columns:"
            f" {', '.join(REQUIRED + OPTIONAL)}"
        )
    duplicated = sorted({c for c in columns if c and columns.count(c) > 1})
    if duplicated:
        raise CatalogueFileError(f"line 1: column {', '.join(duplicated)} appears twice")
    known = set(REQUIRED + OPTIONAL)
    result = ParsedCatalogue(ignored_columns=[c for c in columns if c not in known])
    seen: dict[str, int] = {}
    rows = 0
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.rejections.append(Rejection(line, f"unreadable CSV: {exc}"))
            continue
        if not any(cell.strip() for cell in cells):
            continue  # blank lines are not products
        rows += 1
        if rows > max_rows:
            result.rejections.append(Rejection(line, f"over the limit of {max_rows} rows"))
            continue
        if len(cells) != len(columns):
            result.rejections.append(
                Rejection(line, f"{len(cells)} cells, the header has {len(columns)}")
            )
            continue
        record = dict(zip(columns, cells, strict=True))
        try:
            product = _product(record, default_currency)
        except ValueError as exc:
            result.rejections.append(Rejection(line, str(exc)))
            continue
        if product.gtin in seen:
            result.rejections.append(
                Rejection(line, f"gtin {product.gtin} is already on line {seen[product.gtin]}")
            )
            continue
        seen[product.gtin] = line
        result.products.append(product)
    return result


def _text(record: dict[str, str], name: str) -> str | None:
    value = record.get(name, "").strip()
    if not value:
        return None
    if len(value) > LIMITS[name]:
        raise ValueError(f"{name} is {len(value)} characters, at most {LIMITS[name]}")
    return value


def _product(record: dict[str, str], default_currency: str | None) -> Product:
    gtin = normalise_gtin(record["gtin"])
    name = _text(record, "name")
    if name is None:
        raise ValueError("name is empty")
    price: Decimal | None = None
    raw_price = record.get("price", "").strip()
    if raw_price:
        try:
            price = Decimal(raw_price)
        except InvalidOperation:
            raise ValueError(f"price {raw_price!r} is not a number") from None
        if not price.is_finite() or price < 0 or price > MAX_PRICE:
            raise ValueError(f"price {raw_price!r} is not between 0 and {MAX_PRICE}")
        if price != price.quantize(Decimal("0.01")):
            raise ValueError(f"price {raw_price!r} has more than 2 decimals")
    currency = record.get("currency", "").strip().upper() or None
    if currency is not None and not _CURRENCY.fullmatch(currency):
        raise ValueError(f"currency {currency!r} is not a 3-letter ISO 4217 code")
    if price is not None and currency is None:
        if default_currency is None:
            raise ValueError("price without a currency (and no default_currency configured)")
        currency = default_currency
    return Product(
        gtin=gtin,
        name=name,
        size=_text(record, "size"),
        colour=_text(record, "colour"),
        price=price,
        currency=currency,
        category=_text(record, "category"),
    )
