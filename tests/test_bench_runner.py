from __future__ import annotations

from bench.runner import Benchmark, Result, Row, merge_sections, render_section


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
