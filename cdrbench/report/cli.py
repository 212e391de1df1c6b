"""``cdrbench report <dir>``: every finished run under a directory -> tables, audit, figures.

Writes into ``<dir>/report/`` (or ``--out``):

* ``runs.csv`` — one row per finished run (:func:`~cdrbench.report.collect.collect_results`);
* ``table[_<paper>_<table>].{md,csv,tex}`` — per paper table named by the runs'
  ``report.paper`` (or one table when they name none): mean ± std, bold / underlined best and
  second, ``*`` / ``†`` paired tests, the improvement formula, paper numbers and our difference;
* ``audit_<paper>_<table>.md`` — the paper's printed improvement row recomputed from its means;
* figures (:mod:`cdrbench.report.plots`) and ``report.md``, which collects all of it and says
  which runs and figures were left out and why.

Exit code 2 (one line, no traceback) when the directory holds no finished run.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import pandas as pd

from cdrbench.errors import CdrbenchError, ConfigError
from cdrbench.report.collect import row_labels, scan_runs
from cdrbench.report.papers import improvement_audit, load_paper_table
from cdrbench.report.tables import build_table, long_frame, to_latex, to_markdown


class NoResultsError(CdrbenchError):
    """The report directory holds no finished run."""


@dataclass
class Report:
    out: Path
    tables: dict[str, str] = field(default_factory=dict)  # name -> markdown
    files: list[Path] = field(default_factory=list)
    skipped_plots: list[tuple[str, str]] = field(default_factory=list)


def _slug(key: Optional[str]) -> str:
    return "" if not key else "_" + key.replace("/", "_")


def write_report(
    directory,
    out=None,
    metrics: Optional[Sequence[str]] = None,
    split: str = "test",
    paper: Optional[str] = None,
    alpha: float = 0.05,
    alternative: str = "two-sided",
    plots: bool = True,
    log: Callable[[str], None] = print,
) -> Report:
    directory = Path(directory)
    if not directory.is_dir():
        raise NoResultsError(f"report: {directory} is not a directory")
    scan = scan_runs(directory, log=log)
    runs = scan.runs
    if runs.empty:
        raise NoResultsError(f"report: no finished run (results.json) under {directory}")
    if alternative not in ("two-sided", "greater"):
        raise ConfigError(f"report --alternative={alternative!r} is not one of ['two-sided', 'greater']")
    runs = runs.assign(row=row_labels(runs))
    configs = runs["_config"]
    out = Path(out) if out else directory / "report"
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out)
    public = runs.drop(columns=["_config", "mtime"])
    public.to_csv(out / "runs.csv", index=False)
    report.files.append(out / "runs.csv")

    keys = [paper] if paper else list(dict.fromkeys(runs["paper_table"].where(runs["paper_table"].notna(), None)))
    sections = [f"# cdrbench report: {directory}\n", f"{len(runs)} finished run(s); {len(scan.unfinished)} unfinished; "
                f"{len(scan.duplicates)} not counted (duplicates).\n"]
    names: dict[tuple[str, str], str] = {}  # (data, config hash) -> the row name the table gave it
    for key in keys:
        part = runs if paper or len(keys) == 1 else runs[runs["paper_table"].where(runs["paper_table"].notna(), None) == key]
        paper_table = load_paper_table(key) if key else None
        table = build_table(part, metrics=metrics, paper=paper_table, split=split, alpha=alpha,
                            alternative=alternative, configs=configs.loc[part.index])
        names.update({(g.data, g.config_hash): g.label for g in table.groups})
        stem = f"table{_slug(key)}"
        markdown = to_markdown(table)
        for suffix, text in ((".md", markdown + "\n"), (".tex", to_latex(table, caption=paper_table.caption if paper_table else None))):
            (out / f"{stem}{suffix}").write_text(text)
            report.files.append(out / f"{stem}{suffix}")
        long_frame(table).to_csv(out / f"{stem}.csv", index=False)
        report.files.append(out / f"{stem}.csv")
        report.tables[key or "table"] = markdown
        title = paper_table.caption if paper_table else "results"
        sections += [f"## {title}\n", f"{split} split, mean ± sample std over seeds (n per cell in {stem}.csv). "
                     "**bold** best, <u>underlined</u> second per column; * paired t-test over seeds and † over users "
                     f"(p < {alpha}, {alternative}) for the marked row against the strongest other row.\n", markdown + "\n"]
        sections += [f"- {note}" for note in table.notes] + [""]
        if paper_table:
            sections += [f"- paper: {note}" for note in paper_table.notes] + [""]
        if paper_table and paper_table.printed_improvement and paper_table.proposed:
            audit = improvement_audit(paper_table)
            audit_md = _frame_markdown(audit)
            (out / f"audit{_slug(key)}.md").write_text(audit_md + "\n")
            report.files.append(out / f"audit{_slug(key)}.md")
            sections += [f"### The paper's printed improvement row, recomputed from its own means ({key})\n", audit_md + "\n"]
    if plots:
        from cdrbench.report.plots import make_plots

        named = runs.assign(row=[names.get((d, h), r) for d, h, r in zip(runs["data"], runs["config_hash"], runs["row"])])
        results = make_plots(named, configs, directory, out, log=log)
        drawn = [r for r in results if not r.skipped]
        report.files += [f for r in drawn for f in r.files]
        report.skipped_plots = [(r.name, r.skipped) for r in results if r.skipped]
        sections += ["## Figures\n"] + [f"- {r.name}: " + ", ".join(f.name for f in r.files) for r in drawn]
        sections += [f"- skipped: {name}: {why}" for name, why in report.skipped_plots] + [""]
    if scan.unfinished or scan.duplicates:
        sections += ["## Runs left out\n"] + [f"- {d}: {why}" for d, why in scan.unfinished + scan.duplicates] + [""]
    (out / "report.md").write_text("\n".join(sections))
    report.files.append(out / "report.md")
    return report


def _frame_markdown(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return ""
        return f"{value:g}" if isinstance(value, float) else str(value)

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="cdrbench report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", help="a multirun (or any) directory holding run directories with results.json")
    parser.add_argument("--out", help="where the report goes (default: <directory>/report)")
    parser.add_argument("--metrics", help="comma-separated metrics, e.g. auc,logloss or recall@20,ndcg@20 (default: the paper table's, else AUC/LogLoss and Recall/NDCG@20)")
    parser.add_argument("--split", default="test", choices=["test", "valid"])
    parser.add_argument("--paper", help="paper table to compare with, e.g. bignas/table3 (default: the runs' report.paper)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level of the paired tests")
    parser.add_argument("--alternative", default="two-sided", help="two-sided | greater")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    try:
        report = write_report(
            args.directory, out=args.out, metrics=args.metrics.split(",") if args.metrics else None, split=args.split,
            paper=args.paper, alpha=args.alpha, alternative=args.alternative, plots=not args.no_plots,
        )
    except CdrbenchError as error:
        print(f"cdrbench: error: {error}", file=sys.stderr)
        return error.exit_code
    for key, markdown in report.tables.items():
        print(f"\n{key}:\n{markdown}")
    print(f"\nreport written to {report.out} ({len(report.files)} files; see report.md)")
    return 0
