"""`storegate`: one command for every role.

Each subcommand imports its package only when it runs, so an edge node that installed
`storegate[edge]` can run `storegate edge` without the cloud's dependencies.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import typer.core

from storegate import __version__

if TYPE_CHECKING:
    from rich.console import Console


def _show_flags_as_flags() -> None:
    """typer 0.29 prints a type after every option, flags included (`--write <bool>`), which
    reads as if the flag took a value. A flag takes none: show no type for it."""
    option = typer.core.TyperOption
    display = getattr(option, "display_type_rich", None)
    if display is None or getattr(display, "storegate_flags", False):
        return

    def display_type_rich(self: typer.core.TyperOption, ctx: typer.Context) -> str | None:
        return None if self.is_flag else display(self, ctx)

    display_type_rich.storegate_flags = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich  # type: ignore[method-assign,assignment]


_show_flags_as_flags()

app = typer.Typer(
    name="storegate",
    help=(
        "Connect physical stores to the online channel: edge daemons for RFID shelves, smart"
        " lockers and BLE beacons; a cloud ingestor with live inventory, lockers and offers;"
        " simulators for whole stores."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


@cache
def console() -> Console:
    """The commands' rich console, made when one needs it: `storegate edge` runs without
    rich loaded (about 2.5 MB of a Raspberry Pi's memory)."""
    from rich.console import Console

    return Console(stderr=True)


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (environment variables override it)."),
]
LogLevel = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )


