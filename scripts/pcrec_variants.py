#!/usr/bin/env python
"""PCRec's transfer variants on one data set, several seeds, and the table of mean ± std test
metrics (the paper's Table IV rows plus PCRec-L1 and plain BPR-MF).

Runs, one Hydra multirun of ``python -m cdrbench`` per variant, seeds in each, one at a time:
``pcrec`` first (it pre-trains one encoder per seed and stores it in the artifact cache), then
``cu_pm``, ``cu_pe``, ``pre_only``, ``l1`` (all load that encoder: no pre-training) and
``mf_random`` (no encoder at all). Then reads every ``results.json`` and prints a markdown table.

    python scripts/pcrec_variants.py --root ../shared/data --seeds 0 1 2 --max-steps 3000
    python scripts/pcrec_variants.py --aggregate-only --out outputs/pcrec-variants
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from bench_common import sweep

VARIANTS = ["pcrec", "cu_pm", "cu_pe", "pre_only", "l1", "mf_random"]
LABELS = {"pcrec": "PCRec (all_pm)", "cu_pm": "CU-PM (cu_pm)", "cu_pe": "CU-PE (cu_pe)", "pre_only": "Pre-Only",
          "l1": "PCRec-L1 (LightGCN, 1 layer)", "mf_random": "BPR-MF, random init (none)", "l3": "PCRec-L3",
          "hop2": "PCRec-2hop", "hop3": "PCRec-3hop"}
METRICS = ["recall@20", "recall@40", "map@20", "map@40"]


def collect(out: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(out.glob("**/results.json")):
        r = json.loads(path.read_text())
        info = json.loads((path.parent / "pcrec.json").read_text())
        history = path.parent / "history.csv"
        pre = pd.read_csv(history) if history.is_file() else pd.DataFrame(columns=["phase", "train_seconds"])
        rows.append({
            "variant": r["variant"], "seed": r["seed"], **{m: r["test"][m] for m in METRICS},
            "valid_recall@20": r["valid"]["recall@20"], "best_epoch": r["best_epoch"], "epochs": r["epochs_run"],
            "seconds": r["seconds"]["total"], "pretrain_seconds": float(pre.loc[pre["phase"] == "pretrain", "train_seconds"].sum()),
            "peak_rss_mib": r["memory"]["peak_rss_bytes"] / 2**20, "pretrain_steps": info["pretrain"].get("steps"),
            "encoder_from_cache": info["pretrain"].get("from_cache"),
        })
    return pd.DataFrame(rows)


def table(frame: pd.DataFrame) -> pd.DataFrame:
    grouped = frame.groupby("variant")
    summary = pd.DataFrame({"n": grouped["seed"].count()})
    for metric in METRICS:
        summary[f"test {metric}"] = grouped[metric].agg(lambda s: f"{s.mean():.4f} ± {s.std(ddof=1):.4f}")
    summary["best epoch"] = grouped["best_epoch"].mean().map(lambda v: "-" if pd.isna(v) else f"{v:.0f}")
    summary["s"] = grouped["seconds"].mean().map("{:.0f}".format)
    summary["of which pre-training s"] = grouped["pretrain_seconds"].mean().map("{:.0f}".format)
    summary["peak RSS MiB"] = grouped["peak_rss_mib"].max().map("{:.0f}".format)
    summary["_sort"] = grouped["recall@20"].mean()
    summary.index = [LABELS.get(v, v) for v in summary.index]
    return summary.sort_values("_sort", ascending=False).drop(columns="_sort")


def markdown(frame: pd.DataFrame) -> str:
    header = ["row", *frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(index), *map(str, row)]) + " |" for index, row in zip(frame.index, frame.values)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="douban-dtcdr-pcrec")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    parser.add_argument("--variants", nargs="+", default=VARIANTS)
    parser.add_argument("--max-steps", type=int, default=None, help="pre-training budget (method.pretrain.max_steps)")
    parser.add_argument("--out", default="outputs/pcrec-variants")
    parser.add_argument("--aggregate-only", action="store_true")
    parser.add_argument("overrides", nargs="*", help="further overrides for every run")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    common = [f"data={args.data}", f"data.root={args.root}", f"seed={','.join(args.seeds)}", *args.overrides]
    if args.max_steps is not None:
        common.append(f"method.pretrain.max_steps={args.max_steps}")
    if not args.aggregate_only:
        for variant in args.variants:
            sweep(out, variant, ["method=pcrec", f"method.variant={variant}", *common])
    frame = collect(out)
    frame.to_csv(out / "runs.csv", index=False)
    steps = sorted(set(frame["pretrain_steps"].dropna().astype(int)))
    print(f"\n{args.data}, seeds {','.join(args.seeds)}, pre-training steps {steps} (mean ± sample std over seeds):")
    print(markdown(table(frame)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
