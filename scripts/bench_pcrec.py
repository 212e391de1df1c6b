#!/usr/bin/env python
"""PCRec speed and memory: the sampler, the eigen-features, pre-training steps and epochs,
fine-tuning epochs, on real data and on synthetic graphs of growing size.

1. **Sampler** (subgraphs per second, one view = one subgraph): our vectorised r-ego random walk
   with restart (walk + node selection + induced edges) against, in the same run, the naive
   per-walker Python loop (:func:`cdrbench.methods.pcrec.sampling.reference_walk` + Python sets)
   and PyG's compiled random walks (``torch.ops.pyg.random_walk`` / ``torch_cluster``) when
   either is installed (they need pyg-lib / torch-cluster wheels; the line says when they are
   absent). PyG's walks are plain fixed-length walks (no restart, no r-ego restriction): the
   ratio compares raw visit throughput only.
2. **Eigen-features** (subgraphs per second): our batched ``torch.linalg.eigh`` features against
   GCC's way, one ``scipy.sparse.linalg.eigsh`` per subgraph, on the same subgraphs.
3. **Pre-training**: seconds per step for the encoder alone (forward, backward, Adam, momentum
   update on prefetched batches), for data + encoder in one process, and with ``--workers``
   DataLoader workers drawing ahead (what a run does), plus the seconds of one real epoch.
4. **Fine-tuning**: seconds per epoch of BPR-MF and 1-layer LightGCN on the target.
5. **Scaling**: synthetic user-item graphs (Zipf item popularity) of growing size: sampler
   throughput and seconds per step, the slope of log(seconds per epoch) against log(edges),
   and the extrapolation to the paper's pre-training (Amazon Grocery: 71,878 nodes, about 0.5 M
   interactions; 100 epochs of 32 pairs = 224.7 k steps).

Each part runs in a fresh process (its peak RSS is its own). All torch work runs with
``--threads`` intra-op threads (default 1: the shared 2-core machine); the line says so.

    python scripts/bench_pcrec.py --root ../shared/data
    python scripts/bench_pcrec.py --root ../shared/data --sizes 2000 8000 32000 --paper-scale
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter

import numpy as np
from bench_common import in_child, peak_rss_mib

PAPER_NODES = 31_230 + 40_648
PAPER_STEPS = 100 * math.ceil(PAPER_NODES / 32)


# ---------------------------------------------------------------------------- graphs
def synthetic_graph(users: int, items: int, per_user: int, seed: int = 0):
    """Users with Poisson(per_user) distinct items drawn with Zipf(0.8) popularity."""
    import torch

    from cdrbench.methods.pcrec.sampling import CSRGraph

    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, items + 1) ** 0.8
    weights /= weights.sum()
    counts = np.clip(rng.poisson(per_user, users), 1, items)
    u = np.repeat(np.arange(users), counts)
    i = rng.choice(items, size=u.size, p=weights)
    pairs = np.unique(u * items + i)
    u, i = pairs // items, pairs % items + users
    edge_index = torch.as_tensor(np.stack([np.concatenate([u, i]), np.concatenate([i, u])]), dtype=torch.long)
    return CSRGraph.from_edge_index(edge_index, users + items)


def douban(root: str):
    from cdrbench.app import build_method, load_data
    from cdrbench.config import compose

    cfg = compose(["method=pcrec", "data=douban-dtcdr-pcrec", f"data.root={root}", "trainer.progress=false"])
    data, _ = load_data(cfg, progress=False)
    return cfg, data, build_method


# ---------------------------------------------------------------------------- parts
def naive_subgraphs(graph, seeds, views: int, budget_of, restart_prob: float, r, cap, rng) -> int:
    """GCC's loop, one walker and one subgraph at a time, in Python (the reference path)."""
    rowptr, col = graph.rowptr.tolist(), graph.col.tolist()
    from cdrbench.methods.pcrec.sampling import reference_walk

    edges = 0
    for seed in seeds.tolist():
        for _ in range(views):
            visits = reference_walk(graph, seed, restart_prob, r, budget_of(seed), rng)
            count = Counter(visits)
            first = {}
            for pos, node in enumerate(visits):
                first.setdefault(node, pos)
            others = sorted((v for v in count if v != seed), key=lambda v: (-count[v], first[v]))
            nodes = [seed] + sorted(others[: cap - 1])
            members = set(nodes)
            edges += sum(1 for a in nodes for b in col[rowptr[a] : rowptr[a + 1]] if b in members)
    return edges


