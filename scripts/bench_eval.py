#!/usr/bin/env python
"""Full-ranking evaluation throughput (users per second) on a prepared data set.

Scores come from a LightGCN encoder (untrained weights: ranking cost does not depend on how good
the scores are); the timed part is one complete test evaluation through
:class:`cdrbench.eval.evaluator.Evaluator` — propagation, scoring, masking, exact top-K with
the tie rule, all metrics — repeated ``--repeat`` times (median reported).

    python scripts/bench_eval.py --data douban-book --root ../shared/data
    python scripts/bench_eval.py --data douban-book --device cuda --chunk-size 512
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="douban-book")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunk-size", type=int, default=None, help="users per chunk (default: fit 1 GiB)")
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as trainer.num_threads)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from cdrbench.app import build_readers, data_config
    from cdrbench.config import compose
    from cdrbench.data.prepare import prepare
    from cdrbench.eval.evaluator import Evaluator
    from cdrbench.methods.baselines import CollaborativeFiltering
    from cdrbench.models import LightGCNEncoder

    with tempfile.TemporaryDirectory() as cache:
        cfg = compose([f"data={args.data}", f"data.root={args.root}", f"data.cache_dir={cache}", "data.download=false"])
        data_cfg = data_config(cfg)
        data = prepare(data_cfg, build_readers(data_cfg), progress=False, log=lambda _: None).target_only()
    device = torch.device(args.device)
    torch.manual_seed(0)
    method = CollaborativeFiltering(
        encoder=lambda **kw: LightGCNEncoder(embedding_dim=64, num_layers=2, **kw),
        optimizer=lambda params: torch.optim.Adam(params),
    )
    method.setup(data, device, seed=0)
    evaluator = Evaluator(data, tasks=["topn"], ks=args.ks, chunk_size=args.chunk_size, device=device)
    times = []
    for _ in range(args.repeat + 1):  # the first run warms up allocators and kernels
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        with method.evaluation():
            result = evaluator.evaluate(method, "test")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times[1:])
    users = result.metrics["topn_users"]
    print(f"data {data.name}: {users} test users x {data.num_items(data.target_domain)} items, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"one full test evaluation: {seconds:.3f} s (median of {args.repeat}) -> {users / seconds:,.0f} users/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
