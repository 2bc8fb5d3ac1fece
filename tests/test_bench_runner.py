from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from bench import runner
from bench.runner import Benchmark, Result, Row, merge_sections, render_section
from storegate.cli import app


def _bench(name: str, value: float) -> tuple[Benchmark, Result]:
    result = Result(rows=[Row("rate", value, "msg/s", baseline=value * 2, baseline_name="bare")])
    return Benchmark(name, f"{name} title", lambda quick: result), result


def test_sections_are_replaced_and_others_kept() -> None:
    a, ra = _bench("alpha", 100)
    b, rb = _bench("beta", 10)
    first = merge_sections("", {"alpha": render_section(a, ra, False)})
    second = merge_sections(first, {"beta": render_section(b, rb, True)})
    assert "alpha title" in second
    assert "beta title" in second
    assert "0.50x" in second
    a2, ra2 = _bench("alpha", 300)
    third = merge_sections(second, {"alpha": render_section(a2, ra2, False)})
    assert "| 300 msg/s" in third
    assert "| 100 msg/s" not in third
    assert third.count("<!-- bench:alpha -->") == 1
    assert "beta title" in third


def test_results_are_printed_and_written_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench_a, _ = _bench("alpha", 100)
    monkeypatch.setattr(runner, "discover", lambda: {"alpha": bench_a})
    monkeypatch.chdir(tmp_path)
    console = Console(file=io.StringIO(), width=120)
    assert runner.run_benchmarks(only=[], write=False, quick=True, console=console) == 0
    assert not (tmp_path / "BENCHMARKS.md").exists()
    assert "alpha title" in console.file.getvalue()  # type: ignore[attr-defined]
    assert runner.run_benchmarks(only=[], write=True, quick=True, console=console) == 0
    assert "alpha title" in (tmp_path / "BENCHMARKS.md").read_text()


def test_cli_help_shows_flags_as_flags_and_names_the_benchmarks() -> None:
    cli = CliRunner()
    for args in (["--help"], ["bench", "--help"], ["demo", "--help"], ["cloud", "--help"]):
        result = cli.invoke(app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output, args
    bench_help = " ".join(
        cli.invoke(app, ["bench", "--help"], env={"COLUMNS": "200"}).output.split()
    )
    for name in ("ingest", "offers", "presence", "outbox"):
        assert name in bench_help
    assert "--no-write" not in bench_help
    unknown = cli.invoke(app, ["bench", "--only", "nope"])
    assert unknown.exit_code == 2
    assert "available:" in unknown.output
