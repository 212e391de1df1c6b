#!/usr/bin/env python
"""trainer.num_threads: seconds per epoch with 1 and 2 torch threads, with and without another
busy process, measured in one run so the conditions share the machine's background load.

Conditions: {no extra load, a python busy loop (one core's worth)} x {1, 2 threads}, visited in
rounds (every condition once per round), each a fresh process running ``--epochs`` epochs of
each workload: BPR-MF and LightGCN on ML-100K, BiGNAS (outer steps from the first epoch) on
ML-100K Comedy -> Drama. Reported: the median seconds per epoch of each condition and the
ratio 2 threads / 1 thread under each load.

    python scripts/bench_threads.py --root ../shared/data --rounds 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKLOADS = {
    "bprmf": ["method=bprmf", "data=ml100k"],
    "lightgcn": ["method=lightgcn", "data=ml100k"],
    "bignas": ["method=bignas", "data=ml100k-comedy-drama", "method.bilevel.warmup_epochs=0"],
}


def _measure(threads: int, names: list[str], root: str, cache: str, epochs: int, queue) -> None:
    import torch

    from cdrbench.app import build_method, data_view, load_data
    from cdrbench.config import compose
    from cdrbench.methods.base import Phase

    torch.set_num_threads(threads)
    out = {}
    for name in names:
        cfg = compose([*WORKLOADS[name], f"data.root={root}", f"data.cache_dir={cache}"])
        data, data_cfg = load_data(cfg, progress=False)
        method_name, method = build_method(cfg)
        torch.manual_seed(0)
        method.setup(data_view(data, data_cfg.use_source, method, method_name), torch.device("cpu"), 0)
        method.train_epoch(Phase("train"), 0, lambda it, **_: it)  # warm-up epoch
        times = []
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            method.train_epoch(Phase("train"), epoch, lambda it, **_: it)
            times.append(time.perf_counter() - started)
        out[name] = times
    queue.put(out)


def run_condition(threads: int, busy: bool, names, root, cache, epochs) -> dict:
    loader = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(threads, names, root, cache, epochs, queue))
        proc.start()
        result = queue.get()
        proc.join()
        return result
    finally:
        if loader is not None:
            loader.kill()
            loader.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import pandas as pd

    conditions = [(busy, threads) for busy in (False, True) for threads in args.threads]
    times = {c: {n: [] for n in args.workloads} for c in conditions}
    with tempfile.TemporaryDirectory() as cache:
        for round_ in range(args.rounds):
            for busy, threads in conditions:
                print(f"round {round_ + 1}: {threads} thread(s), {'with' if busy else 'without'} a busy process", flush=True)
                for name, values in run_condition(threads, busy, args.workloads, args.root, cache, args.epochs).items():
                    times[(busy, threads)][name].extend(values)
    rows = []
    for name in args.workloads:
        for busy in (False, True):
            row = {"workload": name, "extra load": "busy loop" if busy else "none"}
            for threads in args.threads:
                row[f"{threads} thr s/epoch"] = statistics.median(times[(busy, threads)][name])
            if len(args.threads) == 2:
                a, b = args.threads
                row[f"{b} thr / {a} thr"] = row[f"{b} thr s/epoch"] / row[f"{a} thr s/epoch"]
            rows.append(row)
    print(f"\nmedian seconds per epoch over {args.rounds} rounds x {args.epochs} epochs; the machine's own "
          "background load (other users) is present in every condition")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
