#!/usr/bin/env python
"""HAGO speed and memory: seconds per pre-training and tuning epoch, scaling with graph size, an
extrapolation to the paper's Amazon scale, and the authors' code's step re-created as the anchor.

1. **Real data** (default the shared Douban Music -> Book pair under HAGO's protocol): full
   pre-training epochs and tuning epochs of ``method=hago`` (paper profile), peak RSS (and peak
   CUDA memory on a GPU).
2. **Synthetic three-domain graphs** (two sources, one target; default 5 sizes spanning > 100x in
   edges): seconds per pre-training *step* (a fixed number of timed steps after a warm-up),
   seconds per epoch = steps per epoch x seconds per step (an epoch visits every user and item
   node as an anchor, ``ceil(nodes / 1024)`` steps), seconds per tuning epoch, and the log-log
   slopes of step time and epoch time against the unified graph's directed entries.
3. **The reference step** (``--reference``, on by default): the authors' pre-training step
   re-created op for op with the same library calls, on the same tables and graph — a
   ``torch.sparse_coo_tensor`` of the coordinator weights rebuilt and added to the interaction
   matrix every step, ``.coalesce()`` for the indices and again for the values of each view,
   PyGCL-style ``EdgeRemoving`` / ``FeatureMasking`` on the edge list, two PyG ``LGConv(normalize=True)``
   layers per view (edge-list message passing), GRACE's head and InfoNCE, Adam; and their tuning
   step (LGConv over the target graph's COO, coalesced per forward, BPR + EmbLoss). Our step and
   theirs alternate in the same process, so the ratio holds under the machine's load.
4. **Amazon scale** (spec §8): the step time fitted on the synthetic sizes (power law in the
   directed entries) evaluated at ~6.9 M interactions (13.8 M directed entries) + ~4.7 M directed
   coordinator entries, times ~460 steps per epoch (0.47 M user and item anchors / 1024); memory
   from the fitted growth of peak RSS per entry. Both are CPU extrapolations from this machine.

Every measurement runs in a fresh process (peak RSS is per measurement); ``--threads`` pins torch's
intra-op threads (printed).

    OMP_NUM_THREADS=1 python scripts/bench_hago.py --root ../shared/data --threads 1
    python scripts/bench_hago.py --skip-real --users 400 1600 6400 25600 51200 --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import warnings

import numpy as np

warnings.filterwarnings("ignore", message="Sparse (invariant checks|CSR tensor support)")

AMAZON_INTERACTIONS = 6.9e6
AMAZON_COORD_ENTRIES = 4.7e6
AMAZON_ANCHORS = 0.47e6


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _gpu_mib(device: str):
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None


# ---------------------------------------------------------------------------- the reference step
class ReferenceStep:
    """The authors' pre-training and tuning steps re-created with their library calls (module
    docstring, point 3), on copies of our method's tables and graph; no code of theirs is used."""

    def __init__(self, method):
        import torch
        from torch_geometric.nn import LGConv

        pre = method.pretrainer
        graph = pre.parts[0].graph
        layout = pre.layout
        self.device = method.device
        self.num_nodes = layout.num_nodes
        self.user = torch.nn.Embedding.from_pretrained(pre.user_embedding.weight.detach().clone(), freeze=False)
        self.item = torch.nn.Embedding.from_pretrained(pre.item_embedding.weight.detach().clone(), freeze=False)
        self.coord = torch.nn.Embedding.from_pretrained(pre.coordinators.embedding.weight.detach().clone(), freeze=False)
        d = self.user.weight.shape[1]
        self.project = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.ELU(), torch.nn.Linear(d, d)).to(self.device)
        self.convs = [LGConv(normalize=True), LGConv(normalize=True)]
        # the fixed part (interactions + coordinator links, weight 1) as one COO matrix, like SparseL
        src, dst = graph.pattern.col, graph.pattern.row
        is_pair = torch.zeros(graph.pattern.nnz, dtype=torch.bool, device=src.device)
        is_pair[graph.pair_entries] = True
        fixed = ~is_pair
        self.fixed = torch.sparse_coo_tensor(torch.stack([src[fixed], dst[fixed]]), torch.ones(int(fixed.sum()), device=src.device),
                                             (self.num_nodes, self.num_nodes))
        # their index_list: one (node, coordinator) block per domain and type, the cartesian product
        self.blocks = [(b.nodes, b.coords, torch.stack([b.nodes.repeat_interleave(b.coords.numel()),
                                                        layout.coord_start + b.coords.repeat(b.nodes.numel())]))
                       for b in graph.blocks]
        self.user_rows = layout.user_rows
        self.optimizer = torch.optim.Adam([*self.user.parameters(), *self.item.parameters(), *self.coord.parameters(),
                                           *self.project.parameters()], lr=0.005)
        # tuning: the target graph as a COO matrix, prompts as embedding tables
        target = method.target_graph.pattern
        self.target_adj = torch.sparse_coo_tensor(torch.stack([target.col, target.row]), torch.ones(target.nnz, device=target.col.device),
                                                  (target.num_nodes, target.num_nodes))
        self.num_users = method.num_users
        self.target_base = torch.cat([pre.user_embedding.weight[: method.num_users],
                                      pre.item_embedding.weight[(layout.item_block(method.data.target_domain)
                                                                 - layout.user_rows).to(self.device)]]).detach()
        self.prompt = torch.nn.Embedding(target.num_nodes, d).to(self.device)
        self.tune_optimizer = torch.optim.Adam(self.prompt.parameters(), lr=0.01)

    def _lightgcn(self, x, edge_index, edge_weight):
        z, out = x, x / 3
        for conv in self.convs:
            z = conv(z, edge_index, edge_weight)
            out = out + z / 3  # their LightGCN also accumulates the (unused) layer mean
        return z

    def pretrain_step(self, anchors) -> float:
        import torch
        import torch.nn.functional as F
        from torch_geometric.utils import dropout_edge

        from cdrbench.models.losses import info_nce

        x_nodes = torch.cat([self.user.weight, self.item.weight])
        coords = F.normalize(self.coord.weight, dim=-1)
        index, values = [], []
        for nodes, coord_ids, pairs in self.blocks:
            values.append((F.normalize(x_nodes[nodes].detach(), dim=-1) @ coords[coord_ids].T).flatten())
            index.append(pairs)
        value = torch.cat(values)
        coord_matrix = torch.sparse_coo_tensor(torch.cat(index, 1), torch.where(value > 0, value, 0), self.fixed.shape)
        adj = self.fixed + coord_matrix + coord_matrix.t()
        x = torch.cat([self.user.weight, self.item.weight, self.coord.weight])
        z = []
        for _ in range(2):
            edge_index, edge_weight = adj.coalesce().indices(), adj.coalesce().values()
            edge_index, mask = dropout_edge(edge_index, p=0.3)
            edge_weight = edge_weight[mask]
            drop = torch.empty(x.shape[1], device=x.device).uniform_(0, 1) < 0.1
            view = x.clone()
            view[:, drop] = 0
            z.append(self._lightgcn(view, edge_index, edge_weight)[anchors])
        h1, h2 = self.project(z[0]), self.project(z[1])
        loss = 0.5 * (info_nce(h1, h2, 0.1, True) + info_nce(h2, h1, 0.1, True))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def tune_step(self, users, pos, neg) -> float:
        import torch
        import torch.nn.functional as F

        x = self.target_base + self.prompt.weight
        h = self._lightgcn(x, self.target_adj.coalesce().indices(), self.target_adj.coalesce().values())
        u, i, j = h[users], h[self.num_users + pos], h[self.num_users + neg]
        bpr = -torch.log(1e-10 + torch.sigmoid((u * i).sum(-1) - (u * j).sum(-1))).mean()
        reg = sum(torch.norm(self.prompt(t)) for t in (users, self.num_users + pos, self.num_users + neg)) / len(users)
        loss = bpr + 0.01 * reg
        self.tune_optimizer.zero_grad()
        loss.backward()
        self.tune_optimizer.step()
        return float(loss.detach())


