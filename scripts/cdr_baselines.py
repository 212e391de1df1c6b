"""The cross-domain baselines against LightGCN on Douban music -> book, under HAGO's and PCRec's
protocols, several seeds: runs what is missing (one run at a time, each its own process) and
prints the tables (test metrics, mean ± sample std over seeds).

    python scripts/cdr_baselines.py --root ../shared/data --seeds 0 1 2 --cap bitgcf=100
    python scripts/cdr_baselines.py --table-only          # just collect what has finished

HAGO protocol: ``data=douban-dtcdr-hago`` (rating >= 3, 5-core, 80/10/10), @10 metrics, selection
on valid NDCG@10. PCRec protocol: ``data=douban-dtcdr-pcrec`` (all ratings, 10/5-core, 20 % test
then 10 % valid), @20/@40 metrics, selection on valid Recall@20. Every method runs with its own
``conf/method/<name>.yaml`` defaults (paper profile) and the same trainer budget.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

PROTOCOLS = {
    "hago": {"overrides": ["data=douban-dtcdr-hago", "eval.ks=[10]"],
             "metrics": ["recall@10", "hr@10", "ndcg@10", "mrr@10"]},
    "pcrec": {"overrides": ["data=douban-dtcdr-pcrec", "eval.ks=[20,40]", "trainer.monitor=recall@20"],
              "metrics": ["recall@20", "recall@40", "map@20", "map@40"]},
}
METHODS = ["lightgcn", "cmf", "emcdr", "conet", "bitgcf", "xsimgcl"]


def run_dir(out: Path, protocol: str, method: str, seed: int) -> Path:
    return out / protocol / f"{method}_s{seed}"


def run_missing(args) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    caps = dict(cap.split("=") for cap in args.cap)
    for seed in args.seeds:
        for protocol in args.protocols:
            for method in args.methods:
                directory = run_dir(args.out, protocol, method, seed)
                if (directory / "results.json").is_file():
                    continue
                max_epochs = int(caps.get(method, args.max_epochs))
                command = [sys.executable, "-m", "cdrbench", f"method={method}", *PROTOCOLS[protocol]["overrides"],
                           f"data.root={args.root}", f"seed={seed}", f"trainer.max_epochs={max_epochs}",
                           "trainer.progress=false", f"output_root={args.out}", f"hydra.run.dir={directory}"]
                print(f"[{protocol}] {method} seed {seed}: {' '.join(command[2:])}", flush=True)
                directory.mkdir(parents=True, exist_ok=True)
                with open(directory / "stdout.log", "w") as log:
                    code = subprocess.call(command, env=env, stdout=log, stderr=subprocess.STDOUT)
                if code != 0:
                    print(f"  failed with exit code {code}; see {directory / 'stdout.log'}", flush=True)


def table(out: Path, protocol: str, methods: list[str]) -> pd.DataFrame:
    metrics = PROTOCOLS[protocol]["metrics"]
    rows = []
    for method in methods:
        results = [json.loads(p.read_text()) for p in sorted((out / protocol).glob(f"{method}_s*/results.json"))]
        if not results:
            continue
        frame = pd.DataFrame([{**{m: r["test"][m] for m in metrics}, "s/epoch": r["seconds"]["per_epoch"],
                               "epochs": r["epochs_run"], "peak RSS GiB": r["memory"]["peak_rss_bytes"] / 2**30}
                              for r in results])
        row = {"method": method, "seeds": len(results)}
        for metric in metrics:
            std = frame[metric].std(ddof=1) if len(frame) > 1 else float("nan")
            row[metric] = f"{frame[metric].mean():.4f} ± {std:.4f}"
        row["s/epoch"] = f"{frame['s/epoch'].mean():.2f}"
        row["epochs"] = f"{frame['epochs'].mean():.0f}"
        row["peak RSS GiB"] = f"{frame['peak RSS GiB'].max():.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data", help="data.root (raw files)")
    parser.add_argument("--out", type=Path, default=Path("outputs/cdr-baselines"), help="run directories")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--max-epochs", type=int, default=100, help="trainer.max_epochs (per phase for EMCDR)")
    parser.add_argument("--cap", nargs="*", default=[], metavar="METHOD=EPOCHS",
                        help="a smaller trainer.max_epochs for some methods (CPU time)")
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL threads of each run")
    parser.add_argument("--table-only", action="store_true", help="collect finished runs, run nothing")
    args = parser.parse_args()
    if not args.table_only:
        run_missing(args)
    for protocol in args.protocols:
        frame = table(args.out, protocol, args.methods)
        print(f"\n{protocol} protocol (test, mean ± std over seeds; {args.out / protocol})")
        print(markdown(frame) if len(frame) else "no finished runs")


if __name__ == "__main__":
    main()
