#!/usr/bin/env python
"""Peak memory of one full-ranking evaluation, by chunk rule (``eval.max_chunk_bytes`` budget).

The case of the new-user trial: Pop on a 15.8 k users x 48.8 k items target (every row full of
tied scores, the costliest ranking path) and dot-product (MF-like) scores on the same size. Each
measurement runs in a fresh subprocess; the figure is the growth of peak RSS over the process
before the evaluation (scores, masks, ranking). Rules compared in the same run:

* ``budget``: cdrbench's default, C = budget / (BYTES_PER_CELL * I) users per chunk;
* ``scores-only``: the former rule, C = budget / (4 * I), which counted only the score matrix.

    python scripts/bench_eval_memory.py                 # 15,800 x 48,800, budget 1 GiB
    python scripts/bench_eval_memory.py --users 2000 --items 5000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from cdrbench.eval.topn import UserItemSets, evaluate_topn
U, I = args["users"], args["items"]
g = torch.Generator().manual_seed(0)
if args["scores"] == "pop":
    counts = torch.randint(0, 50, (I,), generator=g).float()
    score = lambda users: counts.unsqueeze(0).expand(len(users), -1)
else:
    emb_u, emb_i = torch.randn(U, 64, generator=g), torch.randn(I, 64, generator=g)
    score = lambda users: emb_u[users] @ emb_i.T
users = torch.arange(U).repeat_interleave(3)
positives = UserItemSets.from_pairs(users, torch.randint(0, I, (3 * U,), generator=g), U)
history = UserItemSets.from_pairs(torch.arange(U).repeat_interleave(20), torch.randint(0, I, (20 * U,), generator=g), U)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
started = time.perf_counter()
result = evaluate_topn(score, None, positives, history, I, [10, 20, 50], chunk_size=args["chunk"])
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"eval_bytes": peak - before, "seconds": seconds, "ndcg@20": result.means["ndcg@20"]}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=15_800)
    parser.add_argument("--items", type=int, default=48_800)
    parser.add_argument("--budget", type=int, default=1 << 30, help="eval.max_chunk_bytes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the measured process")
    args = parser.parse_args()
    from cdrbench.eval.topn import BYTES_PER_CELL, derive_chunk_size

    rules = {"budget": derive_chunk_size(args.items, args.budget), "scores-only": max(1, args.budget // (4 * args.items))}
    print(f"{args.users} users x {args.items} items, budget {args.budget / 2**30:.2f} GiB, "
          f"BYTES_PER_CELL {BYTES_PER_CELL}, torch threads {args.threads}")
    print(f"{'scores':<6} {'rule':<12} {'chunk':>6} {'peak eval MiB':>14} {'seconds':>8} {'ndcg@20':>9}")
    for scores in ("pop", "mf"):
        for rule, chunk in rules.items():
            payload = json.dumps({"users": args.users, "items": args.items, "scores": scores, "chunk": chunk,
                                  "threads": args.threads})
            out = subprocess.run([sys.executable, "-c", CHILD, payload], capture_output=True, text=True, check=True)
            m = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{scores:<6} {rule:<12} {chunk:>6} {m['eval_bytes'] / 2**20:>14.0f} {m['seconds']:>8.2f} {m['ndcg@20']:>9.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
