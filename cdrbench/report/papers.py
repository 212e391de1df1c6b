"""The papers' reported numbers (``cdrbench/report/paper_numbers/<paper>.yaml``) and the audit
of their printed improvement columns.

A paper-number file holds, per table: the metrics (in column order), the paper's rows with the
config values that identify our runs of that row (``match``), the reported values per data set,
and optionally the printed improvement row. A run names its table with
``report.paper=<paper>/<table>`` (set by the ``experiment/`` presets)::

    tables:
      table3:
        caption: ...
        layout: wide            # wide: rows = data x metric, methods as columns (BiGNAS Table 3)
                                # long: rows = methods, metrics as columns (ablation tables)
        metrics: [auc, logloss]
        proposed: BiGNAS        # the paper's method: tested against the strongest other row
        rows:
          BPRMF: {match: {method: bprmf}}
          EDDA: {}              # no match: a baseline cdrbench does not implement
          BiGNAS: {match: {method: bignas, method.variant: full}}
        values:                 # data key -> paper row -> metric -> reported value
          bo-mo: {BPRMF: {auc: 0.6799, logloss: 0.5405}, ...}
        printed_improvement:    # data key -> metric -> printed percentage (optional)
          bo-mo: {auc: 2.34, logloss: 3.19}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

import pandas as pd
import yaml

from cdrbench.errors import ConfigError
from cdrbench.report.stats import improvement, lower_is_better

#: printed percentages have two decimals and come from 4-decimal means: agree within this
PRINTED_TOLERANCE = 0.015


@dataclass
class PaperTable:
    key: str  # "<paper>/<table>"
    caption: str
    metrics: list[str]
    rows: dict[str, dict]  # paper row -> match dict (empty: not implemented here)
    values: dict[str, dict[str, dict[str, float]]]  # data -> row -> metric -> value
    layout: str = "long"
    proposed: Optional[str] = None
    printed_improvement: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def match(self, identity: dict) -> Optional[str]:
        """The paper row whose ``match`` values all equal the run's (flattened config plus the
        results fields method/variant/profile); ``None`` when no row matches."""
        for name, spec in self.rows.items():
            match = (spec or {}).get("match")
            if match and all(_same(identity.get(k), v) for k, v in match.items()):
                return name
        return None

    def value(self, data: str, row: str, metric: str) -> Optional[float]:
        return self.values.get(data, {}).get(row, {}).get(metric)


def _same(ours, theirs) -> bool:
    if isinstance(theirs, bool) or isinstance(ours, bool):
        return str(ours).lower() == str(theirs).lower()
    return ours == theirs or str(ours) == str(theirs)


def paper_dir() -> Path:
    # beside this module, not under conf/: these files are data, not Hydra configs, and a folder
    # under conf/ would be listed by `--help` as a config group
    return Path(str(resources.files("cdrbench.report") / "paper_numbers"))


def available_tables() -> list[str]:
    keys = []
    for path in sorted(paper_dir().glob("*.yaml")):
        spec = yaml.safe_load(path.read_text()) or {}
        keys += [f"{path.stem}/{table}" for table in (spec.get("tables") or {})]
    return keys


def load_paper_table(key: str) -> PaperTable:
    """``key`` = ``<paper>/<table>``, e.g. ``bignas/table3``; a wrong key is a ConfigError that
    lists the tables there are."""
    paper, _, table = key.partition("/")
    path = paper_dir() / f"{paper}.yaml"
    spec = yaml.safe_load(path.read_text()) if path.is_file() else None
    tables = (spec or {}).get("tables") or {}
    if table not in tables:
        raise ConfigError(f"report.paper={key!r}: no such paper table (available: {available_tables()})")
    t = tables[table]
    return PaperTable(
        key=key, caption=t.get("caption", key), metrics=list(t.get("metrics") or []),
        rows={name: (v or {}) for name, v in (t.get("rows") or {}).items()},
        values={d: {r: dict(m) for r, m in rows.items()} for d, rows in (t.get("values") or {}).items()},
        layout=t.get("layout", "long"), proposed=t.get("proposed"),
        printed_improvement=t.get("printed_improvement") or {}, notes=list(t.get("notes") or []),
    )


def improvement_audit(table: PaperTable) -> pd.DataFrame:
    """Recompute the paper's printed improvement row from its own printed means.

    Per data set and metric: the best other row (the paper's "strongest baseline"), the
    improvement of the proposed row by the paper's formula (:func:`stats.improvement`), the plain
    ratio ``ours / base - 1``, the printed value, and which reading reproduces the print: ``formula``,
    ``plain ratio``, ``vs <row>`` (another baseline than the best) or ``none``."""
    if not table.proposed:
        raise ValueError(f"{table.key}: no proposed row to audit")
    out = []
    for data, by_row in table.values.items():
        for metric in table.metrics:
            ours = by_row.get(table.proposed, {}).get(metric)
            others = {r: v[metric] for r, v in by_row.items() if r != table.proposed and metric in v}
            if ours is None or not others:
                continue
            pick = min if lower_is_better(metric) else max
            best = pick(others, key=others.get)
            formula = improvement(ours, others[best], metric)
            plain = (others[best] / ours - 1) * 100 if lower_is_better(metric) else (ours / others[best] - 1) * 100
            printed = table.printed_improvement.get(data, {}).get(metric)
            reading = None
            if printed is not None:
                if abs(formula - printed) <= PRINTED_TOLERANCE:
                    reading = "formula"
                elif abs(plain - printed) <= PRINTED_TOLERANCE:
                    reading = "plain ratio"
                else:
                    alternatives = [r for r, v in others.items() if abs(improvement(ours, v, metric) - printed) <= PRINTED_TOLERANCE]
                    reading = f"vs {alternatives[0]}" if alternatives else "none"
            out.append({
                "data": data, "metric": metric, "best_baseline": best, "baseline_value": others[best],
                "ours": ours, "improvement_formula": round(formula, 2), "plain_ratio": round(plain, 2),
                "printed": printed, "printed_reading": reading,
            })
    return pd.DataFrame(out)
