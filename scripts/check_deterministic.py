#!/usr/bin/env python
"""Does ``torch.use_deterministic_algorithms`` change results on CPU for cdrbench's kernels, and
what does it cost?

For each method (BPR-MF and LightGCN on ML-100K, BiGNAS on ML-100K Comedy -> Drama with outer
steps from the first epoch) and each thread count, the same seeded training runs ``--epochs``
epochs four times: deterministic algorithms on, off, on, off. Reported: whether the final
parameters (every tensor of the method's state) and the epoch losses are bit-identical between
the runs, and seconds per epoch of each. All runs of one row happen in one process, one after
the other, so their timings share the machine's load.

    python scripts/check_deterministic.py --root ../shared/data --threads 1 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

CASES = {
    "bprmf": ["method=bprmf", "data=ml100k"],
    "lightgcn": ["method=lightgcn", "data=ml100k"],
    "bignas": ["method=bignas", "data=ml100k-comedy-drama", "method.bilevel.warmup_epochs=0"],
}


def tensors(state, prefix=""):
    """Flatten a nested state dict to {path: tensor} (floating tensors only)."""
    out = {}
    if isinstance(state, torch.Tensor):
        if state.is_floating_point():
            out[prefix] = state.detach().clone()
    elif isinstance(state, dict):
        for key, value in state.items():
            out.update(tensors(value, f"{prefix}/{key}"))
    elif isinstance(state, (list, tuple)):
        for index, value in enumerate(state):
            out.update(tensors(value, f"{prefix}/{index}"))
    return out


def train(overrides: list[str], root: str, cache: str, epochs: int, deterministic: bool):
    from cdrbench.app import build_method, data_view, load_data
    from cdrbench.config import compose
    from cdrbench.methods.base import Phase
    from cdrbench.train.runtime import seed_everything

    cfg = compose([*overrides, f"data.root={root}", f"data.cache_dir={cache}"])
    data, data_cfg = load_data(cfg, progress=False)
    seed_everything(0, deterministic=False)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)  # set here, whatever the thread count
    name, method = build_method(cfg)
    method.setup(data_view(data, data_cfg.use_source, method, name), torch.device("cpu"), 0)
    losses, seconds = [], []
    for epoch in range(epochs):
        started = time.perf_counter()
        stats = method.train_epoch(Phase("train"), epoch, lambda it, **_: it)
        seconds.append(time.perf_counter() - started)
        losses.append(stats["loss"])
    torch.use_deterministic_algorithms(False)
    return tensors(method.state_dict()), losses, seconds


def identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a if a[k].numel())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--methods", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name in args.methods:
                on, off, on2, off2 = (train(CASES[name], args.root, cache, args.epochs, det)
                                      for det in (True, False, True, False))
                rows.append({
                    "method": name, "threads": torch.get_num_threads(),
                    "on == on": identical(on[0], on2[0]) and on[1] == on2[1],
                    "off == off": identical(off[0], off2[0]) and off[1] == off2[1],
                    "on == off": identical(on[0], off[0]) and on[1] == off[1],
                    "max |on - off|": max_difference(on[0], off[0]),
                    "s/epoch on": min(on[2] + on2[2]), "s/epoch off": min(off[2] + off2[2]),
                })
                r = rows[-1]
                print(f"{name:>9} threads {r['threads']}: bit-identical on/on {r['on == on']}, off/off {r['off == off']}, "
                      f"on/off {r['on == off']} (max |diff| {r['max |on - off|']:.2e}); s/epoch "
                      f"{r['s/epoch on']:.2f} on vs {r['s/epoch off']:.2f} off", flush=True)
    import pandas as pd

    print(f"\n{args.epochs} epochs per run, fastest epoch of the two runs shown; torch threads as listed")
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
