"""Reports over run records: :func:`collect_results` (runs -> DataFrame), tables with
significance marks and the papers' numbers (:mod:`.tables`, :mod:`.papers`), figures
(:mod:`.plots`) and the ``cdrbench report`` command (:mod:`.cli`)."""

from cdrbench.report.collect import collect_results, scan_runs

__all__ = ["collect_results", "scan_runs"]
