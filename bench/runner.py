"""`storegate bench`: run the registered benchmarks and update BENCHMARKS.md.

A benchmark is a module in `bench/` with a `BENCHMARK = Benchmark(...)`. Each measures its
subject and a baseline in the same run (these machines are noisy: absolute numbers move,
ratios much less) and returns rows for the table.
"""

from __future__ import annotations

import datetime
import importlib
import pkgutil
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

import bench


@dataclass(slots=True)
class Row:
    metric: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    target: str | None = None  # e.g. ">= 0.7x" or "<= 100 ms"
    passed: bool | None = None
    spread: tuple[float, float] | None = None  # (min, max) over runs when value is a median

    @property
    def shown(self) -> str:
        text = f"{self.value:,.4g} {self.unit}"
        if self.spread is not None:
            text += f" ({self.spread[0]:,.4g} to {self.spread[1]:,.4g})"
        return text

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline


@dataclass(slots=True)
class Result:
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Benchmark:
    name: str
    title: str
    run: Callable[[bool], Result]  # argument: quick


def discover() -> dict[str, Benchmark]:
    found = {}
    for info in pkgutil.iter_modules(bench.__path__):
        if info.name.startswith("_") or info.name == "runner":
            continue
        module = importlib.import_module(f"bench.{info.name}")
        candidate = getattr(module, "BENCHMARK", None)
        if isinstance(candidate, Benchmark):
            found[candidate.name] = candidate
    return found


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


HEADER = """# Benchmarks

Written by `storegate bench` (`scripts/bench`); every figure below was measured by that
command, each benchmark against a baseline measured in the same run (ratios move much less
than absolute numbers on a noisy machine). Each section says when and where it ran.
"""
_MARK = "<!-- bench:{name} -->"


def render_section(benchmark: Benchmark, result: Result, quick: bool) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        _MARK.format(name=benchmark.name),
        f"## {benchmark.title}",
        "",
        f"`storegate bench --only {benchmark.name}{' --quick' if quick else ''}`"
        f" — {when}, {machine()}",
        "",
        "| metric | value | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in result.rows:
        baseline = (
            f"{row.baseline:,.4g} {row.unit} ({row.baseline_name})"
            if row.baseline is not None
            else ""
        )
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        met = "" if row.passed is None else ("yes" if row.passed else "**no**")
        lines.append(
            f"| {row.metric} | {row.shown} | {baseline} | {ratio} | {row.target or ''} | {met} |"
        )
    if result.notes:
        lines += [""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def merge_sections(existing: str, sections: dict[str, str]) -> str:
    """Replace the sections of the benchmarks that ran; keep the others as they were."""
    kept: dict[str, str] = {}
    marker = "<!-- bench:"
    for chunk in existing.split(marker)[1:]:
        name = chunk.split(" -->", 1)[0]
        kept[name] = (marker + chunk).rstrip() + "\n"
    kept.update(sections)
    return HEADER + "".join("\n" + kept[name] for name in sorted(kept))


def run_benchmarks(*, only: list[str], write: bool, quick: bool, console: Console) -> int:
    available = discover()
    unknown = set(only) - set(available)
    if unknown:
        console.print(f"[red]unknown benchmark(s): {', '.join(sorted(unknown))}[/]")
        console.print(f"available: {', '.join(sorted(available))}")
        return 2
    selected = {name: b for name, b in sorted(available.items()) if not only or name in only}
    if not selected:
        console.print("[yellow]no benchmarks are registered yet[/]")
        return 2
    results: dict[str, tuple[Benchmark, Result]] = {}
    for name, benchmark in selected.items():
        with console.status(f"running {benchmark.title}"):
            results[name] = (benchmark, benchmark.run(quick))
        table = Table(title=benchmark.title, title_justify="left")
        for column in ("metric", "value", "baseline", "ratio", "target", "met"):
            table.add_column(column)
        for row in results[name][1].rows:
            table.add_row(
                row.metric,
                row.shown,
                f"{row.baseline:,.4g}" if row.baseline is not None else "",
                f"{row.ratio:.2f}x" if row.ratio is not None else "",
                row.target or "",
                "" if row.passed is None else ("yes" if row.passed else "no"),
            )
        console.print(table)
    if write:
        path = Path("BENCHMARKS.md")
        existing = path.read_text() if path.exists() else ""
        sections = {name: render_section(b, r, quick) for name, (b, r) in results.items()}
        path.write_text(merge_sections(existing, sections))
        console.print(f"wrote {path}")
    return 0
