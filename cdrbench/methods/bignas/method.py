"""BiGNAS as a cdrbench method: bi-level CTR training of the cross-domain supernet.

Paper: Ge et al., "Behavior Importance-Aware Graph Neural Architecture Search for Cross-Domain
Recommendation", AAAI-25. Spec: ``shared/design/bignas.md``. The pure modules live beside this
file (:mod:`.supernet`, :mod:`.perceptron`, :mod:`.hypergrad`); this class is the procedure:

* **inner step** (every iteration, paper Eq. 5): the supernet, α and both CTR heads minimise
  ``mean BCE(target batch) + Σ γ_Si · BCE(source row i)``, with γ from the importance
  perceptron at its current parameters φ (φ gets no gradient here);
* **outer step** (every ``bilevel.outer_every`` iterations after ``bilevel.warmup_epochs``,
  paper Eqs. 7-12): φ takes one step along the implicit hypergradient of the target BCE on a
  development batch drawn from the target *training* rows, through a K-truncated Neumann series.

Who updates the perceptron: in the paper (Eqs. 7-12) and in the authors' code alike, φ moves only
by the hypergradient; the training loss's gradient on φ is never applied (the authors' code
computes it and then overwrites ``φ.grad`` before the outer step). Here φ has
``requires_grad=False`` during inner steps, so that gradient is not even computed, and the outer
step overwrites ``φ.grad`` with the clipped hypergradient (tested). With
``perceptor.detach_inputs=false`` (both sources) the training loss still reaches the embeddings
*through* the perceptron's inputs.

Every difference between the paper and the authors' code is a named option below; the
``method.profile`` key of ``conf/method/bignas.yaml`` sets them all at once (``paper`` or
``refcode``). The ablations of the paper's Figure 2 are ``variant``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from cdrbench.data.dataset import CrossDomainData
from cdrbench.errors import ConfigError
from cdrbench.methods.base import Method, Phase, Progress
from cdrbench.methods.options import build_options, check_choices
from cdrbench.methods.bignas.hypergrad import apply_hypergradient, neumann_hypergradient
from cdrbench.methods.bignas.perceptron import ImportancePerceptron, train_union_edge_index, uniform_weights
from cdrbench.methods.bignas.supernet import SOURCE, TARGET, CrossDomainSupernet, CTRPredictor, pair_repr

VARIANTS = ("full", "manual", "mix", "discrete", "no_source", "no_impo")


# ---------------------------------------------------------------------------- options
@dataclass
class ModelOptions:
    embedding_dim: int = 32
    hidden_dim: int = 32
    num_layers: int = 2
    #: candidate operations (paper: gat; the authors' code: gatv2)
    space: list = field(default_factory=lambda: ["gcn", "gat", "sage", "lightgcn", "linear"])
    sage_aggr: str = "mean"
    #: dropout on every op output before mixing
    dropout: float = 0.8
    batch_norm: bool = False
    share_op_weights_across_layers: bool = False
    #: one supernet propagation serves the source and the target batch of a step (the
    #: authors' code propagates twice, with separate dropout masks)
    shared_forward_per_step: bool = True
    #: CTR head: mlp (paper) | linear_leaky (authors' code)
    predictor_kind: str = "mlp"
    predictor_hidden: list = field(default_factory=lambda: [64])


@dataclass
class ArchOptions:
    #: weight decay also pulls α towards uniform (same optimiser as θ, as in the authors' code)
    alpha_weight_decay: bool = True
    #: the op of the MANUAL variant (one op for every layer of both supernets)
    manual_op: Optional[str] = None
    #: DISCRETE variant: α searched on the training loss (train) or by first-order DARTS steps
    #: on validation batches (valid_first_order)
    discrete_alpha_objective: str = "train"
    #: valid_first_order: Adam on α (DARTS values)
    darts_lr: float = 3.0e-4
    darts_weight_decay: float = 1.0e-3


@dataclass
class PerceptorOptions:
    #: three_level (paper Eq. 6) | item_only (authors' code)
    form: str = "three_level"
    #: the perceptron's GraphSAGE graph: train_union (paper G_train) | source (authors' code)
    graph: str = "train_union"
    norm: str = "batch_softmax"
    gnn_aggr: str = "max"
    gnn_layers: int = 2
    hidden: int = 16
    #: cut the training loss's gradient into the perceptron's inputs
    detach_inputs: bool = False


@dataclass
class TrainOptions:
    #: target-train rows per inner step
    batch_size: int = 1024
    #: refcode: source batch = floor(batch_size * N_target_train / N_source), epochs zip the two
    #: loaders (stop at the shorter); cover_both: ceil(batch_size * N_source / N_target_train)
    source_batch_rule: str = "refcode"
    #: learning-rate schedule: cosine annealing stepped per epoch (authors' code: T_max = 1000)
    cosine_t_max: int = 1000


@dataclass
class BilevelOptions:
    #: epochs without outer steps (paper 10, authors' code 0)
    warmup_epochs: int = 10
    #: source weights during warm-up: perceptor (frozen, initial φ) | uniform
    warmup_weights: str = "perceptor"
    #: global inner iterations between outer steps
    outer_every: int = 20
    #: development batch size (target-train rows, a separate persistent iterator)
    meta_batch_size: int = 512
    neumann_k: int = 3
    #: Neumann step η (paper Eq. 11: 1; authors' code: --hpo-lr 0.001)
    neumann_eta: float = 1.0
    scale_series_by_eta: bool = False
    outer_lr: float = 1.0e-3
    outer_weight_decay: float = 1.0e-3
    outer_clip_norm: float = 10.0
    #: W of the hypergradient: shared (all but the prediction heads) | all
    inner_params: str = "shared"
    #: dev loss through the target head (target) or a BIAO-style replace head (replace)
    dev_head: str = "target"
    replace_head_steps: int = 30
    #: train the replace head although dev_head=target (authors' code: dead computation)
    run_unused_replace_head: bool = False


class BatchStream:
    """Endless shuffled minibatches of ``range(n)``, reshuffled when exhausted (a persistent
    iterator across epochs); its position is part of the method state."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.perm: Optional[Tensor] = None
        self.pos = 0

    def next(self) -> Tensor:
        if self.perm is None or self.pos >= self.n:
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.pos = 0
        batch = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return batch

    def state_dict(self) -> dict:
        return {"perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.perm, self.pos = state["perm"], state["pos"]


@dataclass
class _Rows:
    user: Tensor
    item: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.user)

    def take(self, index: Tensor, device) -> "_Rows":
        return _Rows(self.user[index].to(device), self.item[index].to(device), self.y[index].to(device))


