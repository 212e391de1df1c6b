#!/usr/bin/env python
"""Training cost against data size: seconds per epoch of BPR-MF (dense and sparse gradients),
LightGCN and BiGNAS on synthetic graphs over a 100x range of sizes, the log-log slopes, and the
same methods on the real shared data.

Sizes are fractions of the issue's reference pair: 15,800 users, 100,000 items (115,800
embedding rows) and 298,000 training rows at scale 1 (:mod:`cdrbench.data.benchmark_graphs`;
for BiGNAS the items and training rows are split evenly into a source and a target domain).
Each method is built from the same config a user runs (``method=bprmf`` with ``optimizer=adam``
or ``optimizer=sparse_adam backbone.sparse=true``, ``method=lightgcn``, ``method=bignas`` with
outer steps from the first epoch, at their default rate). An epoch that would take more than
``--max-steps`` steps is timed on that many steps and extrapolated (marked ``est.``). The
dense and sparse BPR-MF of a size are timed one after the other, so their ratio shares the
machine's load.

    python scripts/bench_scaling.py --threads 1
    python scripts/bench_scaling.py --threads 2 --methods mf-dense mf-sparse --scales 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REFERENCE = {"users": 15_800, "items": 100_000, "train_rows": 298_000}
METHODS = {
    "mf-dense": ["method=bprmf", "optimizer=adam"],
    "mf-sparse": ["method=bprmf", "optimizer=sparse_adam", "backbone.sparse=true"],
    "lightgcn": ["method=lightgcn"],
    "bignas": ["method=bignas", "method.bilevel.warmup_epochs=0"],
}
REAL = {"mf-dense": ["ml100k", "douban-book"], "mf-sparse": ["ml100k", "douban-book"],
        "lightgcn": ["ml100k", "douban-book"], "bignas": ["ml100k-comedy-drama", "douban-dtcdr"]}


def synthetic(method: str, scale: float):
    from cdrbench.data.benchmark_graphs import clustered_cross_domain

    users = max(20, round(REFERENCE["users"] * scale))
    items = max(40, round(REFERENCE["items"] * scale))
    train = max(200, round(REFERENCE["train_rows"] * scale))
    if method == "bignas":  # half the items and training rows in each domain; the target is split 80/10/10
        domains = {"src": (items // 2, train // 2), "tgt": (items - items // 2, round(train / 2 / 0.8))}
    else:
        domains = {"tgt": (items, round(train / 0.8))}
    return clustered_cross_domain(users, domains, target="tgt", seed=0, name=f"scale-{scale:g}")


def build(method: str, data, extra: list[str]):
    import torch

    from cdrbench.app import build_method, data_view
    from cdrbench.config import compose

    cfg = compose([*METHODS[method], *extra])
    name, built = build_method(cfg)
    torch.manual_seed(0)
    view = data_view(data, None, built, name)
    built.setup(view, torch.device("cpu"), seed=0)
    return built, view


def steps_per_epoch(method: str, built) -> int:
    if method == "bignas":
        return len(built._epoch_batches())
    return -(-len(built.train_users) // built.batch_size)


def time_epoch(method: str, built, max_steps: int) -> dict:
    """Seconds per epoch: a full epoch when it has at most ``max_steps`` steps, else
    ``max_steps`` steps (after one warm-up step) extrapolated."""
    from cdrbench.methods.base import Phase

    total = steps_per_epoch(method, built)
    budget = {"left": 0}

    def limited(iterable, **_):
        for item in iterable:
            if budget["left"] <= 0:
                return
            budget["left"] -= 1
            yield item

    budget["left"] = 1
    built.train_epoch(Phase("train"), 0, limited)  # allocators, first-call overheads
    steps = min(total, max_steps)
    budget["left"] = steps
    started = time.perf_counter()
    built.train_epoch(Phase("train"), 1, limited)
    seconds = time.perf_counter() - started
    return {"steps_per_epoch": total, "timed_steps": steps, "s_per_step": seconds / steps,
            "s_per_epoch": seconds / steps * total, "estimated": steps < total}


def slope(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as trainer.num_threads)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--scales", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3, 1.0])
    parser.add_argument("--max-steps", type=int, default=150, help="timed steps per epoch at most (MF)")
    parser.add_argument("--max-steps-graph", type=int, default=20, help="the same for LightGCN and BiGNAS")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()

    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s); timings share the machine "
          "with whatever else runs (same-size rows are timed back to back)", flush=True)
    rows = []
    for scale in args.scales:
        for method in args.methods:
            data = synthetic(method, scale)
            built, view = build(method, data, [])
            nodes = view.num_users + sum(view.num_items(d) for d in view.domains)
            train = sum(len(view.train(d)) for d in view.domains)
            limit = args.max_steps if method.startswith("mf") else args.max_steps_graph
            r = {"data": f"synthetic x{scale:g}", "method": method, "nodes": nodes, "train_rows": train,
                 **time_epoch(method, built, limit)}
            rows.append(r)
            print(f"{r['data']:>16} {method:>9}: {nodes:>7} nodes {train:>7} train rows  {r['s_per_step'] * 1000:8.1f} ms/step  "
                  f"{r['s_per_epoch']:8.2f} s/epoch{' (est.)' if r['estimated'] else ''}", flush=True)
            del built, view, data
    if not args.skip_real:
        from cdrbench.app import load_data
        from cdrbench.config import compose

        with tempfile.TemporaryDirectory() as cache:
            for method in args.methods:
                for name in REAL[method]:
                    cfg = compose([f"data={name}", f"data.root={args.root}", f"data.cache_dir={cache}"])
                    data, _ = load_data(cfg, progress=False)
                    built, view = build(method, data, [])
                    r = {"data": name, "method": method,
                         "nodes": view.num_users + sum(view.num_items(d) for d in view.domains),
                         "train_rows": sum(len(view.train(d)) for d in view.domains),
                         **time_epoch(method, built, 10**9)}
                    rows.append(r)
                    print(f"{name:>16} {method:>9}: {r['nodes']:>7} nodes {r['train_rows']:>7} train rows  "
                          f"{r['s_per_step'] * 1000:8.1f} ms/step  {r['s_per_epoch']:8.2f} s/epoch", flush=True)
    frame = pd.DataFrame(rows)
    synth = frame[frame["data"].str.startswith("synthetic")]
    print(f"\nlog-log slopes against training rows over synthetic x{min(args.scales):g} .. x{max(args.scales):g} "
          f"({max(args.scales) / min(args.scales):.0f}x), {torch.get_num_threads()} thread(s):")
    slopes = {}
    for method, group in synth.groupby("method", sort=False):
        if len(group) >= 2:
            slopes[method] = {"s_per_epoch": slope(group["train_rows"], group["s_per_epoch"]),
                              "s_per_step": slope(group["train_rows"], group["s_per_step"])}
            print(f"  {method:>9}: seconds per epoch ~ rows^{slopes[method]['s_per_epoch']:.2f}, "
                  f"per step ~ rows^{slopes[method]['s_per_step']:.2f}")
    both = synth.pivot_table(index="data", columns="method", values="s_per_epoch")
    if {"mf-dense", "mf-sparse"} <= set(both.columns):
        print("\nBPR-MF seconds per epoch, dense Adam vs sparse gradients + LazyAdam (same-run ratio):")
        for data_name, row in both.iterrows():
            print(f"  {data_name:>16}: dense {row['mf-dense']:8.2f}  sparse {row['mf-sparse']:6.2f}  "
                  f"ratio {row['mf-dense'] / row['mf-sparse']:6.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows, "slopes": slopes}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