# ---------------------------------------------------------------------------- measurements
def _setup(data_cfg_or_overrides, device: str, threads: int):
    import torch

    from cdrbench.app import build_method, build_readers, data_config
    from cdrbench.config import compose
    from cdrbench.data.prepare import prepare

    torch.set_num_threads(threads)
    if isinstance(data_cfg_or_overrides, list):
        cfg = compose(["method=hago", *data_cfg_or_overrides])
        data_cfg = data_config(cfg)
        _, method = build_method(cfg)
    else:
        from cdrbench.methods.hago.method import HAGO

        data_cfg = data_cfg_or_overrides
        method = HAGO(torch.optim.Adam)
    data = prepare(data_cfg, build_readers(data_cfg), progress=False, log=lambda _: None)
    torch.manual_seed(0)
    method.setup(data, torch.device(device), seed=0)
    return data, method


def _alternate(method, ref, steps: int, device: str) -> tuple[list[float], list[float]]:
    """Our pre-training step and the reference step, alternating over the same anchor batches."""
    import torch

    from cdrbench.methods.hago.pretrain import anchor_batches

    pre = method.pretrainer
    anchors = [b.to(method.device) for b in anchor_batches(pre.layout, 1024, "users_then_items",
                                                            torch.Generator().manual_seed(0))]

    def ours(k):
        loss = pre(anchors[k % len(anchors)], method.aug_generator)
        method.pretrain_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        method.pretrain_optimizer.step()

    ours(0)
    ref.pretrain_step(anchors[0])  # warm-ups
    theirs, mine = [], []
    for k in range(steps):
        theirs.append(_timed(lambda: ref.pretrain_step(anchors[k % len(anchors)]), device))
        mine.append(_timed(lambda: ours(k), device))
    return theirs, mine


