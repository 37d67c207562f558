"""Run reports: training curves, per-case Dice and overlays of one or more runs as one HTML page."""

from medseg.report.page import write_report

__all__ = ["write_report"]
