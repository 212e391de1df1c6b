#!/usr/bin/env python
"""The measurements of ``scripts/gpu_check.sh``: the same work on the GPU and on the CPU, one table.

Checks (each in a ``try``, so a failure, e.g. out of memory, marks only its own cell; peak
memory is reset before each cell: CUDA through torch, the CPU's resident-set peak through
``/proc/self/clear_refs``):

* ``bignas``: BiGNAS (paper profile) inner iterations and one outer step (the implicit
  hypergradient) on a seeded synthetic pair of Bo-Mo size (40 k users, 100 k + 150 k items,
  2.4 M + 2.4 M rows: 0.29 M nodes, 4.8 M interactions);
* ``eval``: one full-ranking test evaluation (exact top-K, all metrics) of a Douban-Book-size
  table, 18 k users x 33 k items, with LightGCN scores;
* ``lightgcn``: LightGCN training steps on that data (batch 2048), as seconds per epoch.

The graphs come from :mod:`cdrbench.data.benchmark_graphs` (built once, shared by the cells).
``--dry-run`` runs everything at toy size on the CPU (the suite's test of this script).

    python scripts/gpu_check.py                 # GPU vs CPU (needs CUDA)
    python scripts/gpu_check.py --dry-run       # toy sizes, CPU only, seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

SIZES = {
    # users, {domain: (items, rows)}
    "full": {"bignas": (40_000, {"src": (100_000, 2_400_000), "tgt": (150_000, 2_400_000)}),
             "douban": (18_000, {"tgt": (33_000, 900_000)})},
    "dry": {"bignas": (150, {"src": (200, 1_500), "tgt": (250, 1_500)}),
            "douban": (120, {"tgt": (200, 1_500)})},
}
#: work per cell: (bignas inner iterations, bignas outer steps, lightgcn steps)
WORK = {"cuda": (10, 2, 60), "cpu": (1, 1, 6), "dry": (2, 1, 2)}
#: the outer step is skipped (reported as nan) when its estimate exceeds this, so that a slow
#: CPU cannot push the whole check past its time budget
OUTER_STEP_BUDGET_S = 150.0


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_peak_mib() -> float:
    """Peak resident memory since the last :func:`_reset_peaks` (Linux ``VmHWM``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak (not reset)


def _reset_peaks() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def _peaks(device) -> dict:
    import torch

    peak = {"peak_rss_mib": _rss_peak_mib()}
    if device.type == "cuda":
        peak["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak


def _limited(n: int):
    """A progress hook that lets only ``n`` batches of an epoch through."""
    def hook(iterable, **_):
        for index, item in enumerate(iterable):
            if index >= n:
                return
            yield item
    return hook


def cell_bignas(data_dir: str, device_name: str, work: tuple) -> dict:
    import torch

    from cdrbench.app import build_method
    from cdrbench.config import compose
    from cdrbench.data.dataset import CrossDomainData
    from cdrbench.methods.base import Phase

    device = torch.device(device_name)
    data = CrossDomainData.load(Path(data_dir))
    # outer steps are timed separately (outer_step() below), not inside the inner iterations
    _, method = build_method(compose(["method=bignas", "method.bilevel.outer_every=1000000000"]))
    torch.manual_seed(0)
    started = time.perf_counter()
    method.setup(data, device, seed=0)
    setup_s = time.perf_counter() - started
    inner, outer, _ = work
    method.train_epoch(Phase("train"), 10, _limited(1))  # first call: allocators, kernels
    _sync(device)
    started = time.perf_counter()
    method.train_epoch(Phase("train"), 10, _limited(inner))
    _sync(device)
    inner_s = (time.perf_counter() - started) / inner
    outer_s = float("nan")
    if inner_s * 4 <= OUTER_STEP_BUDGET_S:  # an outer step costs about 3-4 inner iterations
        started = time.perf_counter()
        for _ in range(outer):
            method.outer_step()
        _sync(device)
        outer_s = (time.perf_counter() - started) / outer
    epoch_iterations = len(method._epoch_batches())
    return {"setup_s": setup_s, "s_per_iteration": inner_s, "s_per_outer_step": outer_s,
            "iterations_per_epoch": epoch_iterations, **_peaks(device)}


def _lightgcn(data, device):
    import torch

    from cdrbench.methods.baselines import CollaborativeFiltering
    from cdrbench.models import LightGCNEncoder

    torch.manual_seed(0)
    method = CollaborativeFiltering(
        encoder=lambda **kw: LightGCNEncoder(embedding_dim=64, num_layers=2, **kw),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3), batch_size=2048, reg_weight=1e-5,
    )
    method.setup(data, device, seed=0)
    return method


def cell_eval(data_dir: str, device_name: str, work: tuple) -> dict:
    import torch

    from cdrbench.data.dataset import CrossDomainData
    from cdrbench.eval.evaluator import Evaluator

    device = torch.device(device_name)
    data = CrossDomainData.load(Path(data_dir))
    method = _lightgcn(data, device)
    evaluator = Evaluator(data, tasks=["topn"], ks=[10, 20, 50], device=device)
    times = []
    for _ in range(2):  # the first evaluation warms up
        _sync(device)
        started = time.perf_counter()
        with method.evaluation():
            result = evaluator.evaluate(method, "test")
        _sync(device)
        times.append(time.perf_counter() - started)
    return {"seconds": times[-1], "users": result.metrics.get("topn_users"),
            "items": data.num_items(data.target_domain), **_peaks(device)}


def cell_lightgcn(data_dir: str, device_name: str, work: tuple) -> dict:
    import torch

    from cdrbench.data.dataset import CrossDomainData
    from cdrbench.methods.base import Phase

    device = torch.device(device_name)
    data = CrossDomainData.load(Path(data_dir))
    method = _lightgcn(data, device)
    steps = work[2]
    method.train_epoch(Phase("train"), 0, _limited(1))
    _sync(device)
    started = time.perf_counter()
    method.train_epoch(Phase("train"), 1, _limited(steps))
    _sync(device)
    per_step = (time.perf_counter() - started) / steps
    steps_per_epoch = -(-len(method.train_users) // method.batch_size)
    return {"s_per_step": per_step, "steps_per_epoch": steps_per_epoch, "s_per_epoch": per_step * steps_per_epoch,
            **_peaks(device)}


CELLS = {"bignas": cell_bignas, "eval": cell_eval, "lightgcn": cell_lightgcn}


def run_cell(name: str, data_dir: str, device: str, work: tuple, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    _reset_peaks()
    started = time.perf_counter()
    try:
        result = {"ok": True, "threads": torch.get_num_threads(), **CELLS[name](data_dir, device, work)}
    except Exception as error:  # the table still gets printed; the cell says why it failed
        result = {"ok": False, "error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()}
    result["wall_s"] = time.perf_counter() - started
    return result


def headline(name: str, r: dict) -> tuple[str, float]:
    """The figure each cell is compared on: (what it is, seconds)."""
    if name == "bignas":
        return "s per inner iteration", r["s_per_iteration"]
    if name == "eval":
        return "s per full test evaluation", r["seconds"]
    return "s per epoch (from steps)", r["s_per_epoch"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU only (seconds)")
    parser.add_argument("--device", default="cuda", help="the accelerator to check (default cuda)")
    parser.add_argument("--cpu-threads", type=int, default=0, help="torch threads for the CPU cells; 0 = torch's default")
    parser.add_argument("--checks", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()

    import torch

    size = SIZES["dry" if args.dry_run else "full"]
    if args.dry_run:
        devices = [("cpu", WORK["dry"])]
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); "
                  "use --dry-run to test the script on a CPU", file=sys.stderr)
            return 2
        devices = [(args.device, WORK["cuda"]), ("cpu", WORK["cpu"])]
    default_threads = torch.get_num_threads()
    print(f"torch {torch.__version__}; "
          + (f"device {torch.cuda.get_device_name(0)}; " if torch.cuda.is_available() else "no CUDA; ")
          + f"CPU cells with {args.cpu_threads or torch.get_num_threads()} torch threads", flush=True)

    from cdrbench.data.benchmark_graphs import clustered_cross_domain

    report: dict = {"dry_run": args.dry_run, "cells": {}}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {}
        for key, (users, domains) in size.items():
            started = time.perf_counter()
            data = clustered_cross_domain(users, domains, target="tgt", seed=0, name=f"gpu-check-{key}")
            dirs[key] = Path(tmp) / key
            dirs[key].mkdir()
            data.save(dirs[key])
            print(f"built {key} graph: {users} users, "
                  + ", ".join(f"{d} {n:,} items / {len(data.interactions[d]):,} rows" for d, (n, _) in domains.items())
                  + f" ({time.perf_counter() - started:.0f} s)", flush=True)
        for name in args.checks:
            data_dir = str(dirs["bignas" if name == "bignas" else "douban"])
            for device, work in devices:
                threads = (args.cpu_threads or default_threads) if device == "cpu" else default_threads
                print(f"running {name} on {device} ...", flush=True)
                result = run_cell(name, data_dir, device, work, threads)
                report["cells"][f"{name}/{device}"] = result
                if not result["ok"]:
                    print(f"  FAILED: {result['error']}", flush=True)
                    if "trace" in result:
                        print(result["trace"], flush=True)

    rows = []
    for name in args.checks:
        fast = report["cells"].get(f"{name}/{devices[0][0]}", {})
        slow = report["cells"].get(f"{name}/cpu", {}) if not args.dry_run else {}
        what = headline(name, fast)[0] if fast.get("ok") else ""
        dev_s = headline(name, fast)[1] if fast.get("ok") else float("nan")
        cpu_s = headline(name, slow)[1] if slow.get("ok") else float("nan")
        rows.append({
            "check": name, "figure": what, f"{devices[0][0]} s": dev_s,
            **({"cpu s": cpu_s, "cpu / device": cpu_s / dev_s if dev_s == dev_s and dev_s > 0 else float("nan")}
               if not args.dry_run else {}),
            "peak CUDA MiB": fast.get("peak_cuda_mib", float("nan")),
            "peak RSS MiB": max(fast.get("peak_rss_mib", 0.0), slow.get("peak_rss_mib", 0.0)) or float("nan"),
            "status": "ok" if fast.get("ok") and (args.dry_run or slow.get("ok")) else "FAILED",
        })
        if name == "bignas" and fast.get("ok"):
            rows[-1]["figure"] += f" (outer step {fast['s_per_outer_step']:.3g} s on {devices[0][0]}" + (
                f", {slow['s_per_outer_step']:.3g} s on cpu)" if slow.get("ok") else ")")
    import pandas as pd

    table = pd.DataFrame(rows)
    print("\n" + table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
