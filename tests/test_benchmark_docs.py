"""The performance page shows what the current code draws: every chart was
drawn by the chart code as it is now, and every interpreter measured has its
table and chart on the page."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from helpers import ROOT

STATIC = ROOT / "docs" / "_static"
RESULTS = ROOT / "benchmarks" / "results"
CHARTS = sorted(STATIC.glob("bench-*.png"))


def harness() -> Any:
    """benchmarks/__main__.py, imported from the tree."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("benchmarks.__main__")


def png_text(path: Path) -> Dict[str, str]:
    """The tEXt chunks of a PNG file: the metadata its writer left."""
    data, found = path.read_bytes(), {}
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    offset = 8
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        if kind == b"tEXt":
            key, _, value = data[offset + 8 : offset + 8 + length].partition(b"\0")
            found[key.decode("latin-1")] = value.decode("latin-1")
        offset += 12 + length
    return found


def test_there_are_charts() -> None:
    assert CHARTS, "docs/_static has no bench-*.png"


@pytest.mark.parametrize("chart", CHARTS, ids=[chart.name for chart in CHARTS])
def test_each_chart_was_drawn_by_the_current_chart_code(chart: Path) -> None:
    drawn_by = png_text(chart).get("Drawn-by")
    assert drawn_by == harness().chart_digest(), (
        f"{chart.name} was drawn by other chart code than benchmarks/__main__.py's: "
        "redraw it (nox -s bench-3.11 -- --docs, or python -m benchmarks --docs)"
    )


def test_every_interpreter_measured_is_on_the_performance_page() -> None:
    page = (ROOT / "docs" / "performance.rst").read_text()
    measured = sorted(RESULTS.glob("results-*.json"))
    assert measured
    for results in measured:
        tag = results.stem.removeprefix("results-")
        meta = json.loads(results.read_text())["meta"]
        assert f"_bench-{tag}.rst" in page, tag
        assert f"_static/bench-{tag}.png" in page, tag
        assert (STATIC / f"bench-{tag}.png").exists(), tag
        assert meta["python"] in (ROOT / "docs" / f"_bench-{tag}.rst").read_text(), tag
