"""``vbatch report``: one self-contained HTML page (and PNGs) from a run's output, its manifest
and its timeline."""

from vbatch.report.page import build_report

__all__ = ["build_report"]