def _real(overrides: list[str], epochs: int, tune_epochs: int, steps: int, device: str, threads: int, queue) -> None:
    from cdrbench.methods.base import Phase

    data, method = _setup(overrides, device, threads)
    no_bar = lambda it, **_: it  # noqa: E731
    pretrain, tune = [], []
    for epoch in range(epochs):
        _sync(device)
        started = time.perf_counter()
        method.train_epoch(Phase("pretrain", select=False), epoch, no_bar)
        _sync(device)
        pretrain.append(time.perf_counter() - started)
    peak = _peak_mib()
    theirs, mine = _alternate(method, ReferenceStep(method), steps, device) if steps else ([], [])
    method.start_phase(Phase("tune"))
    for epoch in range(tune_epochs):
        _sync(device)
        started = time.perf_counter()
        method.train_epoch(Phase("tune"), epoch, no_bar)
        _sync(device)
        tune.append(time.perf_counter() - started)
    graph = method.pretrainer.parts[0].graph
    queue.put({"interactions": sum(len(data.train(d)) for d in data.domains), "entries": graph.pattern.nnz,
               "coord_entries": 2 * graph.num_pairs, "pretrain_epoch_seconds": pretrain, "tune_epoch_seconds": tune,
               "steps_per_epoch": math.ceil(method.pretrainer.layout.user_rows / 1024) + math.ceil(method.pretrainer.layout.item_rows / 1024),
               "reference_step_seconds": statistics.median(theirs) if theirs else None,
               "step_seconds_interleaved": statistics.median(mine) if mine else None,
               "peak_rss_mib": peak, "peak_gpu_mib": _gpu_mib(device)})


