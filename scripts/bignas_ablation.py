#!/usr/bin/env python
"""BiGNAS ablations on one data set, several seeds, and the table of mean ± std test metrics.

Runs (each a Hydra multirun of ``python -m cdrbench``):
  * BiGNAS ``full``, ``no_impo``, ``no_source``;
  * ``manual`` with every candidate op (the reported MANUAL row is the op with the best mean
    validation AUC, as the spec says);
  * single-domain LightGCN trained with BCE on the click labels, on the target only and on
    source + target merged (``data.use_source=true``).
Then reads every ``results.json`` and prints a markdown table.

    python scripts/bignas_ablation.py --root ../shared/data --seeds 0 1 2
    python scripts/bignas_ablation.py --aggregate-only --out outputs/bignas-ablation
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from bench_common import sweep

OPS = ["gcn", "gat", "sage", "lightgcn", "linear"]


def collect(out: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(out.glob("**/results.json")):
        r = json.loads(path.read_text())
        config = (path.parent / "config.yaml").read_text()
        manual_op = None
        if r.get("variant") == "manual":
            manual_op = next(line.split(":")[1].strip() for line in config.splitlines() if "manual_op:" in line)
        use_source = next((line.split(":")[1].strip() for line in config.splitlines() if line.strip().startswith("use_source:")), "null")
        rows.append({
            "method": r["method"], "variant": r.get("variant") or "", "op": manual_op, "use_source": use_source,
            "seed": r["seed"], "valid_auc": r["valid"]["auc"], "test_auc": r["test"]["auc"],
            "test_logloss": r["test"]["logloss"], "best_epoch": r["best_epoch"], "epochs": r["epochs_run"],
            "s_per_epoch": r["seconds"]["per_epoch"],
        })
    return pd.DataFrame(rows)


def table(frame: pd.DataFrame) -> pd.DataFrame:
    def label(row):
        if row["method"] != "bignas":
            return f"{row['method']} ({'source+target' if row['use_source'] == 'true' else 'target only'})"
        return f"bignas {row['variant']}" + (f" ({row['op']})" if row["variant"] == "manual" else "")

    frame = frame.assign(row=frame.apply(label, axis=1))
    manual = frame[frame["variant"] == "manual"]
    if not manual.empty:  # MANUAL = the op with the best mean validation AUC
        best_op = manual.groupby("op")["valid_auc"].mean().idxmax()
        frame = frame[(frame["variant"] != "manual") | (frame["op"] == best_op)]
    grouped = frame.groupby("row")
    summary = pd.DataFrame({
        "n": grouped["seed"].count(),
        "test AUC": grouped["test_auc"].agg(lambda s: f"{s.mean():.4f} ± {s.std(ddof=1):.4f}"),
        "test LogLoss": grouped["test_logloss"].agg(lambda s: f"{s.mean():.4f} ± {s.std(ddof=1):.4f}"),
        "valid AUC": grouped["valid_auc"].mean().map("{:.4f}".format),
        "epochs": grouped["epochs"].mean().map("{:.1f}".format),
        "s/epoch": grouped["s_per_epoch"].mean().map("{:.2f}".format),
        "_sort": grouped["test_auc"].mean(),
    })
    return summary.sort_values("_sort", ascending=False).drop(columns="_sort")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="ml100k-comedy-drama")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    parser.add_argument("--out", default="outputs/bignas-ablation")
    parser.add_argument("--aggregate-only", action="store_true")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    seeds = ",".join(args.seeds)
    common = [f"data={args.data}", f"data.root={args.root}", f"seed={seeds}"]
    if not args.aggregate_only:
        sweep(out, "bignas", ["method=bignas", "method.variant=full,no_impo,no_source", *common])
        sweep(out, "manual", ["method=bignas", "method.variant=manual", f"method.arch.manual_op={','.join(OPS)}", *common])
        sweep(out, "lightgcn", ["method=lightgcn", "eval.tasks=[ctr]", "data.use_source=false,true", *common])
    frame = collect(out)
    frame.to_csv(out / "runs.csv", index=False)
    manual = frame[frame["variant"] == "manual"]
    if not manual.empty:
        print("\nMANUAL op selection (mean validation AUC):")
        print(manual.groupby("op")[["valid_auc", "test_auc"]].mean().round(4).to_string())
    print(f"\n{args.data}, seeds {seeds} (mean ± sample std over seeds):")
    print(table(frame).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
