#!/usr/bin/env python
"""Training speed and memory of every method side by side on Douban music -> book.

For each method (the cross-domain baselines CMF, EMCDR, CoNet, BiTGCF, XSimGCL and, for reference,
Pop, BPR-MF, LightGCN, NGCF and BiGNAS), in a fresh process each (peak RSS is per method): build
it from its ``conf/method/<name>.yaml`` defaults on ``data=douban-dtcdr``, run ``--epochs``
training epochs and one full validation evaluation, and print seconds per epoch (the mean of the
epochs after the first when there are several), seconds of one evaluation (top-N full ranking;
CTR for BiGNAS, which predicts clicks only) and peak RSS. EMCDR's epoch is one of its target
phase (an MF epoch; its map-phase epoch is listed separately). Every child runs with
``--threads`` torch threads (printed).

    python scripts/bench_baselines.py --root ../shared/data
    python scripts/bench_baselines.py --root ../shared/data --methods cmf bitgcf --epochs 3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

METHODS = ["pop", "bprmf", "lightgcn", "ngcf", "bignas", "cmf", "emcdr", "conet", "bitgcf", "xsimgcl"]


def _measure(method_name: str, root: str, epochs: int, threads: int, queue) -> None:
    import torch

    from cdrbench.app import build_method, data_view, load_data
    from cdrbench.config import compose
    from cdrbench.eval.evaluator import Evaluator
    from cdrbench.methods.base import Phase

    torch.set_num_threads(threads)
    tasks = ["ctr"] if method_name == "bignas" else ["topn"]
    cfg = compose([f"method={method_name}", "data=douban-dtcdr", f"data.root={root}", f"eval.tasks={tasks}",
                   "trainer.progress=false"])
    data, data_cfg = load_data(cfg, progress=False)
    _, method = build_method(cfg)
    view = data_view(data, data_cfg.use_source, method, method_name)
    torch.manual_seed(0)
    method.setup(view, torch.device("cpu"), seed=0)
    noop = lambda iterable, **_: iterable  # noqa: E731
    phases = method.phases()
    times, extra = [], ""
    if phases:
        phase = next((p for p in phases if p.name == "target"), phases[0])
        if method_name == "emcdr":
            method.start_phase(phase)
        for epoch in range(epochs):
            started = time.perf_counter()
            method.train_epoch(phase, epoch, noop)
            times.append(time.perf_counter() - started)
        if method_name == "emcdr":
            method.start_phase(Phase("map"))
            started = time.perf_counter()
            method.train_epoch(Phase("map"), 0, noop)
            extra = f"map-phase epoch {time.perf_counter() - started:.3f} s"
    evaluator = Evaluator(view, tasks=tasks, ks=[10, 20])
    started = time.perf_counter()
    with method.evaluation():
        evaluator.evaluate(method, "valid")
    eval_seconds = time.perf_counter() - started
    per_epoch = (sum(times[1:]) / len(times[1:]) if len(times) > 1 else times[0]) if times else None
    queue.put({"method": method_name, "s/epoch": per_epoch, "eval s": eval_seconds,
               "peak RSS MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "parameters": method.num_parameters(), "threads": torch.get_num_threads(),
               "train rows": sum(len(view.train(d)) for d in view.domains), "note": extra})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data", help="data.root (holds douban-dtcdr/)")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per method (>= 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every measurement")
    args = parser.parse_args()
    context = mp.get_context("spawn")
    rows = []
    for name in args.methods:
        queue = context.Queue()
        child = context.Process(target=_measure, args=(name, args.root, max(1, args.epochs), args.threads, queue))
        child.start()
        row = queue.get()
        child.join()
        rows.append(row)
        per_epoch = "-" if row["s/epoch"] is None else f"{row['s/epoch']:.3f}"
        print(f"{name:>9}: {per_epoch} s/epoch, evaluation {row['eval s']:.3f} s, peak RSS {row['peak RSS MiB']:.0f} MiB, "
              f"{row['parameters']:,} parameters, {row['train rows']:,} training rows, {row['threads']} thread(s) "
              f"{row['note']}", flush=True)
    print(f"\nDouban music -> book (data=douban-dtcdr), {args.epochs} epoch(s) per method, "
          f"torch threads {args.threads}, CPU")
    print("| method | s/epoch | one evaluation (s) | peak RSS (MiB) | parameters |")
    print("|---|---|---|---|---|")
    for row in rows:
        per_epoch = "-" if row["s/epoch"] is None else f"{row['s/epoch']:.2f}"
        print(f"| {row['method']} | {per_epoch} | {row['eval s']:.2f} | {row['peak RSS MiB']:.0f} | {row['parameters']:,} |")


if __name__ == "__main__":
    main()