def _version(value: bool) -> None:
    if value:
        typer.echo(f"storegate {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    """storegate: stores to online, over MQTT."""


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="MQTT port of the embedded broker.")] = 1883,
    http_port: Annotated[
        int | None,
        typer.Option(help="API and dashboard port (default 8000, or a free one if taken)."),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop by itself after this many seconds.")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Keep the cloud database and outboxes here (default: a temp dir)."),
    ] = None,
    hold: Annotated[
        float,
        typer.Option(min=5, help="Seconds a parcel waits in its locker before the order expires."),
    ] = 60.0,
    log_level: LogLevel = "warning",
) -> None:
    """Run the whole system on this machine: embedded broker, cloud, simulated stores, and
    every flow (alerts, offers, online orders through the lockers)."""
    _logging(log_level)
    from simulators.demo import run_demo

    raise typer.Exit(
        run_demo(
            port=port,
            http_port=http_port,
            duration=duration,
            data_dir=data_dir,
            console=console(),
            hold_s=hold,
        )
    )


@app.command()
def edge(config: ConfigOption = None, log_level: LogLevel = "info") -> None:
    """Run the edge daemon of one store node (drivers, outbox, uplink)."""
    _logging(log_level)
    from edge.main import run_edge

    raise typer.Exit(run_edge(config))


@app.command()
def cloud(
    config: ConfigOption = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="The cloud's database and spool (default: $XDG_STATE_HOME/storegate, else"
            " ./.storegate). Wins over `data_dir` in the file and STOREGATE_CLOUD_DATA_DIR."
        ),
    ] = None,
    insecure_allow_demo_secrets: Annotated[
        bool,
        typer.Option(
            "--insecure-allow-demo-secrets",
            help="Start even with the repository's demo keys, change-me placeholders or"
            " secrets under 128 bits (refused otherwise). For demos and tests only.",
        ),
    ] = False,
    log_level: LogLevel = "info",
) -> None:
    """Run the cloud: ingestor, state store, time series, API and dashboard."""
    _logging(log_level)
    from cloud.main import run_cloud

    raise typer.Exit(
        run_cloud(
            config,
            console=console(),
            data_dir=data_dir,
            allow_insecure_secrets=insecure_allow_demo_secrets,
        )
    )


@app.command()
def certs(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for the CA, keys and certificates.")
    ] = Path("deploy/certs"),
    broker_host: Annotated[
        list[str] | None,
        typer.Option(
            "--broker-host",
            help="A host name or IP address clients use for the broker (repeatable; the"
            " first is also its CN). Default: mosquitto, localhost, 127.0.0.1.",
        ),
    ] = None,
    store: Annotated[
        list[str] | None,
        typer.Option("--store", help="Issue a client certificate for this store (repeatable)."),
    ] = None,
    client: Annotated[
        list[str] | None,
        typer.Option(
            "--client",
            help="Issue a client certificate for another broker login, e.g. a second"
            " ingestor replica (repeatable; CN = the login).",
        ),
    ] = None,
    new_ca: Annotated[
        bool,
        typer.Option(
            "--new-ca",
            help="Replace an existing CA (and so re-issue every certificate). Without it an"
            " existing CA is kept.",
        ),
    ] = False,
    days: Annotated[int, typer.Option(min=1, help="Validity of the certificates.")] = 825,
) -> None:
    """Create the private CA, the broker's server certificate and client certificates for
    the cloud and each store (MQTT over TLS, docs/security.md). Safe to run again."""
    from cloud.certs import CertsError, make_certs

    hosts = broker_host or ["mosquitto", "localhost", "127.0.0.1"]
    try:
        report = make_certs(
            out,
            broker_names=hosts,
            stores=store or [],
            clients=client or [],
            new_ca=new_ca,
            days=days,
        )
    except CertsError as exc:
        console().print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    for path in report.created:
        console().print(f"created {path} (key {path.with_suffix('.key').name}, mode 0600)")
    for path in report.kept:
        console().print(f"kept    {path}")
    for path in report.stale:
        console().print(
            f"[yellow]stale   {path}: not signed by this CA or expiring; name it again to"
            " re-issue it[/]"
        )


@app.command()
def feed(
    out: Annotated[Path, typer.Argument(help="The file to write (replaced atomically).")],
    config: ConfigOption = None,
    fmt: Annotated[
        str, typer.Option("--format", help='"tsv" (Google Merchant Center) or "jsonl".')
    ] = "tsv",
    data_dir: Annotated[
        Path | None, typer.Option(help="The cloud's data dir, as for `storegate cloud`.")
    ] = None,
    log_level: LogLevel = "warning",
) -> None:
    """Write the local inventory feed (Google Merchant Center) from the cloud's database."""
    _logging(log_level)
    from cloud.main import write_local_inventory_feed

    raise typer.Exit(
        write_local_inventory_feed(config, out, fmt, console=console(), data_dir=data_dir)
    )


@app.command()
def sim(
    scenario: Annotated[
        Path | None, typer.Argument(help="Scenario YAML (stores, shelves, shoppers).")
    ] = None,
    stores: Annotated[
        int | None,
        typer.Option(help="Load mode: this many copies of the scenario's first store."),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="MQTT broker host (overrides the file).")] = None,
    port: Annotated[int | None, typer.Option(help="MQTT broker port (overrides the file).")] = None,
    protocol: Annotated[
        str | None, typer.Option(help='MQTT protocol, "3.1.1" or "5" (overrides the file).')
    ] = None,
    truth: Annotated[
        Path | None, typer.Option(help="Write the ground truth (JSON lines) to this file.")
    ] = None,
    per_process: Annotated[
        int, typer.Option(help="Stores per process; more stores run in child processes.")
    ] = 25,
    stats_file: Annotated[Path | None, typer.Option(hidden=True)] = None,
    log_level: LogLevel = "warning",
) -> None:
    """Simulate whole stores with the real edge daemon and simulated drivers."""
    _logging(log_level)
    from simulators.stores import SimOptions, run_sim

    options = SimOptions(
        stores=stores,
        duration=duration,
        host=host,
        port=port,
        protocol=protocol,
        truth=truth,
        per_process=per_process,
        stats_file=stats_file,
    )
    raise typer.Exit(run_sim(scenario, console=console(), options=options))


loadgen_app = typer.Typer(
    help="Record one store's real traffic, replay it as N stores (docs/demo.md).",
    no_args_is_help=True,
)
app.add_typer(loadgen_app, name="loadgen")


