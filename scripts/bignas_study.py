#!/usr/bin/env python
"""Does BiGNAS's bi-level part ever matter? Training-length and outer-step settings, 3 seeds.

Each *setting* is a set of overrides on top of ``method=bignas`` (paper profile); each run is one
``python -m cdrbench`` process, run one after the other (a finished run, i.e. one with a
``results.json``, is skipped, so an interrupted study continues where it stopped). Selection is
on validation AUC only; test AUC is read from the selected epoch, as always.

Reported per (setting, variant): mean ± sample std of test AUC / LogLoss and valid AUC, the
selected and the last epoch, the outer steps taken up to the selected epoch, the domain weight
ReLU(γ_S) at the selected epoch and the spread of the per-row source weights (std of
``relative_weight`` in ``importance.parquet``: 0 = uniform).

    python scripts/bignas_study.py --data ml100k-comedy-drama --out outputs/bignas-study
    python scripts/bignas_study.py --data douban-dtcdr --settings default min20_p10 --aggregate-only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

#: name -> overrides (on top of method=bignas, paper profile: warm-up 10, patience 3,
#: outer_every 20, outer_lr 1e-3)
SETTINGS = {
    "default": [],
    "min20": ["trainer.min_epochs=20"],
    "min20_p10": ["trainer.min_epochs=20", "trainer.patience=10"],
    "min20_p10_oe5": ["trainer.min_epochs=20", "trainer.patience=10", "method.bilevel.outer_every=5"],
    "min20_p10_lr1e-2": ["trainer.min_epochs=20", "trainer.patience=10", "method.bilevel.outer_lr=0.01"],
    "min20_p10_oe5_lr1e-2": ["trainer.min_epochs=20", "trainer.patience=10", "method.bilevel.outer_every=5",
                             "method.bilevel.outer_lr=0.01"],
    "min20_p10_oe5_lr1e-1": ["trainer.min_epochs=20", "trainer.patience=10", "method.bilevel.outer_every=5",
                             "method.bilevel.outer_lr=0.1"],
}
#: the ablations do not take outer steps: only the training-length settings apply to them
ABLATION_SETTINGS = ("default", "min20_p10")


def plan(settings: list[str], variants: list[str]) -> list[tuple[str, str]]:
    out = []
    for setting in settings:
        for variant in variants:
            if variant != "full" and setting not in ABLATION_SETTINGS:
                continue
            out.append((setting, variant))
    return out


def run_one(out: Path, data: str, root: str, setting: str, variant: str, seed: int, extra: list[str]) -> None:
    run_dir = out / data / setting / variant / f"s{seed}"
    if (run_dir / "results.json").is_file():
        return
    cmd = [sys.executable, "-m", "cdrbench", "method=bignas", f"data={data}", f"data.root={root}",
           f"method.variant={variant}", f"seed={seed}", *SETTINGS[setting], *extra,
           "trainer.progress=false", f"hydra.run.dir={run_dir}"]
    print(f"[{time.strftime('%H:%M:%S')}] {data} {setting} {variant} seed {seed}", flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print(f"    done in {time.perf_counter() - started:.0f} s", flush=True)


def collect(out: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(out.glob("*/*/*/s*/results.json")):
        run_dir = path.parent
        data, setting, variant = run_dir.parts[-4:-1]
        r = json.loads(path.read_text())
        history = pd.read_csv(run_dir / "history.csv")
        best = r["best_epoch"]
        upto = history[history["epoch"] <= best]
        row = {
            "data": data, "setting": setting, "variant": variant, "seed": r["seed"],
            "valid_auc": r["valid"]["auc"], "test_auc": r["test"]["auc"], "test_logloss": r["test"]["logloss"],
            "best_epoch": best, "epochs": r["epochs_run"], "s_per_epoch": r["seconds"]["per_epoch"],
            "outer_steps_to_best": float(upto["outer_steps"].sum()) if "outer_steps" in upto else 0.0,
            "gamma_S_at_best": float(upto["gamma_S"].iloc[-1]) if "gamma_S" in upto else float("nan"),
            "weight_spread": float("nan"),
        }
        importance = run_dir / "importance.parquet"
        if importance.is_file():
            row["weight_spread"] = float(pd.read_parquet(importance)["relative_weight"].std())
        rows.append(row)
    return pd.DataFrame(rows)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    def pm(series: pd.Series) -> str:
        return f"{series.mean():.4f} ± {series.std(ddof=1):.4f}" if len(series) > 1 else f"{series.mean():.4f}"

    grouped = frame.groupby(["data", "setting", "variant"])
    return pd.DataFrame({
        "n": grouped["seed"].count(),
        "valid AUC": grouped["valid_auc"].agg(pm),
        "test AUC": grouped["test_auc"].agg(pm),
        "test LogLoss": grouped["test_logloss"].agg(pm),
        "best epoch": grouped["best_epoch"].mean().map("{:.1f}".format),
        "epochs": grouped["epochs"].mean().map("{:.1f}".format),
        "outer steps to best": grouped["outer_steps_to_best"].mean().map("{:.0f}".format),
        "gamma_S": grouped["gamma_S_at_best"].mean().map("{:.3f}".format),
        "weight spread": grouped["weight_spread"].mean().map("{:.3f}".format),
        "s/epoch": grouped["s_per_epoch"].mean().map("{:.2f}".format),
    })


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["ml100k-comedy-drama"])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--variants", nargs="+", default=["full", "no_impo", "no_source"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="outputs/bignas-study")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    parser.add_argument("--aggregate-only", action="store_true")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    print(f"torch threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    if not args.aggregate_only:
        for data in args.data:
            for setting, variant in plan(args.settings, args.variants):
                for seed in args.seeds:
                    run_one(out, data, args.root, setting, variant, seed, args.extra)
    frame = collect(out)
    if frame.empty:
        print("no finished runs")
        return 1
    frame.to_csv(out / "runs.csv", index=False)
    table = summary(frame)
    (out / "summary.txt").write_text(table.to_string())
    print(table.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
