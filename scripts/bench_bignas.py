#!/usr/bin/env python
"""BiGNAS training speed and memory: seconds per epoch on real data and scaling with graph size.

1. On a real task (default MovieLens Comedy -> Drama under the BiGNAS protocol): full epochs of
   ``method=bignas`` (paper profile, bi-level steps on from the first epoch so that every epoch
   carries its outer steps), seconds per epoch and peak RSS.
2. On synthetic two-domain graphs of growing size (default 4 sizes spanning > 100x in edges):
   seconds per inner iteration (averaged over ``--iterations`` iterations, with the outer steps
   they contain at the default rate of one per 20 iterations), extrapolated to seconds per
   epoch, and the slope of log(seconds per iteration) against log(edges).

Every measurement runs in a fresh process (peak RSS is per measurement).

    python scripts/bench_bignas.py --root ../shared/data
    python scripts/bench_bignas.py --skip-real --users 150 600 2400 16000 64000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import in_child as _in_child
from bench_common import peak_rss_mib as _peak_mib


def _setup(overrides: list[str], device: str):
    import torch

    from cdrbench.app import build_method, build_readers, data_config
    from cdrbench.config import compose
    from cdrbench.data.prepare import prepare

    cfg = compose(["method=bignas", *overrides])
    data_cfg = data_config(cfg)
    data = prepare(data_cfg, build_readers(data_cfg), progress=False, log=lambda _: None)
    _, method = build_method(cfg)
    torch.manual_seed(0)
    method.setup(data, torch.device(device), seed=0)
    return data, method


def _real(overrides: list[str], epochs: int, device: str, queue) -> None:
    import torch

    from cdrbench.methods.base import Phase

    data, method = _setup(overrides, device)
    times, stats = [], []
    for epoch in range(epochs + 1):  # epoch 0 warms up allocators
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        stats.append(method.train_epoch(Phase("train"), epoch, lambda it, **_: it))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    edges = sum(len(data.train(d)) for d in data.domains)
    queue.put({"edges": edges, "epoch_seconds": times[1:], "iterations": stats[-1]["iterations"],
               "threads": torch.get_num_threads(),
               "outer_steps": sum(s["outer_steps"] for s in stats[1:]), "peak_rss_mib": _peak_mib(),
               "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None})


def _synthetic(users: int, iterations: int, device: str, queue) -> None:
    import torch

    from cdrbench.methods.base import Phase

    with tempfile.TemporaryDirectory() as root:
        overrides = [
            "data=synthetic", f"data.root={root}",
            *(f"data.domains.{d}.reader.num_users={users}" for d in ("src", "tgt")),
            f"data.domains.src.reader.num_items={max(50, users // 2)}",
            f"data.domains.tgt.reader.num_items={max(50, users // 3)}",
            "data.domains.src.reader.interactions_per_user=20", "data.domains.tgt.reader.interactions_per_user=20",
            "method.bilevel.warmup_epochs=0",
        ]
        data, method = _setup(overrides, device)
    # time a fixed number of inner iterations, across epoch boundaries when an epoch is shorter,
    # with outer steps at the configured rate (every outer_every global iterations)
    per_epoch = len(method._epoch_batches())
    budget = {"left": 0}

    def limited(iterable, **_):
        for item in iterable:
            if budget["left"] <= 0:
                return
            budget["left"] -= 1
            yield item

    def run(n: int, first_epoch: int) -> tuple[float, int, float]:
        done, epoch, outer, seconds = 0, first_epoch, 0.0, 0.0
        while done < n:
            budget["left"] = n - done
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            stats = method.train_epoch(Phase("train"), epoch, lambda it, **_: limited(it))
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds += time.perf_counter() - started
            done += (n - done) - budget["left"]
            outer += stats["outer_steps"]
            epoch += 1
        return seconds, done, outer

    run(5, 0)  # warm-up (allocators, first-call overheads)
    seconds, done, outer = run(iterations, 100)
    edges = sum(len(data.train(d)) for d in data.domains)
    queue.put({"users": users, "edges": edges, "seconds_per_iteration": seconds / done,
               "iterations_per_epoch": per_epoch, "outer_steps": outer,
               "outer_every": method.opt_bilevel.outer_every, "peak_rss_mib": _peak_mib(),
               "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="ml100k-comedy-drama")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--users", type=int, nargs="+", default=[150, 600, 2400, 16000])
    parser.add_argument("--iterations", type=int, default=40, help="timed inner iterations per size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the measuring processes (default 1)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the spawned measuring processes start with it
    report = {}
    if not args.skip_real:
        with tempfile.TemporaryDirectory() as cache:
            overrides = [f"data={args.data}", f"data.root={args.root}", f"data.cache_dir={cache}",
                         f"method.profile={args.profile}", "method.bilevel.warmup_epochs=0"]
            real = _in_child(_real, overrides, args.epochs, args.device)
        report["real"] = real
        t = np.array(real["epoch_seconds"])
        print(f"torch threads: {real['threads']}")
        print(f"{args.data} ({args.profile} profile, {real['edges']} training rows, {real['iterations']:.0f} "
              f"iterations/epoch, {real['outer_steps']:.0f} outer steps in {len(t)} epochs): "
              f"{t.mean():.2f} s/epoch (min {t.min():.2f}, max {t.max():.2f}), peak RSS {real['peak_rss_mib']:.0f} MiB"
              + (f", peak GPU {real['peak_gpu_mib']:.0f} MiB" if real["peak_gpu_mib"] else ""))
    rows = [_in_child(_synthetic, users, args.iterations, args.device) for users in args.users]
    print(f"synthetic sizes measured with OMP_NUM_THREADS={args.threads}")
    report["synthetic"] = rows
    print(f"\n{'users':>7}{'train edges':>13}{'s/iter':>9}{'iter/epoch':>11}{'s/epoch (est.)':>16}{'peak RSS MiB':>14}")
    for r in rows:
        print(f"{r['users']:>7}{r['edges']:>13}{r['seconds_per_iteration']:>9.3f}{r['iterations_per_epoch']:>11}"
              f"{r['seconds_per_iteration'] * r['iterations_per_epoch']:>16.1f}{r['peak_rss_mib']:>14.0f}")
    if len(rows) >= 2:
        x = np.log([r["edges"] for r in rows])
        y = np.log([r["seconds_per_iteration"] for r in rows])
        slope = float(np.polyfit(x, y, 1)[0])
        report["slope_log_time_vs_log_edges"] = slope
        span = rows[-1]["edges"] / rows[0]["edges"]
        print(f"slope of log(s/iteration) vs log(edges) over a {span:.0f}x range: {slope:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