def _synthetic_config(users: int, root: str):
    from cdrbench.config import DataConfig, DomainConfig, SplitConfig

    def domain(seed: int, items: int, per_user: int):
        return DomainConfig(reader={"_target_": "cdrbench.data.sources.synthetic.SyntheticDomain", "num_users": users,
                                    "num_items": items, "interactions_per_user": per_user, "user_share": 0.8,
                                    "domain_seed": seed, "seed": 0})

    return DataConfig(name=f"bench-{users}", root=root,
                      domains={"a": domain(1, max(50, users // 2), 20), "b": domain(2, max(50, users // 3), 15),
                               "c": domain(3, max(50, users // 4), 10)},
                      source=["a", "b"], target="c", split=SplitConfig(kind="ratio"))


def _timed(fn, device: str) -> float:
    _sync(device)
    started = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - started


def _synthetic(users: int, steps: int, reference: bool, device: str, threads: int, queue) -> None:
    import torch

    from cdrbench.methods.base import Phase
    from cdrbench.methods.hago.pretrain import anchor_batches
    from cdrbench.train.sampling import bpr_triples

    with tempfile.TemporaryDirectory() as root:
        data, method = _setup(_synthetic_config(users, root), device, threads)
    pre = method.pretrainer
    batches = anchor_batches(pre.layout, 1024, "users_then_items", torch.Generator().manual_seed(0))
    anchors = [b.to(method.device) for b in batches]

    def ours(k):
        loss = pre(anchors[k % len(anchors)], method.aug_generator)
        method.pretrain_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        method.pretrain_optimizer.step()

    ours(0)  # warm-up
    ours_times = [_timed(lambda: ours(k), device) for k in range(steps)]
    peak_ours = _peak_mib()
    gpu_ours = _gpu_mib(device)
    ref_times, ref_ours = [], []
    ref = None
    if reference:
        ref = ReferenceStep(method)
        ref.pretrain_step(anchors[0])  # warm-up
        for k in range(steps):  # alternate, so both see the same load
            ref_times.append(_timed(lambda: ref.pretrain_step(anchors[k % len(anchors)]), device))
            ref_ours.append(_timed(lambda: ours(k), device))
    # tuning: one epoch of ours; the reference over the same triples, step by step
    method.start_phase(Phase("tune"))
    tune_ours = _timed(lambda: method.train_epoch(Phase("tune"), 0, lambda it, **_: it), device)
    tune_ref = None
    if reference:
        generator = torch.Generator().manual_seed(1)
        triples = list(bpr_triples(method.train_users, method.train_items, method.sampler, 4096, generator))
        tune_ref = _timed(lambda: [ref.tune_step(u.to(method.device), i.to(method.device), j.to(method.device))
                                         for u, i, j in triples], device)
    graph = pre.parts[0].graph
    queue.put({
        "users": users, "interactions": sum(len(data.train(d)) for d in data.domains), "entries": graph.pattern.nnz,
        "coord_entries": 2 * graph.num_pairs, "nodes": pre.layout.num_nodes,
        "steps_per_epoch": len(batches), "step_seconds": statistics.median(ours_times),
        "step_seconds_interleaved": statistics.median(ref_ours) if ref_ours else None,
        "reference_step_seconds": statistics.median(ref_times) if ref_times else None,
        "tune_epoch_seconds": tune_ours, "reference_tune_epoch_seconds": tune_ref,
        "peak_rss_mib": peak_ours, "peak_gpu_mib": gpu_ours,
    })


def _guarded(target, *args) -> None:
    queue = args[-1]
    warnings.filterwarnings("ignore", message="Sparse (invariant checks|CSR tensor support)")
    try:
        target(*args)
    except BaseException:
        import traceback

        queue.put({"error": traceback.format_exc()})


def _in_child(target, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_guarded, args=(target, *args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"measurement in a child process failed:\n{result['error']}")
    return result


def _slope(x, y) -> tuple[float, float]:
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope), float(intercept)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="douban-dtcdr-hago")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    parser.add_argument("--epochs", type=int, default=2, help="pre-training epochs timed on the real data")
    parser.add_argument("--tune-epochs", type=int, default=3)
    parser.add_argument("--users", type=int, nargs="+", default=[400, 1600, 6400, 12800, 25600, 51200])
    parser.add_argument("--steps", type=int, default=3, help="timed pre-training steps per synthetic size")
    parser.add_argument("--real-steps", type=int, default=6, help="alternating ours/reference steps on the real data")
    parser.add_argument("--no-reference", action="store_true", help="skip the re-created reference step")
    parser.add_argument("--reference-max-users", type=int, default=12800,
                        help="largest size for the reference step (its edge-list messages keep [entries, d] tensors)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--json", help="write all figures to this file")
    args = parser.parse_args()
    print(f"torch intra-op threads: {args.threads}; device: {args.device}")
    report: dict = {"threads": args.threads, "device": args.device}
    if not args.skip_real:
        with tempfile.TemporaryDirectory() as cache:
            overrides = [f"data={args.data}", f"data.root={args.root}", f"data.cache_dir={cache}", "trainer.progress=false"]
            real = _in_child(_real, overrides, args.epochs, args.tune_epochs, 0 if args.no_reference else args.real_steps,
                             args.device, args.threads)
        report["real"] = real
        p, t = np.array(real["pretrain_epoch_seconds"]), np.array(real["tune_epoch_seconds"])
        print(f"{args.data}: {real['interactions']} training interactions, {real['entries']} directed entries "
              f"({real['coord_entries']} coordinator), {real['steps_per_epoch']} steps/epoch: pre-training "
              f"{p.mean():.2f} s/epoch (min {p.min():.2f}), tuning {t.mean():.2f} s/epoch (min {t.min():.2f}), "
              f"peak RSS {real['peak_rss_mib']:.0f} MiB" + (f", peak GPU {real['peak_gpu_mib']:.0f} MiB" if real["peak_gpu_mib"] else ""))
        if real["reference_step_seconds"]:
            ratio = real["reference_step_seconds"] / real["step_seconds_interleaved"]
            report["real"]["reference_epoch_estimate_seconds"] = ratio * float(p.mean())
            print(f"  the authors' step re-created, alternating with ours on the same batches: "
                  f"{real['reference_step_seconds']:.3f} s vs {real['step_seconds_interleaved']:.3f} s per step "
                  f"(x{ratio:.2f}): an estimated {ratio * p.mean():.1f} s per pre-training epoch of theirs")
    rows = [_in_child(_synthetic, users, args.steps, not args.no_reference and users <= args.reference_max_users,
                      args.device, args.threads) for users in args.users]
    report["synthetic"] = rows
    header = (f"{'users':>7}{'interact.':>11}{'entries':>10}{'steps/ep':>9}{'s/step':>9}{'s/epoch':>9}{'tune s/ep':>10}"
              f"{'ref s/step':>11}{'ref/ours':>9}{'ref tune':>9}{'RSS MiB':>9}")
    print("\nsynthetic three-domain graphs (2 sources -> 1 target), HAGO paper profile\n" + header)
    for r in rows:
        ratio = r["reference_step_seconds"] / r["step_seconds_interleaved"] if r["reference_step_seconds"] else float("nan")
        ref_step = f"{r['reference_step_seconds']:.3f}" if r["reference_step_seconds"] else "-"
        ref_tune = f"{r['reference_tune_epoch_seconds']:.2f}" if r["reference_tune_epoch_seconds"] else "-"
        print(f"{r['users']:>7}{r['interactions']:>11}{r['entries']:>10}{r['steps_per_epoch']:>9}{r['step_seconds']:>9.3f}"
              f"{r['step_seconds'] * r['steps_per_epoch']:>9.1f}{r['tune_epoch_seconds']:>10.2f}{ref_step:>11}"
              f"{ratio:>9.2f}{ref_tune:>9}{r['peak_rss_mib']:>9.0f}")
    if len(rows) >= 2:
        entries = [r["entries"] for r in rows]
        step_slope, step_intercept = _slope(entries, [r["step_seconds"] for r in rows])
        epoch_slope, _ = _slope(entries, [r["step_seconds"] * r["steps_per_epoch"] for r in rows])
        tune_slope, _ = _slope([r["interactions"] for r in rows], [r["tune_epoch_seconds"] for r in rows])
        span = entries[-1] / entries[0]
        print(f"\nlog-log slopes over a {span:.0f}x range of directed entries: pre-training step {step_slope:.2f}, "
              f"pre-training epoch {epoch_slope:.2f} (an epoch has ceil(nodes/1024) steps, each over the whole graph: "
              f"nodes grow with edges here), tuning epoch vs interactions {tune_slope:.2f}")
        report.update({"slope_step_vs_entries": step_slope, "slope_epoch_vs_entries": epoch_slope,
                       "slope_tune_epoch_vs_interactions": tune_slope, "entries_span": span})
        amazon_entries = 2 * AMAZON_INTERACTIONS + AMAZON_COORD_ENTRIES
        step = math.exp(step_intercept) * amazon_entries ** step_slope
        steps = math.ceil(AMAZON_ANCHORS / 1024)
        rss_slope = np.polyfit(entries, [r["peak_rss_mib"] for r in rows], 1)
        rss = float(np.polyval(rss_slope, amazon_entries))
        report["amazon_extrapolation"] = {"entries": amazon_entries, "step_seconds": step, "steps_per_epoch": steps,
                                          "epoch_seconds": step * steps, "peak_rss_mib": rss}
        print(f"Amazon scale (spec §8: {amazon_entries / 1e6:.1f} M directed entries, {steps} steps/epoch), extrapolated "
              f"on this {args.device} with {args.threads} thread(s): {step:.1f} s/step, {step * steps / 3600:.2f} h per "
              f"pre-training epoch, peak RSS ~{rss / 1024:.1f} GiB (linear fit of RSS vs entries)")
        ratios = [r["reference_step_seconds"] / r["step_seconds_interleaved"] for r in rows if r["reference_step_seconds"]]
        if ratios:
            report["reference_over_ours"] = ratios
            print(f"re-created reference step / ours, same process, alternating: {', '.join(f'{q:.2f}' for q in ratios)}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