def pyg_walk():
    """PyG's compiled random walk, if a wheel provides one (pyg-lib or torch-cluster)."""
    import torch

    for module, namespace in (("pyg_lib", "pyg"), ("torch_cluster", "torch_cluster")):
        try:
            __import__(module)
            return f"torch.ops.{namespace}.random_walk", getattr(getattr(torch.ops, namespace), "random_walk")
        except (ImportError, AttributeError, RuntimeError):
            continue
    return None, None


def bench_sampler(graph, batches: int, naive_batches: int, batch_size: int = 32) -> dict:
    import torch

    from cdrbench.methods.pcrec.features import featurize
    from cdrbench.methods.pcrec.sampling import RWRSampler, batch_generator

    sampler = RWRSampler(graph)
    seeds_all = (graph.degree > 0).nonzero().flatten()
    order = seeds_all[torch.randperm(seeds_all.numel(), generator=torch.Generator().manual_seed(0))]
    chunks = [order[i * batch_size : (i + 1) * batch_size] for i in range(batches)]
    chunks = [c for c in chunks if c.numel()]
    started = time.perf_counter()
    all_views, visits = [], 0
    for b, chunk in enumerate(chunks):
        views = sampler.sample(chunk, 2, batch_generator(0, "pretrain", 0, b))
        visits += int(sum(int(v.num_visits.sum()) for v in views))
        all_views.extend(views)
    ours = time.perf_counter() - started
    n_ours = sum(v.num_graphs for v in all_views)

    budgets = sampler.budgets(seeds_all)
    budget_of = dict(zip(seeds_all.tolist(), budgets.tolist()))
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for chunk in chunks[:naive_batches]:
        naive_subgraphs(graph, chunk, 2, budget_of.__getitem__, 0.8, 2, 256, rng)
    naive = time.perf_counter() - started
    n_naive = sum(2 * c.numel() for c in chunks[:naive_batches])

    name, walk = pyg_walk()
    pyg = None
    if walk is not None:  # same number of visits as our walks, as fixed-length walks of 256 steps
        starts = order.repeat(max(1, visits // (256 * order.numel())) + 1)[: max(1, visits // 256)]
        started = time.perf_counter()
        walk(graph.rowptr, graph.col, starts, 256, 1.0, 1.0)
        pyg = {"op": name, "visits_per_s": starts.numel() * 256 / (time.perf_counter() - started)}

    started = time.perf_counter()
    for b, view in enumerate(all_views):
        featurize(view, 32, torch.Generator().manual_seed(b))
    feats = time.perf_counter() - started
    started = time.perf_counter()
    n_scipy = scipy_features(all_views[: max(1, len(all_views) // 4)])
    scipy_s = time.perf_counter() - started
    sizes = torch.cat([v.sizes for v in all_views]).double()
    return {
        "subgraphs_per_s": n_ours / ours, "visits_per_s": visits / ours,
        "naive_subgraphs_per_s": n_naive / naive, "speedup_vs_naive": (n_ours / ours) / (n_naive / naive),
        "pyg": pyg, "pyg_missing": name is None,
        "features_per_s": n_ours / feats, "scipy_features_per_s": n_scipy / scipy_s,
        "speedup_features_vs_scipy": (n_ours / feats) / (n_scipy / scipy_s),
        "mean_nodes": float(sizes.mean()), "max_nodes": int(sizes.max()),
    }


def scipy_features(views) -> int:
    """GCC's features: one ARPACK ``eigsh`` per subgraph, rows normalised, padded."""
    from scipy.sparse import coo_matrix, diags
    from scipy.sparse.linalg import eigsh

    count = 0
    for view in views:
        src, dst = view.edge_index.numpy()
        sizes, ptr = view.sizes.tolist(), view.ptr.tolist()
        graph_of = view.batch.numpy()
        for g, n in enumerate(sizes):
            count += 1
            k = min(n - 2, 32)
            if k <= 0:
                continue
            mask = graph_of[src] == g
            a = coo_matrix((np.ones(mask.sum()), (src[mask] - ptr[g], dst[mask] - ptr[g])), shape=(n, n)).tocsr()
            norm = diags(np.asarray(a.sum(1)).ravel().clip(1) ** -0.5)
            lap = norm @ a @ norm
            _, u = eigsh(lap, k=k, which="LA", ncv=min(n, max(2 * k + 1, 20)), v0=np.full(n, 1.0 / math.sqrt(n)))
            u = u / np.linalg.norm(u, axis=1, keepdims=True).clip(1e-12)
    return count


def bench_steps(graph, steps: int, workers: int, device: str) -> dict:
    """Seconds per pre-training step: encoder alone, data + encoder inline, with workers."""
    import torch

    from cdrbench.methods.pcrec.gcc import GCCEncoder, MoCo, pretrain_scheduler
    from cdrbench.methods.pcrec.sampling import RWRSampler
    from cdrbench.methods.pcrec.views import SubgraphViews, requests_for, view_batches

    dev = torch.device(device)
    torch.manual_seed(0)
    moco = MoCo(GCCEncoder()).to(dev)
    optimizer = torch.optim.Adam(moco.query.parameters(), lr=0.005, weight_decay=1e-5)
    scheduler = pretrain_scheduler(optimizer, "warmup_linear", 10 * steps, 0.1)
    seeds = (graph.degree > 0).nonzero().flatten()
    seeds = seeds[torch.randperm(seeds.numel(), generator=torch.Generator().manual_seed(1))]
    requests = requests_for("pretrain", 0, seeds, 32)[: steps + 1]
    dataset = SubgraphViews(RWRSampler(graph), 0)

    def step(view_q, view_k):
        loss = moco(view_q.to(dev), view_k.to(dev))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(moco.query.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        moco.momentum_update()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    moco.train()
    started = time.perf_counter()
    batches = [dataset[r] for r in requests]
    data_s = (time.perf_counter() - started) / len(requests)
    step(*batches[0])  # warm-up
    started = time.perf_counter()
    for views in batches[1:]:
        step(*views)
    encoder_s = (time.perf_counter() - started) / steps
    out = {"data_s_per_batch": data_s, "encoder_s_per_step": encoder_s, "inline_s_per_step": data_s + encoder_s}
    if workers > 0:
        started = time.perf_counter()
        for views in view_batches(dataset, requests, workers, 4):
            step(*views)
        out["workers_s_per_step"] = (time.perf_counter() - started) / len(requests)
    out["steps_per_epoch"] = math.ceil(seeds.numel() / 32)
    return out


# ---------------------------------------------------------------------------- processes
def real_part(root: str, steps: int, workers: int, device: str, threads: int, queue) -> None:
    import torch

    torch.set_num_threads(threads)
    from cdrbench.methods.base import Phase

    cfg, data, build_method = douban(root)
    _, method = build_method(cfg.copy())
    method.log = lambda _: None
    method.opt_pretrain.num_workers = workers
    method.setup(data, torch.device(device), 0)
    graph = method.source_graph
    result = {"edges": graph.num_edges // 2, "nodes": int((graph.degree > 0).sum())}
    result.update(bench_sampler(graph, batches=12, naive_batches=1))
    result.update(bench_steps(graph, steps, workers, device))
    started = time.perf_counter()
    stats = method.train_epoch(Phase("pretrain", select=False), 0, lambda it, **_: it)  # one real epoch
    result["epoch_seconds"] = time.perf_counter() - started
    result["epoch_wait_seconds"] = stats["wait_seconds"]
    started = time.perf_counter()
    method.initialise()
    result["init_seconds"] = time.perf_counter() - started
    result["init_nodes"] = method.init_info["rows"]
    for model, layers in (("mf", 0), ("lightgcn", 1)):
        method.opt_finetune.model, method.opt_finetune.num_layers = model, layers
        rec = method._build_recommender()
        rec.setup(data.target_only(), torch.device(device), 0)
        rec.train_epoch(Phase("finetune"), 0, lambda it, **_: it)
        started = time.perf_counter()
        for epoch in range(1, 4):
            rec.train_epoch(Phase("finetune"), epoch, lambda it, **_: it)
        result[f"finetune_{model}{layers or ''}_s_per_epoch"] = (time.perf_counter() - started) / 3
    result["peak_rss_mib"] = peak_rss_mib()
    queue.put(result)


def synthetic_part(users: int, steps: int, workers: int, device: str, threads: int, queue) -> None:
    import torch

    torch.set_num_threads(threads)
    items = int(users * 40_648 / 31_230)
    graph = synthetic_graph(users, items, per_user=16)
    result = {"users": users, "items": items, "edges": graph.num_edges // 2, "nodes": int((graph.degree > 0).sum()),
              "max_degree": int(graph.degree.max())}
    result.update(bench_sampler(graph, batches=6, naive_batches=1))
    result.update(bench_steps(graph, steps, workers, device))
    result["epoch_seconds_extrapolated"] = result["steps_per_epoch"] * result.get("workers_s_per_step", result["inline_s_per_step"])
    result["peak_rss_mib"] = peak_rss_mib()
    queue.put(result)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="../shared/data", help="data root with douban-dtcdr/")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000],
                        help="synthetic users (items = users x 1.3, 16 interactions per user)")
    parser.add_argument("--paper-scale", action="store_true", help="also the Grocery-sized graph (31,230 users)")
    parser.add_argument("--steps", type=int, default=20, help="timed pre-training steps per graph")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers in the timed run")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    print(f"torch threads: {args.threads}; DataLoader workers: {args.workers}; device: {args.device}")
    out = {"threads": args.threads, "workers": args.workers}
    if not args.skip_real:
        real = in_child(real_part, args.root, args.steps, args.workers, args.device, args.threads)
        out["douban_music"] = real
        print(f"\nDouban music (source of music -> book): {real['nodes']} nodes, {real['edges']} edges")
        print_sampler(real)
        print_steps(real)
        print(f"  one real pre-training epoch ({real['steps_per_epoch']} steps, {args.workers} worker(s)): "
              f"{real['epoch_seconds']:.1f} s (encoder waited {real['epoch_wait_seconds']:.1f} s for data)")
        print(f"  initialisation (2 views of {real['init_nodes']} target nodes): {real['init_seconds']:.1f} s")
        print(f"  fine-tuning epoch: BPR-MF {real['finetune_mf_s_per_epoch']:.3f} s, "
              f"LightGCN-1 {real['finetune_lightgcn1_s_per_epoch']:.3f} s;  peak RSS {real['peak_rss_mib']:.0f} MiB")
    sizes = list(args.sizes) + ([31_230] if args.paper_scale else [])
    rows = []
    for users in sizes:
        res = in_child(synthetic_part, users, args.steps, args.workers, args.device, args.threads)
        rows.append(res)
        print(f"\nsynthetic {res['users']} users x {res['items']} items: {res['nodes']} nodes, {res['edges']} edges, "
              f"max degree {res['max_degree']}")
        print_sampler(res)
        print_steps(res)
        print(f"  epoch ({res['steps_per_epoch']} steps) extrapolated: {res['epoch_seconds_extrapolated']:.1f} s; "
              f"peak RSS {res['peak_rss_mib']:.0f} MiB")
    out["synthetic"] = rows
    if len(rows) >= 2:
        edges = np.log([r["edges"] for r in rows])
        for key, label in (("inline_s_per_step", "s/step (data + encoder)"), ("epoch_seconds_extrapolated", "s/epoch"),
                           ("subgraphs_per_s", "sampler subgraphs/s")):
            slope = np.polyfit(edges, np.log([r[key] for r in rows]), 1)[0]
            out[f"slope_{key}"] = float(slope)
            print(f"log-log slope of {label} vs edges: {slope:.2f}")
        paper = max(rows, key=lambda r: r["edges"])
        data_s, enc_s = paper["data_s_per_batch"], paper["encoder_s_per_step"]
        cpu_h = PAPER_STEPS * (data_s + enc_s) / 3600
        print(f"\npaper pre-training: {PAPER_STEPS} steps (100 epochs x {math.ceil(PAPER_NODES / 32)} steps of 32 pairs)")
        print(f"  from the {paper['users']}-user graph: data {data_s:.3f} s/batch and encoder {enc_s:.3f} s/step "
              f"on {args.threads} CPU thread(s)")
        print(f"  one CPU core, no overlap: {cpu_h:.1f} h")
        for w in (8, 16):
            print(f"  GPU step + {w} CPU data workers: data-bound at {PAPER_STEPS * data_s / w / 3600:.1f} GPU-hours "
                  f"(if the GPU step stays below {1000 * data_s / w:.0f} ms; not measured here)")
        out["paper_steps"] = PAPER_STEPS
        out["paper_cpu_hours"] = cpu_h
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(out, handle, indent=2)


def print_sampler(res: dict) -> None:
    pyg = res["pyg"]
    pyg_line = (f"PyG {pyg['op']}: {pyg['visits_per_s']:.0f} visits/s vs ours {res['visits_per_s']:.0f}"
                if pyg else "PyG random walk: not available (needs pyg-lib or torch-cluster wheels)")
    print(f"  sampler: {res['subgraphs_per_s']:.0f} subgraphs/s (mean {res['mean_nodes']:.0f}, max {res['max_nodes']} nodes); "
          f"naive per-walker loop {res['naive_subgraphs_per_s']:.1f}/s -> {res['speedup_vs_naive']:.0f}x; {pyg_line}")
    print(f"  eigen-features: {res['features_per_s']:.0f} subgraphs/s; GCC-style scipy eigsh per subgraph "
          f"{res['scipy_features_per_s']:.0f}/s -> {res['speedup_features_vs_scipy']:.1f}x")


def print_steps(res: dict) -> None:
    line = (f"  pre-training step (32 pairs): data {res['data_s_per_batch']:.3f} s + encoder {res['encoder_s_per_step']:.3f} s"
            f" = {res['inline_s_per_step']:.3f} s inline")
    if "workers_s_per_step" in res:
        line += f"; with workers {res['workers_s_per_step']:.3f} s"
    print(line)


if __name__ == "__main__":
    sys.exit(main())
