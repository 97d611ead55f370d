"""The report in a real browser: headless Chromium from the distribution's packages loads
report.html, every image decodes, and no request leaves the file. Skipped, with the reason,
where Chromium or playwright is missing (CI installs both)."""

from __future__ import annotations

import importlib.util

import pytest
from matplotlib.figure import Figure as MplFigure

from maelens.report.browser import check_report, find_chromium
from maelens.report.definitions import REPORT_ORDER, SECTIONS
from maelens.report.figio import save_figure
from maelens.report.html import Figure, Section, Table, render_report

pytestmark = [
    pytest.mark.skipif(find_chromium() is None,
                       reason="no Chromium on this machine (apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="the playwright package is not installed"),
]


def test_every_image_decodes_and_nothing_is_requested(tmp_path):
    sections = []
    for i, sid in enumerate(REPORT_ORDER[:4]):
        fig = MplFigure(figsize=(3, 2))
        fig.add_subplot().plot([0, 1, 2], [i, 2 - i, i])
        (png, _) = save_figure(fig, tmp_path / f"f{i}")
        text = SECTIONS[sid]
        sections.append(Section(sid, text.title, text.reading, text.definition_html,
                                [Figure(png, f"figure {i}")], [Table("t", rows=[["a"], ["1"]])]))
    report = render_report(tmp_path / "report.html", "maelens [test]", sections, {"k": "v"})
    shot = tmp_path / "shot.png"
    check = check_report(report, shot)
    assert check.images == 4 and check.decoded == 4
    assert check.outside_requests == [] and check.requests[0].startswith("file:")
    assert check.title == "maelens [test]"
    assert shot.stat().st_size > 10_000  # a real screenshot


def test_a_broken_image_is_caught(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    report = render_report(tmp_path / "r.html", "r", [Section("s", "S", "r", "", [Figure(bad)])],
                           {})
    check = check_report(report)
    assert check.images == 1 and check.decoded == 0
