"""Reading a product CSV: good rows kept, each bad row refused with its line and reason."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cloud.catalogue.csvimport import (
    CatalogueFileError,
    gs1_check_digit,
    normalise_gtin,
    parse_catalogue,
)

HEADER = "gtin,name,size,colour,price,currency,category\n"


def test_gs1_check_digits_of_known_gtins() -> None:
    assert gs1_check_digit("0061414112345") == 2  # GS1's own example, 00614141123452
    assert normalise_gtin("614141123452") == "00614141123452"  # GTIN-12, padded
    assert normalise_gtin("4006381333931") == "04006381333931"  # GTIN-13
    assert normalise_gtin("96385074") == "00000096385074"  # GTIN-8
    with pytest.raises(ValueError, match="check digit 3, expected 2"):
        normalise_gtin("00614141123453")
    with pytest.raises(ValueError, match="not 8, 12, 13 or 14 digits"):
        normalise_gtin("00614141123")


def test_bad_rows_are_refused_with_their_line_and_the_rest_is_kept() -> None:
    text = (
        HEADER
        + "00614141123452,Linen shirt,M,white,39.90,EUR,Tops\n"  # line 2: good
        + "00614141123453,Bad check,M,white,1.00,EUR,Tops\n"  # 3: check digit
        + ",No gtin,,,,,\n"  # 4
        + "00614141011001,,M,,1.00,EUR,Tops\n"  # 5: no name
        + "00614141011018,Shirt,M,,cheap,EUR,Tops\n"  # 6: price
        + "00614141011025,Shirt,M,,-1,EUR,Tops\n"  # 7: negative
        + "00614141011032,Shirt,M,,1.999,EUR,Tops\n"  # 8: 3 decimals
        + "00614141011049,Shirt,M,,1.00,euro,Tops\n"  # 9: currency
        + "00614141011056,Shirt,M\n"  # 10: short row
        + "\n"  # 11: blank, skipped silently (not a product)
        + '"00614141011063","Quoted, with comma",L,"navy",12,,Tops\n'  # 12: good, EUR default
        + "614141123452,Same GTIN as line 2,S,,,,\n"  # 13: duplicate once padded
        + "00614141011070,"
        + "x" * 201
        + ",,,,,\n"  # 14: name too long
    )
    parsed = parse_catalogue(text, max_rows=100, default_currency="EUR")
    assert [p.gtin for p in parsed.products] == ["00614141123452", "00614141011063"]
    quoted = parsed.products[1]
    assert (quoted.name, quoted.price, quoted.currency) == (
        "Quoted, with comma",
        Decimal(12),
        "EUR",
    )
    reasons = {r.line: r.reason for r in parsed.rejections}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9, 10, 13, 14]
    assert "expected 2" in reasons[3]
    assert "not 8, 12, 13 or 14 digits" in reasons[4]
    assert reasons[5] == "name is empty"
    assert "not a number" in reasons[6]
    assert "between 0 and" in reasons[7]
    assert "more than 2 decimals" in reasons[8]
    assert "ISO 4217" in reasons[9]
    assert reasons[10] == "3 cells, the header has 7"
    assert reasons[13] == "gtin 00614141123452 is already on line 2"
    assert "at most 200" in reasons[14]


def test_a_price_without_currency_needs_a_default() -> None:
    parsed = parse_catalogue("gtin,name,price\n00614141123452,Shirt,5\n", max_rows=10)
    assert parsed.products == []
    assert parsed.rejections[0].line == 2
    assert "without a currency" in parsed.rejections[0].reason


def test_line_numbers_count_physical_lines_of_quoted_multi_line_fields() -> None:
    text = 'gtin,name\n00614141123452,"two\nlines"\n00614141011001,\n'
    parsed = parse_catalogue(text, max_rows=10)
    assert parsed.products[0].name == "two\nlines"
    assert [(r.line, r.reason) for r in parsed.rejections] == [(4, "name is empty")]


def test_rows_past_the_limit_are_each_refused_not_dropped() -> None:
    rows = "".join(f"{g},P{g}\n" for g in ["00614141011001", "00614141011018", "00614141011025"])
    parsed = parse_catalogue("gtin,name\n" + rows, max_rows=2)
    assert len(parsed.products) == 2
    assert [(r.line, r.reason) for r in parsed.rejections] == [(4, "over the limit of 2 rows")]


def test_header_problems_refuse_the_whole_file() -> None:
    with pytest.raises(CatalogueFileError, match="empty"):
        parse_catalogue("", max_rows=10)
    with pytest.raises(CatalogueFileError, match="lacks name"):
        parse_catalogue("gtin,title\n00614141123452,x\n", max_rows=10)
    with pytest.raises(CatalogueFileError, match="appears twice"):
        parse_catalogue("gtin,name,Name\n", max_rows=10)


def test_color_is_colour_and_unknown_columns_are_reported() -> None:
    parsed = parse_catalogue(
        "GTIN,Name,Color,supplier\n00614141123452,Shirt,red,ACME\n", max_rows=9
    )
    assert parsed.products[0].colour == "red"
    assert parsed.ignored_columns == ["supplier"]