@loadgen_app.command("record")
def loadgen_record(
    out: Annotated[Path, typer.Argument(help="The recording to write (JSON lines).")],
    host: Annotated[str, typer.Option(help="MQTT broker host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="MQTT broker port.")] = 1883,
    shelves: Annotated[int, typer.Option(help="Shelves of the store (one antenna each).")] = 20,
    stock_per_shelf: Annotated[int, typer.Option(help="Items on a full shelf.")] = 150,
    warmup: Annotated[float, typer.Option(help="Seconds before the birth is asked.")] = 45.0,
    steady: Annotated[float, typer.Option(help="Seconds recorded after the birth.")] = 120.0,
    log_level: LogLevel = "warning",
) -> None:
    """Run one simulated store (the real edge daemon) and record what it publishes."""
    _logging(log_level)
    import asyncio

    from protocols.mqtt import MqttSettings
    from simulators.loadgen.record import RecordOptions, record

    options = RecordOptions(
        shelves=shelves, stock_per_shelf=stock_per_shelf, warmup_s=warmup, steady_s=steady
    )
    recording = asyncio.run(record(MqttSettings(host=host, port=port), options))
    recording.save(out)
    console().print(
        f"{out}: birth of {recording.about['items_in_birth']} items in {len(recording.births)}"
        f" part(s), {len(recording.messages)} messages in {recording.duration_s:.0f} s"
        f" ({recording.rate:.2f} msg/s)"
    )


@loadgen_app.command("replay")
def loadgen_replay(
    recording: Annotated[Path, typer.Argument(help="A recording from `loadgen record`.")],
    stores: Annotated[int, typer.Option(help="Stores to play, one MQTT connection each.")] = 1000,
    processes: Annotated[int, typer.Option(help="Processes the stores are split over.")] = 4,
    prefix: Annotated[str, typer.Option(help="Store ids: <prefix>-0001, ...")] = "loadgen",
    speed: Annotated[float, typer.Option(help="Times the recorded rate.")] = 1.0,
    duration: Annotated[float, typer.Option(help="Seconds of traffic.")] = 60.0,
    host: Annotated[str, typer.Option(help="MQTT broker host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="MQTT broker port.")] = 1883,
    log_level: LogLevel = "warning",
) -> None:
    """Replay a recording as N stores; prints what was sent and publish -> commit latency.
    The cloud must know the stores (`stores:` in its config, node as recorded)."""
    _logging(log_level)
    import json

    from protocols.mqtt import MqttSettings
    from simulators.loadgen.fleet import ReplayPlan, replay

    plan = ReplayPlan(
        recording, stores, processes=processes, prefix=prefix, speed=speed, duration_s=duration
    )
    result = replay(plan, MqttSettings(host=host, port=port))
    typer.echo(json.dumps(result.summary(), indent=1))


def _benchmark_names() -> list[str]:
    # Module names, without importing the benchmarks (they pull in every role's packages)
    # nor the bench package (this runs for every command, `storegate edge` too).
    import importlib.util
    import pkgutil

    spec = importlib.util.find_spec("bench")
    if spec is None or not spec.submodule_search_locations:
        return []
    skip = {"runner"}
    return sorted(
        info.name
        for info in pkgutil.iter_modules(spec.submodule_search_locations)
        if not info.name.startswith("_") and info.name not in skip
    )


@app.command()
def bench(
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help=f"Run only this benchmark (repeatable): {', '.join(_benchmark_names())}.",
        ),
    ] = None,
    write: Annotated[
        bool, typer.Option("--write", help="Update BENCHMARKS.md with the results.")
    ] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Smaller runs, for a smoke test.")] = False,
) -> None:
    """Run the benchmarks against baselines measured in the same run; print them, and with
    --write update BENCHMARKS.md."""
    _logging("warning")
    from bench.runner import run_benchmarks

    raise typer.Exit(run_benchmarks(only=only or [], write=write, quick=quick, console=console()))


@app.command("broker-logins")
def broker_logins(
    logins: Annotated[Path, typer.Argument(help="Logins file (deploy/mosquitto/logins.yaml).")],
    out: Annotated[
        Path, typer.Option("--out", help="Mosquitto's dynamic-security file to (re)write.")
    ],
) -> None:
    """Write Mosquitto's dynamic-security file: one login per MQTT session, each pinned to
    its client id, passwords from the environment variables the logins file names (stored
    hashed). Shopper logins already in the file are kept."""
    _logging("warning")
    from pydantic import ValidationError

    from cloud.broker.dynsec_file import LoginsError, write_document

    try:
        document = write_document(logins, out)
    except (LoginsError, ValidationError, OSError, ValueError) as exc:
        console().print(f"[red]broker-logins:[/red] {exc}")
        raise typer.Exit(2) from None
    console().print(f"{out}: {len(document['clients'])} logins, {len(document['roles'])} roles")


catalogue_app = typer.Typer(
    help="The product catalogue (names, sizes, prices per GTIN).", no_args_is_help=True
)
app.add_typer(catalogue_app, name="catalogue")


@catalogue_app.command("import")
def catalogue_import(
    file: Annotated[
        Path,
        typer.Argument(help="CSV with a header: gtin,name,size,colour,price,currency,category."),
    ],
    config: ConfigOption = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="The cloud's data dir, as for `storegate cloud`.")
    ] = None,
    log_level: LogLevel = "warning",
) -> None:
    """Import products into the cloud's database: known GTINs are replaced, bad rows are
    listed with their line and reason (exit 1) and the others imported."""
    _logging(log_level)
    from cloud.catalogue.cli import import_catalogue_file

    raise typer.Exit(import_catalogue_file(config, file, console=console(), data_dir=data_dir))


def main() -> None:
    app()
