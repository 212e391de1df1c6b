#!/usr/bin/env python
"""HAGO's variant table on one data set: several seeds per row, mean ± std of the test metrics.

Rows (spec hago.md §7, paper Tables 3 and 5), each a Hydra multirun of ``python -m cdrbench``
over the seeds, run one after the other:

  hago         HAGO with GRACE (the paper's default)
  wo_go        w/o GO (no coordinators, union graph)
  homo_go      HomoGO (homogeneous coordinators, weight 1)
  heter_go     HeterGO (heterogeneous coordinators, weight 1)
  backbone     LightGCN-single trained on the target graph only
  hago_bgrl    HAGO with BGRL
  hago_costa   HAGO with COSTA

With ``--backbone-grid`` the backbone's lr x reg_weight grid of spec §7 is searched on the first
seed first (best validation NDCG@10), then the chosen pair runs on every seed. Then every
``results.json`` under ``--out`` is read and a markdown table printed (and written to
``<out>/table.md``): test Recall/HR/NDCG/MRR@10 as mean ± sample std over seeds, seconds per
epoch of each stage, epochs run, peak RSS.

    OMP_NUM_THREADS=1 python scripts/hago_table.py --data douban-dtcdr-hago --root ../shared/data \\
        --seeds 0 1 2 --out outputs/hago-douban --backbone-grid
    python scripts/hago_table.py --aggregate-only --out outputs/hago-douban
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import yaml
import bench_common as common

ROWS = {
    "hago": ["method.variant=hago", "method.pretrain.method=grace"],
    "wo_go": ["method.variant=wo_go", "method.pretrain.method=grace"],
    "homo_go": ["method.variant=homo_go", "method.pretrain.method=grace"],
    "heter_go": ["method.variant=heter_go", "method.pretrain.method=grace"],
    "backbone": ["method.variant=backbone"],
    "hago_bgrl": ["method.variant=hago", "method.pretrain.method=bgrl"],
    "hago_costa": ["method.variant=hago", "method.pretrain.method=costa"],
}
GRID_LR = ["1e-3", "5e-3", "1e-2"]
GRID_REG = ["1e-4", "1e-3", "1e-2"]
METRICS = ["recall@10", "hr@10", "ndcg@10", "mrr@10"]


def sweep(out: Path, name: str, overrides: list[str]) -> None:
    common.sweep(out, name, ["method=hago", *overrides, f"trainer.artifact_dir={out / 'artifacts'}"])


def collect(out: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(out.glob("*/*/results.json")):
        result = json.loads(path.read_text())
        history = pd.read_csv(path.parent / "history.csv") if (path.parent / "history.csv").is_file() else pd.DataFrame()
        epochs = history.groupby("phase").size().to_dict() if not history.empty else {}
        by_phase = result["seconds"].get("per_epoch_by_phase", {})
        rows.append({
            "row": path.parent.parent.name, "seed": result["seed"], "valid_ndcg@10": result["valid"]["ndcg@10"],
            **{f"test_{m}": result["test"][m] for m in METRICS},
            "pretrain_s_per_epoch": by_phase.get("pretrain"), "tune_s_per_epoch": by_phase.get("tune"),
            "pretrain_epochs": epochs.get("pretrain", 0), "tune_epochs": epochs.get("tune", 0),
            "best_epoch": result["best_epoch"], "peak_rss_mib": result["memory"]["peak_rss_bytes"] / 2**20,
            "total_s": result["seconds"]["total"],
        })
    return pd.DataFrame(rows)


def table(frame: pd.DataFrame) -> pd.DataFrame:
    order = [r for r in ROWS if r in set(frame["row"])]
    grouped = frame.groupby("row")

    def mean_std(column):
        return grouped[column].agg(lambda s: f"{s.mean():.4f} ± {s.std(ddof=1):.4f}" if len(s) > 1 else f"{s.mean():.4f}")

    def mean(column, fmt):
        return grouped[column].mean().map(lambda v: "–" if pd.isna(v) else fmt.format(v))

    summary = pd.DataFrame({
        "n": grouped["seed"].count(),
        **{f"test {m}": mean_std(f"test_{m}") for m in METRICS},
        "pretrain s/epoch": mean("pretrain_s_per_epoch", "{:.2f}"),
        "tune s/epoch": mean("tune_s_per_epoch", "{:.2f}"),
        "tune epochs": mean("tune_epochs", "{:.0f}"),
        "peak RSS MiB": mean("peak_rss_mib", "{:.0f}"),
    })
    return summary.reindex(order)


def markdown(frame: pd.DataFrame) -> str:
    header = [frame.index.name or "", *map(str, frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(index), *map(str, row)]) + " |" for index, row in zip(frame.index, frame.values)]
    return "\n".join(lines)


def backbone_grid(out: Path, common: list[str], first_seed: str) -> list[str]:
    sweep(out / "grid", "backbone", [*ROWS["backbone"], *common, f"seed={first_seed}",
                                     f"method.tune.lr={','.join(GRID_LR)}", f"method.tune.reg_weight={','.join(GRID_REG)}"])
    best, best_value = None, float("-inf")
    for path in sorted((out / "grid" / "backbone").glob("*/results.json")):
        tune = yaml.safe_load((path.parent / "config.yaml").read_text())["method"]["tune"]
        value = json.loads(path.read_text())["valid"]["ndcg@10"]
        print(f"backbone grid: lr {tune['lr']} reg {tune['reg_weight']}: valid NDCG@10 {value:.4f}")
        if value > best_value:
            best, best_value = [f"method.tune.lr={tune['lr']}", f"method.tune.reg_weight={tune['reg_weight']}"], value
    print(f"backbone grid: chose {best} (valid NDCG@10 {best_value:.4f})")
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="douban-dtcdr-hago")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--out", default="outputs/hago-table")
    parser.add_argument("--backbone-grid", action="store_true", help="search the backbone's lr x reg grid first")
    parser.add_argument("--aggregate-only", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run, e.g. method.tune.max_epochs=100")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    common = [f"data={args.data}", f"data.root={args.root}", *args.overrides]
    if not args.aggregate_only:
        for row in args.rows:
            extra = []
            if row == "backbone" and args.backbone_grid:
                extra = backbone_grid(out, common, args.seeds[0])
            sweep(out, row, [*ROWS[row], *common, *extra, f"seed={','.join(args.seeds)}"])
    frame = collect(out)
    frame.to_csv(out / "runs.csv", index=False)
    shown = table(frame)
    text = f"{args.data}, seeds {' '.join(args.seeds)} (mean ± sample std over seeds)\n\n{markdown(shown)}\n"
    (out / "table.md").write_text(text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
