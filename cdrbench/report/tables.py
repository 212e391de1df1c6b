"""Multi-seed tables in a paper's layout: mean ± std per cell, best **bold** and second
underlined per column, a paired-test mark against the strongest other row, the papers'
improvement formula, and the reported number with our difference.

Marks: ``*`` = paired t-test over seeds, p < alpha, between the paper's method (when the table
names one, else the best row) and the strongest other row by mean, on the better of the two;
``†`` = the same test over users (top-N metrics, from ``per_user_<split>.parquet``; each user's
value is first averaged over seeds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from cdrbench.report.papers import PaperTable
from cdrbench.report.stats import PairedTest, best_index, improvement, lower_is_better, paired_test

DEFAULT_CTR = ("auc", "logloss")
DEFAULT_TOPN = ("recall@20", "ndcg@20")


@dataclass
class Group:
    """The runs of one configuration on one data set (one cell row of the table)."""

    data: str
    label: str
    config_hash: str
    method: str
    run_dirs: dict[int, str]  # seed -> run directory
    values: dict[str, dict[int, float]]  # metric -> seed -> value
    paper_row: Optional[str] = None
    #: the label comes from report.row (kept even when a paper row matches)
    explicit_label: bool = False

    def mean(self, metric: str) -> Optional[float]:
        v = [x for x in self.values.get(metric, {}).values() if x is not None]
        return float(np.mean(v)) if v else None

    def std(self, metric: str) -> Optional[float]:
        v = [x for x in self.values.get(metric, {}).values() if x is not None]
        return float(np.std(v, ddof=1)) if len(v) > 1 else None

    def n(self, metric: str) -> int:
        return sum(x is not None for x in self.values.get(metric, {}).values())


@dataclass
class Comparison:
    """The test of one (data, metric) column: ``winner`` against ``runner_up``."""

    winner: str
    runner_up: str
    seeds: Optional[PairedTest]
    users: Optional[PairedTest]
    improvement: Optional[float]


@dataclass
class ReportTable:
    split: str
    metrics: list[str]
    groups: list[Group]
    paper: Optional[PaperTable] = None
    alpha: float = 0.05
    comparisons: dict[tuple[str, str], Comparison] = field(default_factory=dict)
    ranks: dict[tuple[str, str, str], int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(g.data for g in self.groups))

    def rows_of(self, data: str) -> list[Group]:
        return [g for g in self.groups if g.data == data]

    def improvement_name(self) -> str:
        return "RelaImpr" if all(m.split("@")[0] in ("auc", "logloss") for m in self.metrics) else "Impro."


def default_metrics(runs: pd.DataFrame, split: str = "test") -> list[str]:
    have = {c[len(split) + 1 :] for c in runs.columns if c.startswith(f"{split}_")}
    metrics = [m for m in DEFAULT_CTR if m in have]
    ks = sorted(int(m.split("@")[1]) for m in have if m.startswith("ndcg@"))
    if ks:
        k = max([x for x in ks if x <= 20] or [min(ks)])
        metrics += [f"{name}@{k}" for name in ("recall", "ndcg")]
    return metrics


def build_table(
    runs: pd.DataFrame,
    metrics: Optional[Sequence[str]] = None,
    paper: Optional[PaperTable] = None,
    split: str = "test",
    alpha: float = 0.05,
    alternative: str = "two-sided",
    configs: Optional[pd.Series] = None,
) -> ReportTable:
    """Aggregate ``runs`` (:func:`~cdrbench.report.collect.collect_results`) into a table.

    ``configs`` (flattened run configs, indexed like ``runs``) lets paper rows be matched on any
    config key; without it only the results fields (method, variant, profile) are matched."""
    if metrics is None:
        metrics = paper.metrics if paper and paper.metrics else default_metrics(runs, split)
    metrics = list(metrics)
    groups = []
    for (data, chash), part in runs.groupby(["data", "config_hash"], sort=False):
        first = part.iloc[0]
        identity = {"method": first["method"], "variant": first.get("variant"), "profile": first.get("profile"),
                    **(configs.loc[part.index[0]] if configs is not None else {})}
        values = {m: {int(s): _num(v) for s, v in zip(part["seed"], part.get(f"{split}_{m}", [None] * len(part)))} for m in metrics}
        groups.append(Group(
            data=str(data), label=str(first["row"]), config_hash=str(chash), method=str(first["method"]),
            run_dirs={int(s): d for s, d in zip(part["seed"], part["run_dir"])}, values=values,
            paper_row=paper.match(identity) if paper else None,
            explicit_label=identity.get("report.row") is not None,
        ))
    _name_rows(groups)
    # rows in the paper's order where they match one, then the others by label
    paper_order = {name: i for i, name in enumerate(paper.rows)} if paper else {}
    data_order = {d: i for i, d in enumerate(dict.fromkeys(g.data for g in groups))}
    groups.sort(key=lambda g: (data_order[g.data], paper_order.get(g.paper_row, len(paper_order)), g.label))
    table = ReportTable(split=split, metrics=metrics, groups=groups, paper=paper, alpha=alpha)
    for data in table.datasets:
        rows = table.rows_of(data)
        for metric in metrics:
            means = {g.label: g.mean(metric) for g in rows}
            order = best_index(means, metric)
            distinct = list(dict.fromkeys(means[label] for label in order if means[label] is not None))
            for label in order:  # equal means share a rank (a tie is bold twice)
                if means[label] is not None and means[label] in distinct[:2]:
                    table.ranks[(data, label, metric)] = distinct.index(means[label]) + 1
            table.comparisons[(data, metric)] = _compare(table, rows, metric, order, split, alternative)
    return table


def _num(value) -> Optional[float]:
    return None if value is None or (isinstance(value, float) and value != value) else float(value)


def _name_rows(groups: list[Group]) -> None:
    """Rows matched to a paper row take its name; labels that collide on one data set get the
    config hash appended, so no two rows of a table share a name."""
    for g in groups:
        if g.paper_row and not g.explicit_label:
            g.label = g.paper_row
    seen: dict[tuple[str, str], int] = {}
    for g in groups:
        seen[(g.data, g.label)] = seen.get((g.data, g.label), 0) + 1
    for g in groups:
        if seen[(g.data, g.label)] > 1:
            g.label = f"{g.label} [{g.config_hash[:6]}]"


def _compare(table: ReportTable, rows: list[Group], metric: str, order: list[str], split: str, alternative: str) -> Optional[Comparison]:
    by_label = {g.label: g for g in rows}
    ranked = [label for label in order if by_label[label].mean(metric) is not None]
    if len(ranked) < 2:
        return None
    proposed = table.paper.proposed if table.paper else None
    winner = proposed if proposed in by_label and by_label[proposed].mean(metric) is not None else ranked[0]
    runner_up = next(label for label in ranked if label != winner)
    a, b = by_label[winner], by_label[runner_up]
    seeds = sorted(set(a.values[metric]) & set(b.values[metric]))
    pairs = [(a.values[metric][s], b.values[metric][s]) for s in seeds
             if a.values[metric][s] is not None and b.values[metric][s] is not None]
    seed_test = paired_test([p[0] for p in pairs], [p[1] for p in pairs], metric, alternative) if pairs else None
    if seed_test is None:
        table.notes.append(f"{a.data} {metric}: {winner} vs {runner_up} share {len(pairs)} seed(s); no paired test over seeds (needs 2)")
    user_test = _user_test(a, b, metric, split, alternative)
    impr = None
    try:
        impr = improvement(a.mean(metric), b.mean(metric), metric)
    except (ValueError, ZeroDivisionError):
        pass
    return Comparison(winner, runner_up, seed_test, user_test, impr)


def _per_user(group: Group, metric: str, split: str) -> Optional[pd.Series]:
    frames = []
    for run_dir in group.run_dirs.values():
        path = Path(run_dir) / f"per_user_{split}.parquet"
        if not path.is_file():
            return None
        frame = pd.read_parquet(path, columns=None)
        if metric not in frame:
            return None
        frames.append(frame[["user", metric]])
    return pd.concat(frames).groupby("user")[metric].mean() if frames else None


def _user_test(a: Group, b: Group, metric: str, split: str, alternative: str) -> Optional[PairedTest]:
    if "@" not in metric:
        return None
    ua, ub = _per_user(a, metric, split), _per_user(b, metric, split)
    if ua is None or ub is None:
        return None
    joined = pd.concat([ua.rename("a"), ub.rename("b")], axis=1, join="inner")
    return paired_test(joined["a"].to_numpy(), joined["b"].to_numpy(), metric, alternative)


# ---------------------------------------------------------------------------- output
def _better(test: Optional[PairedTest], comp: Comparison, alpha: float) -> Optional[str]:
    """The row a significant test favours (the marked row, or the other one when the paper's
    method is significantly worse), else None."""
    if test is None or not test.p < alpha or test.mean_diff == 0:
        return None
    return comp.winner if test.mean_diff > 0 else comp.runner_up


def marks(table: ReportTable, data: str, label: str, metric: str) -> str:
    """``*`` / ``†`` on the better row of a significant paired test (evaluation.md §5)."""
    comp = table.comparisons.get((data, metric))
    if comp is None:
        return ""
    out = ""
    if _better(comp.seeds, comp, table.alpha) == label:
        out += "*"
    if _better(comp.users, comp, table.alpha) == label:
        out += "†"
    return out


def long_frame(table: ReportTable) -> pd.DataFrame:
    """Machine-readable table (the CSV): one row per data set, row and metric."""
    out = []
    for g in table.groups:
        for metric in table.metrics:
            comp = table.comparisons.get((g.data, metric))
            paper = table.paper.value(g.data, g.paper_row, metric) if table.paper and g.paper_row else None
            mean = g.mean(metric)
            is_winner = comp is not None and comp.winner == g.label
            out.append({
                "data": g.data, "row": g.label, "metric": metric, "mean": mean, "std": g.std(metric),
                "n": g.n(metric), "seeds": " ".join(str(s) for s in sorted(g.values[metric])),
                "rank": table.ranks.get((g.data, g.label, metric)), "marks": marks(table, g.data, g.label, metric),
                "compared_with": comp.runner_up if is_winner else None,
                "p_seeds": comp.seeds.p if is_winner and comp.seeds else None,
                "p_users": comp.users.p if is_winner and comp.users else None,
                "improvement_pct": comp.improvement if is_winner else None,
                "paper": paper, "delta_vs_paper": (mean - paper) if paper is not None and mean is not None else None,
                "config_hash": g.config_hash, "method": g.method,
            })
    return pd.DataFrame(out)


def _cell(table: ReportTable, g: Group, metric: str, style: str) -> str:
    mean, std = g.mean(metric), g.std(metric)
    if mean is None:
        return "–"
    text = f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")
    mark = marks(table, g.data, g.label, metric)
    rank = table.ranks.get((g.data, g.label, metric))
    if style == "latex":
        latex_mark = mark.replace("†", r"\dagger")
        text = text.replace("±", r"$\pm$") + ("$^{" + latex_mark + "}$" if mark else "")
        return rf"\textbf{{{text}}}" if rank == 1 else rf"\underline{{{text}}}" if rank == 2 else text
    text += mark
    return f"**{text}**" if rank == 1 else f"<u>{text}</u>" if rank == 2 else text


def _paper_cells(table: ReportTable, g: Group, metric: str) -> tuple[str, str]:
    value = table.paper.value(g.data, g.paper_row, metric) if table.paper and g.paper_row else None
    mean = g.mean(metric)
    if value is None:
        return "", ""
    return f"{value:.4f}", (f"{mean - value:+.4f}" if mean is not None else "")


def display_frame(table: ReportTable, style: str = "markdown") -> pd.DataFrame:
    """The table as strings, in the paper's layout (``table.paper.layout``: ``wide`` puts the
    methods in columns and one row per data set and metric; ``long`` one row per method)."""
    wide = table.paper is not None and table.paper.layout == "wide"
    has_paper = table.paper is not None and any(
        table.paper.value(g.data, g.paper_row, m) is not None for g in table.groups if g.paper_row for m in table.metrics)
    impr = table.improvement_name()
    rows = []
    if wide:
        labels = list(dict.fromkeys(g.label for g in table.groups))
        proposed = table.paper.proposed
        for data in table.datasets:
            by_label = {g.label: g for g in table.rows_of(data)}
            for metric in table.metrics:
                row = {"data": data, "metric": metric}
                for label in labels:
                    row[label] = _cell(table, by_label[label], metric, style) if label in by_label else ""
                comp = table.comparisons.get((data, metric))
                row[impr] = f"{comp.improvement:+.2f}%" if comp and comp.improvement is not None else ""
                if has_paper and proposed in by_label:
                    row[f"{proposed} (paper)"], row["Δ"] = _paper_cells(table, by_label[proposed], metric)
                rows.append(row)
        return pd.DataFrame(rows)
    for data in table.datasets:
        for g in table.rows_of(data):
            row = {"data": data, "row": g.label}
            for metric in table.metrics:
                row[metric] = _cell(table, g, metric, style)
                if has_paper:
                    row[f"{metric} (paper)"], row[f"Δ {metric}"] = _paper_cells(table, g, metric)
            rows.append(row)
        if not any(table.comparisons.get((data, m)) for m in table.metrics):
            continue
        row = {"data": data, "row": f"{impr} (tested row vs strongest other)"}
        for metric in table.metrics:
            comp = table.comparisons.get((data, metric))
            text = f"{comp.improvement:+.2f}% ({comp.winner} vs {comp.runner_up})" if comp and comp.improvement is not None else ""
            row[metric] = _tex_escape(text) if style == "latex" else text
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def to_markdown(table: ReportTable) -> str:
    frame = display_frame(table, "markdown")
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("%", r"\%"), ("&", r"\&"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    return text.replace("Δ", r"$\Delta$").replace("±", r"$\pm$")


def to_latex(table: ReportTable, caption: Optional[str] = None) -> str:
    """A booktabs ``tabular`` inside a ``table`` float (needs ``\\usepackage{booktabs}``)."""
    frame = display_frame(table, "latex")
    cols = "l" * 2 + "r" * (len(frame.columns) - 2)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_tex_escape(caption)}}}")
    lines += [rf"\begin{{tabular}}{{{cols}}}", r"\toprule", " & ".join(_tex_escape(str(c)) for c in frame.columns) + r" \\", r"\midrule"]
    cell_columns = set(table.metrics) | {g.label for g in table.groups}  # built as LaTeX by _cell
    previous = None
    for row in frame.itertuples(index=False):
        if previous is not None and row[0] != previous:
            lines.append(r"\midrule")
        previous = row[0]
        values = [str(v) if c in cell_columns and c not in ("data", "row", "metric") else _tex_escape(str(v))
                  for c, v in zip(frame.columns, row)]
        lines.append(" & ".join(values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
