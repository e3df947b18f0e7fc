"""Helpers shared by the report tests (tests/train_lib/test_report.py and the method tests)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from jad.train_lib import report_html

CELL = re.compile(r'<td data-key="([a-z_0-9]+)" data-value="([^"]+)">')
ROW = re.compile(r'<tr data-row="([^"]+)"[^>]*>(.*?)</tr>', re.S)


def table(page: str, table_id: str) -> dict[str, dict[str, float]]:
    """``{row: {key: exact fraction}}`` of the report's table ``table_id``."""
    m = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert m, f"no table {table_id}"
    return {
        row: {k: float(v) for k, v in CELL.findall(cells)} for row, cells in ROW.findall(m.group(1))
    }


def check_report(workdir: Path, results: dict[str, Any]) -> str:
    """Build the workdir's report; its tables must be ``results``' numbers (exactly), and a
    trainer's section must show its history, selected step and protocol. Returns the page."""
    page = report_html.build(workdir).read_text()
    expected = {
        row: {k: v for k, v in vals.items() if v is not None}
        for row, vals in results["metrics"].items()
    }
    assert table(page, "metrics") == expected
    if "calibrated" in results:
        assert table(page, "calibrated") == {
            row: {k: v for k, v in vals.items() if v is not None}
            for row, vals in results["calibrated"]["metrics"].items()
        }
    for d in results["details"].values():
        if d.get("history"):
            assert "training losses (epoch means)" in page
            assert f"selected step {d['selected_step']}" in page and d["protocol"] in page
    return page
