#!/usr/bin/env python
"""Seconds and peak memory to prepare data sets from their raw files (no cache reuse).

Each data set is prepared in a fresh child process with an empty cache directory, so the figures
include reading, filtering, splitting and writing the cache. Peak memory is the child's peak
resident set size; ``import RSS`` is its size after importing cdrbench (torch, pandas, ...), so
``peak - import`` is what preparation itself needed.

    python scripts/bench_prepare.py --root ../shared/data
    python scripts/bench_prepare.py --root ~/.cache/cdrbench --data bo-mo cd-ki
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

SHARED_SETS = ["ml100k-comedy-drama", "douban-dtcdr", "bignas-cd-kitchen", "ml100k", "douban-book"]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(name: str, root: str, queue) -> None:
    from cdrbench.app import build_readers, data_config
    from cdrbench.config import compose
    from cdrbench.data.prepare import prepare

    import_rss = _rss_mib()
    with tempfile.TemporaryDirectory() as cache:
        cfg = compose([f"data={name}", f"data.root={root}", f"data.cache_dir={cache}", "data.download=false"])
        data_cfg = data_config(cfg)
        started = time.perf_counter()
        data = prepare(data_cfg, build_readers(data_cfg), progress=False, log=lambda _: None)
        seconds = time.perf_counter() - started
        rows = sum(len(data.interactions[d]) for d in data.domains)
    queue.put({"data": name, "seconds": seconds, "rows": rows, "users": data.num_users,
               "import_rss_mib": import_rss, "peak_rss_mib": _rss_mib()})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--data", nargs="+", default=SHARED_SETS)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--threads", type=int, default=1, help="OMP/torch threads of the preparing processes (default 1)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the spawned preparing processes start with it
    print(f"preparing with OMP_NUM_THREADS={args.threads} (pandas/numpy work is mostly single-threaded)")
    ctx = mp.get_context("spawn")
    rows = []
    for name in args.data:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(name, args.root, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            print(f"{name}: failed (exit code {proc.exitcode})", file=sys.stderr)
            continue
        rows.append(queue.get())
    print(f"{'data':<22}{'rows':>10}{'users':>8}{'seconds':>10}{'peak RSS MiB':>14}{'import RSS':>12}{'prep MiB':>10}")
    for r in rows:
        print(f"{r['data']:<22}{r['rows']:>10}{r['users']:>8}{r['seconds']:>10.2f}{r['peak_rss_mib']:>14.0f}"
              f"{r['import_rss_mib']:>12.0f}{r['peak_rss_mib'] - r['import_rss_mib']:>10.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if len(rows) == len(args.data) else 1


if __name__ == "__main__":
    sys.exit(main())