# ---------------------------------------------------------------------------- method
class BiGNAS(Method):
    """BiGNAS (see the module docstring). Arguments are the groups of ``conf/method/bignas.yaml``.

    Args:
        optimizer: ``optimizer(params)`` for θ (supernets, α, embeddings, fusion, heads).
        profile: ``paper`` | ``refcode``; a label here (the YAML resolves the flag values).
        variant: ``full`` | ``manual`` | ``mix`` | ``discrete`` | ``no_source`` | ``no_impo``.
        model, arch, perceptor, train, bilevel: option groups (see the dataclasses above).
    """

    tasks = frozenset({"ctr", "topn"})
    uses_source_by_default = True

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        profile: str = "paper",
        variant: str = "full",
        model: Optional[dict] = None,
        arch: Optional[dict] = None,
        perceptor: Optional[dict] = None,
        train: Optional[dict] = None,
        bilevel: Optional[dict] = None,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"method.variant={variant!r} is not one of {list(VARIANTS)}")
        self.optimizer_factory = optimizer
        self.profile = profile
        self.variant = variant
        self.opt_model = build_options(ModelOptions, model, "model")
        self.opt_arch = build_options(ArchOptions, arch, "arch")
        self.opt_perceptor = build_options(PerceptorOptions, perceptor, "perceptor")
        self.opt_train = build_options(TrainOptions, train, "train")
        self.opt_bilevel = build_options(BilevelOptions, bilevel, "bilevel")
        self._check_options()
        self.use_source = variant != "no_source"
        self.use_perceptron = variant not in ("no_source", "no_impo")
        self._cache: Optional[Tensor] = None

    def _check_options(self) -> None:
        checks = [
            ("method.model.predictor_kind", self.opt_model.predictor_kind, ("mlp", "linear_leaky")),
            ("method.perceptor.form", self.opt_perceptor.form, ("three_level", "item_only")),
            ("method.perceptor.graph", self.opt_perceptor.graph, ("train_union", "source")),
            ("method.train.source_batch_rule", self.opt_train.source_batch_rule, ("refcode", "cover_both")),
            ("method.bilevel.warmup_weights", self.opt_bilevel.warmup_weights, ("perceptor", "uniform")),
            ("method.bilevel.inner_params", self.opt_bilevel.inner_params, ("shared", "all")),
            ("method.bilevel.dev_head", self.opt_bilevel.dev_head, ("target", "replace")),
            ("method.arch.discrete_alpha_objective", self.opt_arch.discrete_alpha_objective, ("train", "valid_first_order")),
        ]
        check_choices(checks)
        if self.variant == "manual" and not self.opt_arch.manual_op:
            raise ConfigError("method.variant=manual needs method.arch.manual_op (one of the candidate ops)")
        if self.opt_bilevel.outer_every < 1 or self.opt_bilevel.neumann_k < 0:
            raise ConfigError("method.bilevel.outer_every must be >= 1 and neumann_k >= 0")

    # ------------------------------------------------------------------ setup
    def setup(self, data: CrossDomainData, device: torch.device, seed: int) -> None:
        if not data.has_labels:
            raise ConfigError(f"bignas predicts clicks: data '{data.name}' needs labels (data.label_threshold)")
        if self.use_source and len(data.source_domains) != 1:
            raise ConfigError(
                f"bignas needs exactly one source domain, data '{data.name}' has {data.source_domains} "
                "(or use method.variant=no_source)"
            )
        self.data, self.device, self.seed = data, device, seed
        target = data.target_domain
        self.num_users = data.num_users
        self.num_target_items = data.num_items(target)
        self.g_t = data.bipartite_graph(target).to(device)
        rows_t = data.train(target)
        self.target_rows = _Rows(rows_t.user, rows_t.item, rows_t.y)
        self.valid_rows = _Rows(*(getattr(data.rows(target, "valid"), k) for k in ("user", "item", "y")))
        if self.use_source:
            source = data.source_domains[0]
            self.num_source_items = data.num_items(source)
            self.g_s = data.bipartite_graph(source).to(device)
            rows_s = data.train(source)
            self.source_rows = _Rows(rows_s.user, rows_s.item, rows_s.y)
            self.src_batch = self._source_batch_size(self.opt_train.batch_size)
            self.outer_src_batch = self._source_batch_size(self.opt_bilevel.meta_batch_size)
            if self.use_perceptron:
                if self.opt_perceptor.form == "three_level" and self.opt_perceptor.graph == "train_union":
                    self.perceptron_edges = train_union_edge_index(self.g_s, self.g_t)
                else:
                    self.perceptron_edges = self.g_s.edge_index
        else:
            self.num_source_items = 0
            self.g_s = None
        self.layer_ops: Optional[dict] = None
        self.history: list[dict] = []
        self._build(seed)

    def _source_batch_size(self, base: int) -> int:
        n_tt, n_s = len(self.target_rows), len(self.source_rows)
        if self.opt_train.source_batch_rule == "refcode":
            size = math.floor(base * n_tt / n_s)
        else:
            size = math.ceil(base * n_s / n_tt)
        if size < 1:
            raise ConfigError(
                f"method.train.source_batch_rule={self.opt_train.source_batch_rule}: the source batch rounds to 0 "
                f"({base} x {n_tt} target-train rows / {n_s} source rows); use cover_both"
            )
        return size

    def _space(self) -> list:
        return [self.opt_arch.manual_op] if self.variant == "manual" else list(self.opt_model.space)

    def _build(self, seed: int) -> None:
        """Fresh models, optimisers and iterators (called at setup and for the DISCRETE retrain)."""
        torch.manual_seed(seed)
        m = self.opt_model
        self.model = CrossDomainSupernet(
            self.num_users,
            {SOURCE: self.num_source_items, TARGET: self.num_target_items} if self.use_source else self.num_target_items,
            embedding_dim=m.embedding_dim, hidden_dim=m.hidden_dim, num_layers=m.num_layers, space=self._space(),
            dropout=m.dropout, batch_norm=m.batch_norm, sage_aggr=m.sage_aggr,
            share_op_weights_across_layers=m.share_op_weights_across_layers, use_source=self.use_source,
            learn_alpha=self.variant != "mix", layer_ops=self.layer_ops,
        ).to(self.device)
        in_dim = 2 * self.model.out_dim
        domains = [SOURCE, TARGET] if self.use_source else [TARGET]
        self.heads = torch.nn.ModuleDict(
            {d: CTRPredictor(in_dim, m.predictor_kind, list(m.predictor_hidden)) for d in domains}
        ).to(self.device)
        self.perceptron: Optional[ImportancePerceptron] = None
        if self.use_perceptron:
            p = self.opt_perceptor
            self.perceptron = ImportancePerceptron(
                p.form, self.num_users, self.num_source_items, self.num_target_items, rep_dim=self.model.out_dim,
                emb_dim=m.embedding_dim, hidden=p.hidden, gnn_layers=p.gnn_layers, gnn_aggr=p.gnn_aggr, norm=p.norm,
            ).to(self.device)
            self.perceptron.requires_grad_(False)  # φ moves only by the hypergradient
            b = self.opt_bilevel
            self.outer_optimizer = torch.optim.Adam(
                self.perceptron.parameters(), lr=b.outer_lr, weight_decay=b.outer_weight_decay
            )
        need_replace = self.use_perceptron and (
            self.opt_bilevel.dev_head == "replace" or self.opt_bilevel.run_unused_replace_head
        )
        self.replace_head = CTRPredictor(in_dim, m.predictor_kind, list(m.predictor_hidden)).to(self.device) if need_replace else None
        if self.replace_head is not None:
            self.replace_optimizer = torch.optim.Adam(self.replace_head.parameters(), lr=1e-3)
            self.replace_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.replace_optimizer, T_max=10)

        arch = self.model.arch_parameters()
        arch_ids = {id(p) for p in arch}
        others = [p for p in self.model.parameters() if id(p) not in arch_ids] + list(self.heads.parameters())
        self.darts = self.variant == "discrete" and self.layer_ops is None and \
            self.opt_arch.discrete_alpha_objective == "valid_first_order"
        groups = [{"params": others}]
        if arch and not self.darts:
            groups.append({"params": arch} if self.opt_arch.alpha_weight_decay else {"params": arch, "weight_decay": 0.0})
        self.optimizer = self.optimizer_factory(params=groups)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.opt_train.cosine_t_max)
        if self.darts and arch:
            self.arch_optimizer = torch.optim.Adam(
                arch, lr=self.opt_arch.darts_lr, betas=(0.5, 0.999), weight_decay=self.opt_arch.darts_weight_decay
            )
        self.generator = torch.Generator().manual_seed(seed)
        b = self.opt_bilevel
        n_tt = len(self.target_rows)
        self.dev_stream = BatchStream(n_tt, b.meta_batch_size, self.generator)
        self.outer_target_stream = BatchStream(n_tt, b.meta_batch_size, self.generator)
        self.replace_stream = BatchStream(n_tt, b.meta_batch_size, self.generator)
        self.outer_source_stream = (
            BatchStream(len(self.source_rows), self.outer_src_batch, self.generator) if self.use_source else None
        )
        self.valid_stream = BatchStream(len(self.valid_rows), self.opt_train.batch_size, self.generator)
        self.global_iteration = 0
        self.outer_steps = 0

    # ------------------------------------------------------------------ phases
    def phases(self) -> list[Phase]:
        if self.variant == "discrete":
            return [Phase("search"), Phase("retrain")]
        return [Phase("train")]

    def start_phase(self, phase: Phase) -> None:
        if phase.name == "retrain":
            self.layer_ops = self.derive_discrete_ops()
            self._build(self.seed)

    def derive_discrete_ops(self) -> dict:
        """DARTS derivation: per domain and layer the argmax of α (ties: first in the op list)."""
        ops = {}
        for domain in self.model.domains:
            net = self.model.supernets[domain]
            weights = net.op_weights().detach().cpu()
            ops[domain] = [net.space[int(torch.argmax(weights[i]))] for i in range(net.num_layers)]
        return ops

    # ------------------------------------------------------------------ losses
    def _logits(self, reps: Tensor, head: torch.nn.Module, rows: _Rows) -> Tensor:
        return head(pair_repr(reps, rows.user, rows.item, self.num_users))

    def _target_loss(self, reps_t: Tensor, rows: _Rows, head: Optional[torch.nn.Module] = None) -> Tensor:
        logits = self._logits(reps_t, head if head is not None else self.heads[TARGET], rows)
        return F.binary_cross_entropy_with_logits(logits, rows.y)

    def source_weights(self, reps_s: Tensor, rows: _Rows, warm: bool = False) -> Tensor:
        """γ of a source batch: uniform (NO-IMPO, or warm-up with warmup_weights=uniform) or the
        perceptron's (paper Eq. 6 / the authors' item-only form; frozen during warm-up)."""
        if not self.use_perceptron or (warm and self.opt_bilevel.warmup_weights == "uniform"):
            return uniform_weights(len(rows), device=reps_s.device, dtype=reps_s.dtype)
        model = self.model
        return self.perceptron(
            rows.user, rows.item,
            user_emb=model.user_embedding.weight,
            source_item_emb=model.item_embeddings[SOURCE].weight,
            edge_index=self.perceptron_edges,
            target_item_emb=model.item_embeddings[TARGET].weight if self.opt_perceptor.form == "three_level" and self.opt_perceptor.graph == "train_union" else None,
            source_item_reps=reps_s[self.num_users :] if self.opt_perceptor.form == "three_level" else None,
            detach_inputs=self.opt_perceptor.detach_inputs,
        )

    def _source_loss(self, reps_s: Tensor, rows: _Rows, warm: bool = False) -> tuple[Tensor, Tensor]:
        logits = self._logits(reps_s, self.heads[SOURCE], rows)
        per_row = F.binary_cross_entropy_with_logits(logits, rows.y, reduction="none")
        gamma = self.source_weights(reps_s, rows, warm)
        return (gamma * per_row).sum(), gamma

    # ------------------------------------------------------------------ training
    def _epoch_batches(self) -> list[tuple[Tensor, Optional[Tensor]]]:
        bs = self.opt_train.batch_size
        target = torch.randperm(len(self.target_rows), generator=self.generator).split(bs)
        if not self.use_source:
            return [(t, None) for t in target]
        source = torch.randperm(len(self.source_rows), generator=self.generator).split(self.src_batch)
        return list(zip(target, source))

    def train_epoch(self, phase: Phase, epoch: int, progress: Progress) -> dict[str, float]:
        self._train_mode(True)
        batches = self._epoch_batches()
        sums = {"loss": 0.0, "target_loss": 0.0, "source_loss": 0.0}
        outer_before = self.outer_steps
        hyper_norms = []
        for t_idx, s_idx in progress(batches, total=len(batches), desc=f"{phase.name} {epoch}"):
            t_rows = self.target_rows.take(t_idx, self.device)
            if self.opt_model.shared_forward_per_step or not self.use_source:
                reps_s, reps_t = self.model(self.g_s, self.g_t)
                reps_s_for_source = reps_s
            else:  # the authors' code: one propagation per batch, separate dropout masks
                reps_s_for_source, _ = self.model(self.g_s, self.g_t)
                _, reps_t = self.model(self.g_s, self.g_t)
            loss_t = self._target_loss(reps_t, t_rows)
            loss = loss_t
            if self.use_source:
                warm = epoch < self.opt_bilevel.warmup_epochs
                loss_s, _ = self._source_loss(reps_s_for_source, self.source_rows.take(s_idx, self.device), warm)
                loss = loss + loss_s
                sums["source_loss"] += float(loss_s.detach())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            sums["loss"] += float(loss.detach())
            sums["target_loss"] += float(loss_t.detach())
            if self.darts:
                self._darts_step()
            self.global_iteration += 1
            if (
                self.use_perceptron
                and epoch >= self.opt_bilevel.warmup_epochs
                and self.global_iteration % self.opt_bilevel.outer_every == 0
            ):
                hyper_norms.append(self.outer_step())
        self.scheduler.step()
        n = max(1, len(batches))
        stats = {k: v / n for k, v in sums.items()}
        stats["iterations"] = float(len(batches))
        stats["outer_steps"] = float(self.outer_steps - outer_before)
        if hyper_norms:
            stats["hypergrad_norm"] = float(np.mean(hyper_norms))
        if self.perceptron is not None:
            stats["gamma_S"] = float(F.relu(self.perceptron.domain_weight.detach()))
        self.history.append({"phase": phase.name, "epoch": epoch, "alpha": self.model.alpha_dict(),
                             "ops": self.layer_ops or self.model.space, "gamma_S": stats.get("gamma_S")})
        return stats

    def _darts_step(self) -> None:
        """First-order DARTS: α takes one step on the BCE of a validation batch."""
        rows = self.valid_rows.take(self.valid_stream.next(), self.device)
        _, reps_t = self.model(self.g_s, self.g_t)
        loss = self._target_loss(reps_t, rows)
        self.arch_optimizer.zero_grad(set_to_none=True)
        grads = torch.autograd.grad(loss, self.model.arch_parameters(), allow_unused=True)
        for p, g in zip(self.model.arch_parameters(), grads):
            p.grad = g
        self.arch_optimizer.step()

    def _train_replace_head(self) -> None:
        """BIAO's replace head: trained on target-train batches before an outer step."""
        self.replace_head.train()
        for _ in range(self.opt_bilevel.replace_head_steps):
            rows = self.target_rows.take(self.replace_stream.next(), self.device)
            with torch.no_grad():
                _, reps_t = self.model(self.g_s, self.g_t)
            loss = self._target_loss(reps_t, rows, head=self.replace_head)
            self.replace_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.replace_optimizer.step()
        self.replace_scheduler.step()

    def inner_parameters(self) -> list[Tensor]:
        """W of the hypergradient (``bilevel.inner_params``)."""
        params = list(self.model.shared_parameters())
        if self.opt_bilevel.inner_params == "all":
            params += list(self.heads.parameters())
        return [p for p in params if p.requires_grad]

    def outer_step(self) -> float:
        """One implicit-gradient step of φ (spec §4.3); returns the hypergradient's norm."""
        b = self.opt_bilevel
        if self.replace_head is not None:
            self._train_replace_head()
        self.perceptron.requires_grad_(True)
        try:
            dev_rows = self.target_rows.take(self.dev_stream.next(), self.device)
            _, reps_t = self.model(self.g_s, self.g_t)
            dev_head = self.replace_head if b.dev_head == "replace" else self.heads[TARGET]
            dev_loss = self._target_loss(reps_t, dev_rows, head=dev_head)
            t_rows = self.target_rows.take(self.outer_target_stream.next(), self.device)
            s_rows = self.source_rows.take(self.outer_source_stream.next(), self.device)
            reps_s, reps_t = self.model(self.g_s, self.g_t)
            loss_s, _ = self._source_loss(reps_s, s_rows)
            main_loss = self._target_loss(reps_t, t_rows) + loss_s
            phi = list(self.perceptron.parameters())
            grads = neumann_hypergradient(
                dev_loss, main_loss, self.inner_parameters(), phi, k=b.neumann_k, eta=b.neumann_eta,
                scale_series_by_eta=b.scale_series_by_eta,
            )
            norm = apply_hypergradient(phi, grads, self.outer_optimizer, clip_norm=b.outer_clip_norm)
        finally:
            self.perceptron.requires_grad_(False)
        self.outer_steps += 1
        return float(norm)

    def _train_mode(self, flag: bool) -> None:
        for module in self.modules():
            module.train(flag)

    # ------------------------------------------------------------------ scoring
    def prepare_scoring(self) -> None:
        _, self._cache = self.model(self.g_s, self.g_t)
        self._head_halves = None

    def clear_scoring(self) -> None:
        self._cache = None
        self._head_halves = None

    def _first_layer_halves(self) -> tuple[Tensor, Tensor]:
        """User and item halves of the target head's first layer for every user and item,
        computed once per evaluation (so scores do not depend on how users are chunked)."""
        if getattr(self, "_head_halves", None) is None:
            reps, first = self._cache, self.heads[TARGET].net[0]
            half = reps.shape[1]
            users, items = reps[: self.num_users], reps[self.num_users :]
            self._head_halves = (users @ first.weight[:, :half].T, items @ first.weight[:, half:].T + first.bias)
        return self._head_halves

    def predict_ctr(self, users: Tensor, items: Tensor) -> Tensor:
        reps = pair_repr(self._cache, users.to(self.device), items.to(self.device), self.num_users)
        return torch.sigmoid(self.heads[TARGET](reps))

    def score_users(self, users: Tensor) -> Tensor:
        r"""Logits of the target CTR head for every target item, ``[len(users), I_t]`` (top-N).

        The head's first layer acts on :math:`h_u \| h_v`, so it splits into a user half and an
        item half, :math:`W[h_u \| h_v] + b = W_u h_u + (W_v h_v + b)`: both halves are computed
        once per evaluation, and the rest of the head runs on one user's row of items at a time
        (a fixed shape, so a user's scores are bit-identical however the evaluator chunks users).
        The logit orders items exactly as the click probability :meth:`predict_ctr` does."""
        rest = self.heads[TARGET].net[1:]
        all_users, item_part = self._first_layer_halves()
        rows = [rest(all_users[u] + item_part).squeeze(-1) for u in users.tolist()]
        return torch.stack(rows) if rows else item_part.new_zeros((0, item_part.shape[0]))

    # ------------------------------------------------------------------ interpretability
    def importance_table(self) -> Optional[pd.DataFrame]:
        """γ of every source training row, scored in one batch: ``relative_weight`` is the row's
        softmax weight times the number of rows (1 = average importance), ``gamma_S`` the
        domain weight ReLU(γ_S)."""
        if self.perceptron is None:
            return None
        self._train_mode(False)
        with torch.no_grad():
            reps_s, _ = self.model(self.g_s, self.g_t)
            rows = _Rows(self.source_rows.user.to(self.device), self.source_rows.item.to(self.device), self.source_rows.y)
            gamma = self.source_weights(reps_s, rows)
        self._train_mode(True)
        domain_weight = float(F.relu(self.perceptron.domain_weight))
        relative = gamma.cpu().numpy() / max(domain_weight, 1e-12) * len(rows)
        return pd.DataFrame({
            "user": self.source_rows.user.numpy(), "item": self.source_rows.item.numpy(),
            "y": self.source_rows.y.numpy().astype(np.int8), "relative_weight": relative,
            "gamma_S": domain_weight,
        })

    def artifacts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"alpha.jsonl": list(self.history)}
        table = self.importance_table()
        if table is not None:
            out["importance.parquet"] = table
        if self.layer_ops is not None:
            out["discrete_ops.json"] = dict(self.layer_ops)
        return out

    # ------------------------------------------------------------------ state
    def modules(self) -> list[torch.nn.Module]:
        mods = [self.model, self.heads]
        if self.perceptron is not None:
            mods.append(self.perceptron)
        if self.replace_head is not None:
            mods.append(self.replace_head)
        return mods

    def state_dict(self) -> dict:
        state = {
            "layer_ops": self.layer_ops,
            "model": self.model.state_dict(),
            "heads": self.heads.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "streams": {name: getattr(self, name).state_dict() for name in self._stream_names()},
            "global_iteration": self.global_iteration,
            "outer_steps": self.outer_steps,
            "history": list(self.history),
        }
        if self.perceptron is not None:
            state["perceptron"] = self.perceptron.state_dict()
            state["outer_optimizer"] = self.outer_optimizer.state_dict()
        if self.replace_head is not None:
            state["replace_head"] = self.replace_head.state_dict()
            state["replace_optimizer"] = self.replace_optimizer.state_dict()
            state["replace_scheduler"] = self.replace_scheduler.state_dict()
        if self.darts:
            state["arch_optimizer"] = self.arch_optimizer.state_dict()
        return state

    def _stream_names(self) -> list[str]:
        names = ["dev_stream", "outer_target_stream", "replace_stream", "valid_stream"]
        return names + (["outer_source_stream"] if self.use_source else [])

    def load_state_dict(self, state: dict) -> None:
        if state["layer_ops"] != self.layer_ops:  # a checkpoint of the DISCRETE retrain phase
            self.layer_ops = state["layer_ops"]
            self._build(self.seed)
        self.model.load_state_dict(state["model"])
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        for name in self._stream_names():
            getattr(self, name).load_state_dict(state["streams"][name])
        self.global_iteration = state["global_iteration"]
        self.outer_steps = state["outer_steps"]
        self.history = list(state["history"])
        if self.perceptron is not None:
            self.perceptron.load_state_dict(state["perceptron"])
            self.outer_optimizer.load_state_dict(state["outer_optimizer"])
        if self.replace_head is not None:
            self.replace_head.load_state_dict(state["replace_head"])
            self.replace_optimizer.load_state_dict(state["replace_optimizer"])
            self.replace_scheduler.load_state_dict(state["replace_scheduler"])
        if self.darts:
            self.arch_optimizer.load_state_dict(state["arch_optimizer"])
