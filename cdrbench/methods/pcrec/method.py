"""PCRec as a cdrbench method: contrastive pre-training on the source graph, initialisation of
the target embeddings by the frozen encoder, BPR fine-tuning on the target.

Paper: Wang et al., "Pre-training Graph Neural Network for Cross Domain Recommendation", IEEE
CogMI 2021. Spec: ``shared/design/pcrec.md``. The pure parts live beside this file
(:mod:`.sampling` r-ego random walks, :mod:`.features` eigenvector/degree/ego features,
:mod:`.gcc` GIN encoder and MoCo, :mod:`.views` prefetching in DataLoader workers); this class is
the procedure:

1. ``pretrain`` phase (no selection): MoCo on pairs of r-ego subgraphs of the source graph
   ``G_s`` (spec §3). The trained query encoder :math:`f_q` goes into the shared artifact cache
   under a key of the prepared data, every pre-training option and the seed; a hit makes this
   phase 0 epochs long.
2. :meth:`start_phase` of ``finetune``: the frozen :math:`f_q` embeds target nodes by the mean
   of two views of their r-ego subgraphs (spec §4); ``init.mode`` says which rows of the
   target's user/item table start from it (``all_pm``: every node on ``G_t``, the paper's
   PCRec; ``cu_pm``: common users on ``G_t``; ``cu_pe``: common users on ``G_s``; ``none``:
   all random, N(0, ``random_std``²)).
3. ``finetune`` phase (selected on validation Recall@20): BPR-MF (``finetune.model=mf``) or
   LightGCN (``lightgcn``, ``num_layers`` 1 or 3) on ``G_t`` -- the shared
   :class:`~cdrbench.methods.baselines.CollaborativeFiltering` with its table overwritten by the
   initialisation. ``pre_only`` ranks with the encoder's vectors and trains nothing.

The paper's variants (Tables III-IV) are ``method.variant``; ``conf/method/pcrec.yaml`` turns a
variant into option values with ``${cdrbench.by_key:...}`` lines, so every option stays overridable.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from cdrbench.data.dataset import CrossDomainData
from cdrbench.errors import ConfigError
from cdrbench.methods.base import DotProductScoring, Method, Phase, Progress
from cdrbench.methods.options import build_options, check_choices
from cdrbench.methods.baselines import CollaborativeFiltering
from cdrbench.methods.pcrec.gcc import SCHEDULES, GCCEncoder, MoCo, pretrain_scheduler
from cdrbench.methods.pcrec.sampling import BUDGETS, CSRGraph, RWRSampler, batch_generator
from cdrbench.methods.pcrec.views import SubgraphViews, requests_for, view_batches
from cdrbench.models import LightGCNEncoder, MFEncoder

VARIANTS = ("pcrec", "pre_only", "hop2", "hop3", "l1", "l3", "cu_pe", "cu_pm", "mf_random")
INIT_MODES = ("all_pm", "cu_pm", "cu_pe", "none")
ISOLATED = ("encoder", "random")
FINETUNE_MODELS = ("mf", "lightgcn")
SEED_SAMPLING = ("uniform", "deg075")
CACHE_NAMESPACE = "pcrec"
#: bump when a change of the pre-training code changes the weights it produces
PRETRAIN_FORMAT = 1
#: pre-training options that do not change the weights (left out of the cache key)
_NOT_IN_KEY = ("num_workers", "prefetch")


# ---------------------------------------------------------------------------- options
@dataclass
class RWROptions:
    #: ego-network radius the walks stay in (spec §3.2); null = GCC's unrestricted walk
    r: Optional[int] = 2
    restart_prob: float = 0.8
    #: least visits per view (GCC --rw-hops)
    min_budget: int = 256
    #: deg_linear: B(u) = max(min_budget, deg e/(e-1)/p) | deg075: deg^0.75 instead of deg
    budget: str = "deg_linear"
    #: keep the seed and the most visited others (cdrbench cap); null = no cap
    max_subgraph_nodes: Optional[int] = 256


@dataclass
class FeatureOptions:
    pos_dim: int = 32
    deg_dim: int = 16
    max_degree: int = 512
    #: flip each eigenvector's sign with probability 1/2 (GCC's ARPACK start vector)
    random_sign: bool = True


@dataclass
class EncoderOptions:
    num_gin_layers: int = 4
    hidden: int = 64
    readout_dropout: float = 0.5
    normalize: bool = True


@dataclass
class MoCoOptions:
    queue_size: int = 512
    momentum: float = 0.999
    tau: float = 0.07
    #: the key encoder normalises with its batch's statistics (GCC)
    key_bn_train: bool = True


@dataclass
class PretrainOptions:
    lr: float = 0.005
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1.0e-5
    #: gradient-norm clipping of f_q; 0 = off
    clip_norm: float = 1.0
    #: seeds (positive pairs) per step
    batch_size: int = 32
    #: one epoch = one pass over the source graph's nodes
    epochs: int = 100
    #: cap on the total steps (the schedule spans the capped run); null = epochs x steps/epoch
    max_steps: Optional[int] = None
    warmup_frac: float = 0.1
    #: warmup_linear (GCC) | constant
    schedule: str = "warmup_linear"
    #: uniform: a random permutation per epoch | deg075: draws with probability ~ deg^0.75 (GCC)
    seed_sampling: str = "uniform"
    #: DataLoader workers drawing subgraphs ahead of the encoder, in pre-training and in the
    #: initialisation (0 = in the main process); results do not depend on it
    num_workers: int = 1
    #: batches drawn ahead per worker
    prefetch: int = 4


@dataclass
class InitOptions:
    #: all_pm (PCRec) | cu_pm | cu_pe | none (spec §4 table)
    mode: str = "all_pm"
    #: views averaged per node (GCC generate.py: 2)
    num_views: int = 2
    #: std of the rows that start random
    random_std: float = 0.1
    #: nodes without an edge in G_t: encoder (their one-node view) | random
    isolated: str = "encoder"
    #: factor on the encoder's vectors
    scale: float = 1.0
    #: nodes per embedding batch
    batch_size: int = 256


@dataclass
class FinetuneOptions:
    #: mf (PCRec) | lightgcn (PCRec-L1/L3)
    model: str = "mf"
    #: LightGCN propagation layers (0 for mf)
    num_layers: int = 0
    dim: int = 64
    lr: float = 1.0e-3
    batch_size: int = 2048
    reg_weight: float = 1.0e-4
    #: the next four are read by the trainer (conf/method/pcrec.yaml interpolates them into
    #: trainer.max_epochs / eval_every / patience / monitor)
    max_epochs: int = 1000
    eval_every: int = 10
    patience_epochs: int = 50
    valid_metric: str = "recall@20"


# ---------------------------------------------------------------------------- method
class PCRec(DotProductScoring, Method):
    """PCRec (see the module docstring). Arguments are the groups of ``conf/method/pcrec.yaml``.

    Args:
        variant: a label of the paper's rows (``pcrec`` | ``pre_only`` | ``hop2`` | ``hop3`` |
            ``l1`` | ``l3`` | ``cu_pe`` | ``cu_pm`` | ``mf_random``); the YAML derives the
            options from it.
        pre_only: rank with the encoder's vectors, no fine-tuning (needs ``init.mode=all_pm``).
        save_embeddings: write the encoder's vectors of every target node
            (``pretrained_embeddings.parquet``).
        rwr, features, encoder, moco, pretrain, init, finetune: option groups (dataclasses above).
        log: where progress lines go.
    """

    uses_source_by_default = True

    def __init__(
        self,
        variant: str = "pcrec",
        pre_only: bool = False,
        save_embeddings: bool = False,
        rwr: Optional[dict] = None,
        features: Optional[dict] = None,
        encoder: Optional[dict] = None,
        moco: Optional[dict] = None,
        pretrain: Optional[dict] = None,
        init: Optional[dict] = None,
        finetune: Optional[dict] = None,
        log: Callable[[str], None] = print,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"method.variant={variant!r} is not one of {list(VARIANTS)}")
        self.variant, self.pre_only, self.save_embeddings = variant, bool(pre_only), bool(save_embeddings)
        self.opt_rwr = build_options(RWROptions, rwr, "rwr")
        self.opt_features = build_options(FeatureOptions, features, "features")
        self.opt_encoder = build_options(EncoderOptions, encoder, "encoder")
        self.opt_moco = build_options(MoCoOptions, moco, "moco")
        self.opt_pretrain = build_options(PretrainOptions, pretrain, "pretrain")
        self.opt_init = build_options(InitOptions, init, "init")
        self.opt_finetune = build_options(FinetuneOptions, finetune, "finetune")
        self.log = log
        self._check_options()
        #: whether an encoder is pre-trained at all (mf_random needs none)
        self.uses_encoder = self.pre_only or self.opt_init.mode != "none" or self.save_embeddings

    def _check_options(self) -> None:
        r, p, i, f = self.opt_rwr, self.opt_pretrain, self.opt_init, self.opt_finetune
        choices = [
            ("method.rwr.budget", r.budget, BUDGETS),
            ("method.pretrain.schedule", p.schedule, SCHEDULES),
            ("method.pretrain.seed_sampling", p.seed_sampling, SEED_SAMPLING),
            ("method.init.mode", i.mode, INIT_MODES),
            ("method.init.isolated", i.isolated, ISOLATED),
            ("method.finetune.model", f.model, FINETUNE_MODELS),
        ]
        check_choices(choices)
        bounds = [
            ("method.rwr.restart_prob", r.restart_prob, 0.0 < r.restart_prob < 1.0, "in (0, 1)"),
            ("method.rwr.max_subgraph_nodes", r.max_subgraph_nodes,
             r.max_subgraph_nodes is None or r.max_subgraph_nodes >= 2, ">= 2 (or null: no cap)"),
            ("method.rwr.r", r.r, r.r is None or r.r >= 1, ">= 1 (or null: unrestricted)"),
            ("method.rwr.min_budget", r.min_budget, r.min_budget >= 1, ">= 1"),
            ("method.features.pos_dim", self.opt_features.pos_dim, self.opt_features.pos_dim >= 0, ">= 0"),
            ("method.moco.queue_size", self.opt_moco.queue_size, self.opt_moco.queue_size >= p.batch_size,
             f">= method.pretrain.batch_size ({p.batch_size})"),
            ("method.moco.momentum", self.opt_moco.momentum, 0.0 <= self.opt_moco.momentum < 1.0, "in [0, 1)"),
            ("method.moco.tau", self.opt_moco.tau, self.opt_moco.tau > 0, "> 0"),
            ("method.pretrain.batch_size", p.batch_size, p.batch_size >= 1, ">= 1"),
            ("method.pretrain.epochs", p.epochs, p.epochs >= 0, ">= 0"),
            ("method.pretrain.max_steps", p.max_steps, p.max_steps is None or p.max_steps >= 0, ">= 0 (or null)"),
            ("method.pretrain.warmup_frac", p.warmup_frac, 0.0 < p.warmup_frac < 1.0, "in (0, 1)"),
            ("method.init.num_views", i.num_views, i.num_views >= 1, ">= 1"),
            ("method.init.random_std", i.random_std, i.random_std >= 0, ">= 0"),
            ("method.finetune.batch_size", f.batch_size, f.batch_size >= 1, ">= 1"),
        ]
        for key, value, ok, rule in bounds:
            if not ok:
                raise ConfigError(f"{key}={value!r} must be {rule}")
        if f.model == "lightgcn" and f.num_layers < 1:
            raise ConfigError(f"method.finetune.model=lightgcn needs method.finetune.num_layers >= 1, got {f.num_layers}")
        if f.model == "mf" and f.num_layers != 0:
            raise ConfigError(f"method.finetune.num_layers={f.num_layers} applies to finetune.model=lightgcn only (mf: 0)")
        if self.pre_only and i.mode != "all_pm":
            raise ConfigError(f"method.pre_only=true ranks with the encoder's vectors of every node: it needs "
                              f"method.init.mode=all_pm (got {i.mode})")
        if i.mode != "none" and f.dim != self.opt_encoder.hidden:
            raise ConfigError(f"method.finetune.dim={f.dim} must equal method.encoder.hidden={self.opt_encoder.hidden} "
                              f"when the encoder initialises the embeddings (init.mode={i.mode})")

    # ------------------------------------------------------------------ setup
    def setup(self, data: CrossDomainData, device: torch.device, seed: int) -> None:
        self.data, self.device, self.seed = data, device, seed
        target = data.target_domain
        self.num_users = data.num_users
        self.num_target_items = data.num_items(target)
        self.target_graph = self._csr(data, target)
        self.source_graph: Optional[CSRGraph] = None
        self.common_users = self._common_users(data)
        needs_source = self.uses_encoder
        if needs_source:
            if len(data.source_domains) != 1:
                raise ConfigError(
                    f"pcrec pre-trains on exactly one source domain; data '{data.name}' has {data.source_domains} "
                    "(data.source; data.use_source must not be false)"
                )
            source = data.source_domains[0]
            if len(data.train(source)) == 0:
                raise ConfigError(f"pcrec pre-trains on the source graph, but source domain '{source}' of data "
                                  f"'{data.name}' has no edges (data.source)")
            self.source_graph = self._csr(data, source)
        if self.opt_init.mode in ("cu_pe", "cu_pm") and self.common_users.numel() == 0:
            raise ConfigError(
                f"method.init.mode={self.opt_init.mode} initialises common users, but data '{data.name}' has no user "
                f"with interactions in both {data.source_domains} and '{target}'"
            )
        # the recommender draws its random rows now (same draws for every variant of a seed)
        self.recommender: Optional[CollaborativeFiltering] = None
        if not self.pre_only:
            self.recommender = self._build_recommender()
            self.recommender.setup(data.target_only(), device, seed)
        self._build_pretraining(seed)
        self.cache_hit = False
        self.cache_parts = self._cache_parts() if self.uses_encoder else None
        if self.uses_encoder and self.artifact_cache is not None:
            state = self.artifact_cache.load(CACHE_NAMESPACE, self.cache_parts)
            if state is not None:
                try:
                    self.moco.query.load_state_dict(state["encoder"], strict=True)
                    self.cache_hit = True
                    self.pretrain_info = dict(state.get("info", {}), from_cache=True)
                except (RuntimeError, KeyError) as error:
                    self.log(f"pcrec: cached encoder does not fit this model ({error}); pre-training again")
        self.e_init: Optional[Tensor] = None
        self.init_info: dict = {}
        self.pretrained_embeddings: Optional[Tensor] = None

    @staticmethod
    def _csr(data: CrossDomainData, domain: str) -> CSRGraph:
        graph = data.bipartite_graph(domain)
        return CSRGraph.from_edge_index(graph.edge_index, graph.num_nodes)

    @staticmethod
    def _common_users(data: CrossDomainData) -> Tensor:
        users = [set(data.interactions[d].user.unique().tolist()) for d in data.domains]
        return torch.tensor(sorted(set.intersection(*users)) if len(users) > 1 else [], dtype=torch.long)

    def _build_recommender(self) -> CollaborativeFiltering:
        f, std = self.opt_finetune, self.opt_init.random_std
        if f.model == "mf":
            encoder = functools.partial(MFEncoder, embedding_dim=f.dim, init_std=std)
        else:
            encoder = functools.partial(LightGCNEncoder, embedding_dim=f.dim, num_layers=f.num_layers, init_std=std)
        return CollaborativeFiltering(encoder=encoder, optimizer=functools.partial(torch.optim.Adam, lr=f.lr),
                                      loss="bpr", batch_size=f.batch_size, reg_weight=f.reg_weight)

    def _sampler(self, graph: CSRGraph) -> RWRSampler:
        r = self.opt_rwr
        return RWRSampler(graph, restart_prob=r.restart_prob, r=r.r, min_budget=r.min_budget, budget=r.budget,
                          max_nodes=r.max_subgraph_nodes)

    def _build_pretraining(self, seed: int) -> None:
        """Encoder, MoCo, optimiser and schedule; their initial weights depend on the seed alone
        (a private RNG), so a cached encoder is what this run would have trained."""
        e, ft, p = self.opt_encoder, self.opt_features, self.opt_pretrain
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_derived_seed(seed, "encoder_init"))
            encoder = GCCEncoder(pos_dim=ft.pos_dim, deg_dim=ft.deg_dim, max_degree=ft.max_degree, hidden=e.hidden,
                                 num_gin_layers=e.num_gin_layers, readout_dropout=e.readout_dropout,
                                 normalize=e.normalize)
            m = self.opt_moco
            self.moco = MoCo(encoder, queue_size=m.queue_size, momentum=m.momentum, tau=m.tau,
                             key_bn_train=m.key_bn_train).to(self.device)
        self.optimizer = torch.optim.Adam(self.moco.query.parameters(), lr=p.lr, betas=tuple(p.betas),
                                          weight_decay=p.weight_decay)
        if self.source_graph is not None:
            self.pretrain_seeds = (self.source_graph.degree > 0).nonzero().flatten()
            self.steps_per_epoch = math.ceil(self.pretrain_seeds.numel() / p.batch_size)
        else:
            self.pretrain_seeds, self.steps_per_epoch = torch.zeros(0, dtype=torch.long), 0
        total = p.epochs * self.steps_per_epoch
        self.total_steps = total if p.max_steps is None else min(total, p.max_steps)
        self.scheduler = pretrain_scheduler(self.optimizer, p.schedule, self.total_steps, p.warmup_frac)
        self.pretrain_step = 0
        self.pretrain_info: dict = {}

    def _cache_parts(self) -> dict:
        pretrain = {k: v for k, v in dataclasses.asdict(self.opt_pretrain).items() if k not in _NOT_IN_KEY}
        return {
            "format": PRETRAIN_FORMAT,
            "data": _data_fingerprint(self.data),
            "source": self.data.source_domains[0],
            "rwr": dataclasses.asdict(self.opt_rwr),
            "features": dataclasses.asdict(self.opt_features),
            "encoder": dataclasses.asdict(self.opt_encoder),
            "moco": dataclasses.asdict(self.opt_moco),
            "pretrain": pretrain,
            "seed": int(self.seed),
        }

    # ------------------------------------------------------------------ phases
    @property
    def pretrain_epochs(self) -> int:
        if not self.uses_encoder or self.cache_hit or self.steps_per_epoch == 0:
            return 0
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def phases(self) -> list[Phase]:
        return [
            Phase("pretrain", max_epochs=self.pretrain_epochs, select=False),
            Phase("finetune", max_epochs=0 if self.pre_only else None, select=True),
        ]

    def start_phase(self, phase: Phase) -> None:
        if phase.name == "pretrain" and self.uses_encoder and not self.cache_hit:
            self.log(f"pcrec: pre-training {self.total_steps} steps ({self.pretrain_epochs} epochs of "
                     f"{self.steps_per_epoch} steps, {self.opt_pretrain.batch_size} pairs each) on "
                     f"'{self.data.source_domains[0]}'")
        if phase.name == "finetune":
            self.initialise()

    def end_phase(self, phase: Phase) -> None:
        if phase.name != "pretrain" or not self.uses_encoder or self.cache_hit:
            return
        self.pretrain_info = {"steps": self.pretrain_step, "total_steps": self.total_steps,
                              "epochs": self.pretrain_epochs, "steps_per_epoch": self.steps_per_epoch,
                              "from_cache": False}
        if self.artifact_cache is not None:
            state = {"encoder": self.moco.query.state_dict(), "info": self.pretrain_info}
            self.artifact_cache.save(CACHE_NAMESPACE, self.cache_parts, state, info={"variant": self.variant})

    # ------------------------------------------------------------------ pre-training
    def train_epoch(self, phase: Phase, epoch: int, progress: Progress) -> dict[str, float]:
        if phase.name == "pretrain":
            return self._pretrain_epoch(epoch, progress)
        return self.recommender.train_epoch(phase, epoch, progress)

    def _epoch_seeds(self, epoch: int) -> Tensor:
        generator = batch_generator(self.seed, "pretrain_order", epoch, 0)
        seeds = self.pretrain_seeds
        if self.opt_pretrain.seed_sampling == "uniform":
            return seeds[torch.randperm(seeds.numel(), generator=generator)]
        weights = self.source_graph.degree[seeds].double().pow(0.75)
        return seeds[torch.multinomial(weights, seeds.numel(), replacement=True, generator=generator)]

    def _pretrain_epoch(self, epoch: int, progress: Progress) -> dict[str, float]:
        p = self.opt_pretrain
        steps = min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)
        requests = requests_for("pretrain", epoch, self._epoch_seeds(epoch), p.batch_size)[:steps]
        dataset = SubgraphViews(self._sampler(self.source_graph), self.seed, num_views=2,
                                pos_dim=self.opt_features.pos_dim, random_sign=self.opt_features.random_sign)
        sums = {"loss": 0.0, "grad_norm": 0.0, "subgraph_nodes": 0.0}
        waited = 0.0
        # dropout draws from a per-epoch RNG: the epoch is a function of (seed, epoch, state)
        cuda = [self.device.index if self.device.index is not None else torch.cuda.current_device()] \
            if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(_derived_seed(self.seed, f"pretrain_epoch_{epoch}"))
            self.moco.train()
            batches = iter(view_batches(dataset, requests, p.num_workers, p.prefetch))
            for _ in progress(range(len(requests)), total=len(requests), desc=f"pretrain {epoch}"):
                started = time.perf_counter()
                view_q, view_k = next(batches)
                waited += time.perf_counter() - started
                loss = self.moco(view_q.to(self.device), view_k.to(self.device))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                params = list(self.moco.query.parameters())
                if p.clip_norm > 0:
                    norm = torch.nn.utils.clip_grad_norm_(params, p.clip_norm)
                else:
                    norm = torch.sqrt(sum(q.grad.pow(2).sum() for q in params if q.grad is not None))
                self.optimizer.step()
                self.scheduler.step()
                self.moco.momentum_update()
                self.pretrain_step += 1
                sums["loss"] += float(loss.detach())
                sums["grad_norm"] += float(norm)
                sums["subgraph_nodes"] += (view_q.num_nodes + view_k.num_nodes) / (view_q.num_graphs + view_k.num_graphs)
        n = max(1, len(requests))
        stats = {k: v / n for k, v in sums.items()}
        stats.update(steps=float(len(requests)), wait_seconds=waited, lr=float(self.scheduler.get_last_lr()[0]))
        return stats

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def embed(self, graph: CSRGraph, nodes: Tensor, stream: str) -> Tensor:
        """:math:`f_q` (eval mode) of ``nodes``: the mean of ``init.num_views`` r-ego views."""
        i = self.opt_init
        dataset = SubgraphViews(self._sampler(graph), self.seed, num_views=i.num_views,
                                pos_dim=self.opt_features.pos_dim, random_sign=self.opt_features.random_sign)
        encoder = self.moco.query
        was_training = encoder.training
        encoder.eval()
        out = []
        requests = requests_for(stream, 0, nodes, i.batch_size)
        for views in view_batches(dataset, requests, self.opt_pretrain.num_workers, self.opt_pretrain.prefetch):
            out.append(sum(encoder(v.to(self.device)) for v in views).cpu() / len(views))
        encoder.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.opt_encoder.hidden)

    def initialise(self) -> None:
        """Write the initial embedding table (spec §4 table) into the fine-tuned model."""
        i = self.opt_init
        rows = self.num_users + self.num_target_items
        if self.recommender is not None:
            table = self.recommender.encoder.embedding.weight.detach().cpu().clone()
        else:
            generator = torch.Generator().manual_seed(_derived_seed(self.seed, "random_rows"))
            table = torch.randn(rows, self.opt_encoder.hidden, generator=generator) * i.random_std
        isolated_t = self.target_graph.degree == 0
        if i.mode in ("all_pm", "cu_pm"):
            nodes = torch.arange(rows) if i.mode == "all_pm" else self.common_users
            if i.isolated == "random":
                nodes = nodes[~isolated_t[nodes]]
            source_graph, stream = self.target_graph, "init_target"
        elif i.mode == "cu_pe":
            nodes, source_graph, stream = self.common_users, self.source_graph, "init_source"
        else:
            nodes, source_graph, stream = torch.zeros(0, dtype=torch.long), None, None
        started = time.perf_counter()
        if self.save_embeddings or i.mode == "all_pm":  # every target-graph node (isolated ones are cheap)
            self.pretrained_embeddings = self.embed(self.target_graph, torch.arange(rows), "init_target")
        if nodes.numel():
            if stream == "init_target" and self.pretrained_embeddings is not None:
                vectors = self.pretrained_embeddings[nodes]
            else:
                vectors = self.embed(source_graph, nodes, stream)
            table[nodes] = i.scale * vectors
        from_encoder = torch.zeros(rows, dtype=torch.bool)
        from_encoder[nodes] = True
        self.init_info = {
            "mode": i.mode, "rows": rows, "rows_from_encoder": int(from_encoder.sum()),
            "encoder_graph": {"init_target": "target", "init_source": "source"}.get(stream),
            "rows_random": int((~from_encoder).sum()), "common_users": int(self.common_users.numel()),
            "isolated_target_nodes": int(isolated_t.sum()),
            "isolated_from_encoder": int((from_encoder & isolated_t).sum()),
            "seconds": round(time.perf_counter() - started, 3),
        }
        self.log(f"pcrec: init.mode={i.mode}: {self.init_info['rows_from_encoder']} of {rows} rows from the encoder "
                 f"({self.init_info['encoder_graph'] or '-'} graph), {self.init_info['isolated_from_encoder']} of them "
                 f"isolated in the target graph (one shared vector); {self.init_info['rows_random']} random")
        self.e_init = table
        if self.recommender is not None:
            self.recommender.encoder.embedding.weight.data.copy_(table.to(self.device))

    # ------------------------------------------------------------------ scoring
    def scoring_embeddings(self) -> tuple[Tensor, Tensor]:
        if self.recommender is not None:
            return self.recommender.scoring_embeddings()
        table = self.e_init.to(self.device)
        return table[: self.num_users], table[self.num_users :]

    def artifacts(self) -> dict[str, Any]:
        settings = {"variant": self.variant, "pre_only": self.pre_only, "r": self.opt_rwr.r,
                    "init_mode": self.opt_init.mode, "finetune_model": self.opt_finetune.model,
                    "finetune_layers": self.opt_finetune.num_layers}
        out: dict[str, Any] = {"pcrec.json": {"settings": settings, "pretrain": self.pretrain_info, "init": self.init_info}}
        if self.save_embeddings and self.pretrained_embeddings is not None:
            out["pretrained_embeddings.parquet"] = self.embedding_table(self.pretrained_embeddings)
        return out

    def embedding_table(self, vectors: Tensor) -> pd.DataFrame:
        """One row per target-graph node: kind, id, raw token, isolated, e0..e{d-1}."""
        u, items = self.num_users, self.num_target_items
        target = self.data.target_domain
        frame = pd.DataFrame({
            "kind": ["user"] * u + ["item"] * items,
            "id": np.concatenate([np.arange(u), np.arange(items)]),
            "token": np.concatenate([self.data.user_tokens, self.data.item_tokens[target]]).astype(str),
            "isolated": (self.target_graph.degree == 0).numpy(),
        })
        values = pd.DataFrame(vectors.numpy(), columns=[f"e{j}" for j in range(vectors.shape[1])])
        return pd.concat([frame, values], axis=1)

    # ------------------------------------------------------------------ state
    def modules(self) -> list[torch.nn.Module]:
        return [self.moco] + ([self.recommender.encoder] if self.recommender is not None else [])

    def num_parameters(self) -> int:
        params = sum(p.numel() for p in self.moco.query.parameters())
        if self.recommender is not None:
            params += self.recommender.num_parameters()
        return params

    def state_dict(self) -> dict:
        return {
            "moco": self.moco.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "pretrain_step": self.pretrain_step,
            "pretrain_info": dict(self.pretrain_info),
            "e_init": self.e_init,
            "pretrained_embeddings": self.pretrained_embeddings,
            "init_info": dict(self.init_info),
            "recommender": self.recommender.state_dict() if self.recommender is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        # a cache hit in this run's setup holds the finished encoder: a checkpoint taken inside
        # an earlier pre-training of the same key must not replace it
        if not (self.cache_hit and state["pretrain_step"] < self.total_steps):
            self.moco.load_state_dict(state["moco"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.pretrain_step = state["pretrain_step"]
            self.pretrain_info = dict(state["pretrain_info"])
        self.e_init = state["e_init"]
        self.pretrained_embeddings = state["pretrained_embeddings"]
        self.init_info = dict(state["init_info"])
        if self.recommender is not None and state["recommender"] is not None:
            self.recommender.load_state_dict(state["recommender"])


def _derived_seed(seed: int, purpose: str) -> int:
    digest = hashlib.sha256(f"{int(seed)}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _data_fingerprint(data: CrossDomainData) -> str:
    """The prepared data's cache key, or (data built in memory) a hash of the source edges."""
    key = data.manifest.get("cache_key")
    if key:
        return str(key)
    rows = data.train(data.source_domains[0])
    digest = hashlib.sha256()
    digest.update(np.asarray([data.num_users, data.num_items(data.source_domains[0])]).tobytes())
    digest.update(rows.user.numpy().tobytes())
    digest.update(rows.item.numpy().tobytes())
    return "edges:" + digest.hexdigest()
