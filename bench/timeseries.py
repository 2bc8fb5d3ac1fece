"""Time-series throughput: lines/s through spool + pump into a real VictoriaMetrics.

Subject: `Spool.append` (durable, one commit per ingest batch) + `Pump` draining it with
`InfluxSink` (gzip, `/api/v2/write`). Baseline, same run, same server and lines: the bare
`InfluxSink` writing the same batches with no spool in between. The ratio is the price of
durability. Also measured: a 20 s outage's backlog draining (lines/s) and the pump's peak
Python memory while draining, against the backlog's size.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.runner import Benchmark, Result, Row
from cloud.timeseries import InfluxConfig, InfluxSink, Pump, PumpConfig, Spool, lines_for
from protocols.messages import CountDelta, RfidEvents

INGEST_BATCH = 500  # lines per ingestor batch (one spool commit)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _VictoriaMetrics:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            binary,
            f"-storageDataPath={workdir / 'data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-dedup.minScrapeInterval=1ms",
            "-loggerLevel=ERROR",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.command)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).is_success:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("victoria-metrics did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(20)
            self.process = None


def _batches(n_lines: int, offset_ms: int) -> list[list[str]]:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    per_message = 50
    messages = [
        RfidEvents(
            store="store-001",
            node="pi-1",
            seq=i,
            reader="reader-1",
            event_time=base + timedelta(milliseconds=offset_ms + i),
            counts=[
                CountDelta(shelf=f"shelf-{s}", gtin="80614141123458", delta=1, count=i)
                for s in range(per_message)
            ],
        )
        for i in range(n_lines // per_message)
    ]
    lines = lines_for(messages)
    return [lines[i : i + INGEST_BATCH] for i in range(0, len(lines), INGEST_BATCH)]


async def _baseline(url: str, batches: list[list[str]]) -> float:
    sink = InfluxSink(InfluxConfig(url=url, bucket="bench"))
    started = time.perf_counter()
    for i in range(0, len(batches), 10):  # the same 5,000-line writes the pump makes
        await sink.write([line for batch in batches[i : i + 10] for line in batch])
    elapsed = time.perf_counter() - started
    await sink.close()
    return sum(map(len, batches)) / elapsed


async def _through_spool(url: str, workdir: Path, batches: list[list[str]]) -> float:
    spool = Spool(workdir / "spool.db")
    pump = Pump(
        spool, InfluxSink(InfluxConfig(url=url, bucket="bench")), PumpConfig(max_delay_s=0.05)
    )
    pump.start()
    started = time.perf_counter()
    for batch in batches:
        await spool.append_async(batch)
        pump.notify()
    assert await pump.stop(300)
    elapsed = time.perf_counter() - started
    await pump.sink.close()
    spool.close()
    return sum(map(len, batches)) / elapsed


async def _outage(
    vm: _VictoriaMetrics, workdir: Path, batches: list[list[str]], *, trace: bool
) -> tuple[float, int, int]:
    """Drain a backlog like an outage leaves; with `trace`, the peak Python memory too
    (tracemalloc slows Python down, so rate and memory are measured in separate runs)."""
    spool = Spool(workdir / f"outage-{trace}.db")
    for batch in batches:  # the backlog an outage leaves behind
        spool.append(batch)
    backlog = spool.stats().bytes
    pump = Pump(spool, InfluxSink(InfluxConfig(url=vm.url, bucket="bench")))
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    pump.start()
    assert await pump.stop(300)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    tracemalloc.stop()
    await pump.sink.close()
    return sum(map(len, batches)) / elapsed, peak, backlog


def run(quick: bool) -> Result:
    binary = shutil.which("victoria-metrics")
    if binary is None:
        return Result(rows=[], notes=["victoria-metrics is not installed: nothing measured"])
    n = 50_000 if quick else 200_000
    workdir = Path(tempfile.mkdtemp(prefix="bench-ts-"))
    vm = _VictoriaMetrics(binary, workdir)
    vm.start()
    try:
        base_rate = asyncio.run(_baseline(vm.url, _batches(n, 0)))
        spool_rate = asyncio.run(_through_spool(vm.url, workdir, _batches(n, 10_000_000)))
        drain_rate, _, _ = asyncio.run(_outage(vm, workdir, _batches(n, 20_000_000), trace=False))
        _, peak, backlog = asyncio.run(_outage(vm, workdir, _batches(n, 30_000_000), trace=True))
    finally:
        vm.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    ratio = spool_rate / base_rate
    memory_ratio = peak / backlog
    return Result(
        rows=[
            Row(
                "spool + pump -> VictoriaMetrics",
                spool_rate,
                "lines/s",
                base_rate,
                "bare InfluxSink",
                ">= 0.5x",
                passed=ratio >= 0.5,
            ),
            Row(
                "backlog drain after an outage", drain_rate, "lines/s", base_rate, "bare InfluxSink"
            ),
            Row(
                "pump peak memory while draining",
                peak / 1e6,
                "MB",
                backlog / 1e6,
                "backlog on disk (MB)",
                "<= 0.2x",
                passed=memory_ratio <= 0.2,
            ),
        ],
        notes=[
            f"{n:,} shelf_count lines per phase; {INGEST_BATCH}-line spool commits "
            "(synchronous=FULL); 5,000-line writes; victoria-metrics on the same machine"
        ],
    )


BENCHMARK = Benchmark(name="timeseries", title="Time-series spool and pump", run=run)
