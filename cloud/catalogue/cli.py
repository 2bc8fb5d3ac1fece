"""`storegate catalogue import FILE`: the same import as `PUT /api/v1/products`, straight
into the cloud's database (migrated first, so it works before the cloud's first start)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from cloud.catalogue import parse_options, products
from cloud.catalogue.csvimport import CatalogueFileError, ParsedCatalogue, parse_catalogue
from cloud.config import DATA_DIR_ENV, load_cloud_settings
from cloud.state.db import create_engine, migrate, writing
from protocols.messages import utc_now
from protocols.settings import ConfigError

log = logging.getLogger(__name__)
REJECTIONS_SHOWN = 20


async def import_text(database_url: str, parsed: ParsedCatalogue) -> tuple[int, int]:
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        async with writing(engine) as connection:
            return await products.upsert(connection, parsed.products, utc_now())
    finally:
        await engine.dispose()


def import_catalogue_file(
    config: Path | None, path: Path, *, console: Console, data_dir: Path | None = None
) -> int:
    """Exit code: 0 every row imported, 1 some rows refused (the others imported), 2 the
    file or the config cannot be used at all."""
    if data_dir is not None:
        os.environ[DATA_DIR_ENV] = str(data_dir)
    try:
        settings = load_cloud_settings(config)
        options = parse_options(dict(settings.domains.get("catalogue", {})))
    except (ConfigError, ValueError) as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        return 2
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        console.print(f"[red]cannot read {path}: {escape(str(exc))}[/]")
        return 2
    try:
        parsed = parse_catalogue(
            text, max_rows=options.max_import_rows, default_currency=options.default_currency
        )
    except CatalogueFileError as exc:
        console.print(f"[red]{path}: {escape(str(exc))}[/]")
        return 2
    try:
        created, updated = asyncio.run(import_text(settings.database_url, parsed))
    except Exception as exc:  # one clear line; the log has the trace
        log.debug("catalogue import failed", exc_info=True)
        console.print(f"[red]import failed: {type(exc).__name__}: {escape(str(exc))}[/]")
        return 1
    console.print(
        f"imported {created + updated} products from {path} ({created} new, {updated}"
        f" updated), refused {len(parsed.rejections)}",
        soft_wrap=True,
    )
    for column in parsed.ignored_columns:
        console.print(f"[yellow]ignored column {escape(column)!r}[/]")
    for rejection in parsed.rejections[:REJECTIONS_SHOWN]:
        console.print(
            f"[yellow]line {rejection.line}: {escape(rejection.reason)}[/]", soft_wrap=True
        )
    if len(parsed.rejections) > REJECTIONS_SHOWN:
        console.print(f"[yellow]... and {len(parsed.rejections) - REJECTIONS_SHOWN} more[/]")
    return 1 if parsed.rejections else 0
