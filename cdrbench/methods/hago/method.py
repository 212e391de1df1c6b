"""HAGO as a cdrbench method: multi-domain pre-training with heterogeneous adaptive graph
coordinators, then graph-prompt tuning on the target domain.

Paper: Zhang et al., "Adaptive Graph Integration for Cross-Domain Recommendation via Heterogeneous
Graph Coordinators", SIGIR 2025. Spec: ``shared/design/hago.md``. The pure modules live beside this
file (:mod:`.coordinators`, :mod:`.encoders`, :mod:`.pretrain`, :mod:`.prompt`); this class is the
procedure, in two phases:

* ``pretrain`` (``Phase(select=False)``, ``pretrain.epochs`` = 30): the self-supervised objective
  over the unified graph of every source domain and the target *training* rows, all tables and
  the coordinators trainable. The result is stored in the content-hashed artifact cache; a hit
  makes this phase 0 epochs long.
* ``tune`` (selected on ``tune.valid_metric``, NDCG@10): only the prompt vectors train, over the
  frozen pre-trained tables and encoder; BPR with ``tune.neg_per_pos`` uniform negatives plus
  ``tune.reg_weight`` times the regulariser of ``tune.reg_form``.

Variants (spec §7, ``method.variant``): ``hago`` (everything), ``heter_go`` (the same coordinators,
every coordinator-node weight fixed to 1), ``homo_go`` (2K homogeneous coordinators per domain
linked with weight 1 to all its users and items), ``wo_go`` (no coordinators: the union graph of
all domains, or one graph per domain with ``wo_go.graph=separate``), ``backbone`` (no
pre-training: LightGCN-single — or ``encoder.name`` — trained end to end on the target graph).

Determinism: the method owns three generators (anchor order, augmentations, tuning samples),
derived from the seed and saved in its state; the tuning phase's initialisation uses its own
derived seed too, so a run whose pre-training came from the cache tunes exactly as the run that
stored it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import pandas as pd
import torch
from torch import Tensor

from cdrbench.data.dataset import CrossDomainData
from cdrbench.errors import ConfigError
from cdrbench.methods.base import DotProductScoring, Method, Phase, Progress
from cdrbench.methods.hago import coordinators as coordinators_module
from cdrbench.methods.hago import encoders as encoders_module
from cdrbench.methods.hago import pretrain as pretrain_module
from cdrbench.methods.hago.coordinators import HOMO_LINKS, NodeLayout, build_unified_graph, coordinator_weight_table
from cdrbench.methods.hago.encoders import COMBINATIONS, ENCODERS, WeightedGraph, make_encoder
from cdrbench.methods.hago.pretrain import (
    ANCHOR_ORDERS, OBJECTIVES, GraphAugmentation, GraphPart, MultiDomainPretraining, anchor_batches, make_objective,
)
from cdrbench.methods.hago.prompt import PROMPT_INITS, REG_FORMS, GraphPrompt, TargetRecommender, TrainableInputs
from cdrbench.methods.options import build_options, check_choices
from cdrbench.models import losses as losses_module
from cdrbench.models import sparse as sparse_module
from cdrbench.train.sampling import NegativeSampler, bpr_triples

VARIANTS = ("hago", "backbone", "wo_go", "homo_go", "heter_go")
WIRING = {"hago": "heterogeneous", "heter_go": "heterogeneous", "homo_go": "homogeneous", "wo_go": "none"}
ITEM_WEIGHT_SOURCES = ("item_coords", "user_coords_refcode")
WO_GO_GRAPHS = ("union", "separate")
TUNE_GRAPHS = ("target", "unified")
PRETRAINED_SOURCES = ("ego", "encoder_output")
CACHE_NAMESPACE = "hago"


# ---------------------------------------------------------------------------- options
@dataclass
class ModelOptions:
    embedding_dim: int = 64
    #: K, coordinators of each type per domain (Figure 3 sweeps it)
    num_coords: int = 5


@dataclass
class EncoderOptions:
    #: lightgcn | gcn | gat (Table 4)
    name: str = "lightgcn"
    num_layers: int = 2
    #: last (LightGCN-single: the paper and the reference code) | mean (standard LightGCN)
    layer_combination: str = "last"


@dataclass
class CoordOptions:
    #: item_coords (correct cosine) | user_coords_refcode (the reference code's bug, flag 3)
    item_weight_source: str = "item_coords"
    #: stop-gradient on the node side of the weights (flag 11)
    detach_node: bool = True


@dataclass
class WoGoOptions:
    #: union (one user-item graph of all domains) | separate (one graph per domain, losses summed)
    graph: str = "union"


@dataclass
class HomoGoOptions:
    #: complete (every pair of distinct coordinators linked) | none
    coord_links: str = "complete"


@dataclass
class AugOptions:
    #: p_e: probability of dropping each directed entry
    edge_drop: float = 0.3
    #: p_f: probability of zeroing each embedding column
    feature_mask: float = 0.1
    #: drop both directions of an edge together (flag 12; the reference code drops per direction)
    edge_drop_symmetric: bool = False


@dataclass
class BGRLOptions:
    dropout: float = 0.2
    ema: float = 0.99


@dataclass
class COSTAOptions:
    #: k = floor(ratio * B) sketched rows
    ratio: float = 0.5


@dataclass
class PretrainOptions:
    #: grace (paper) | bgrl | costa (Table 5)
    method: str = "grace"
    lr: float = 0.005
    batch_size: int = 1024
    epochs: int = 30
    tau: float = 0.1
    #: users_then_items (reference code) | mixed (flag 10)
    anchor_order: str = "users_then_items"
    #: an isolated padding user and item that are anchors (RecBole's id 0; flag 9)
    pad_node: bool = True
    aug: Any = field(default_factory=dict)
    bgrl: Any = field(default_factory=dict)
    costa: Any = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, cls in (("aug", AugOptions), ("bgrl", BGRLOptions), ("costa", COSTAOptions)):
            value = getattr(self, name)
            if not isinstance(value, cls):
                setattr(self, name, build_options(cls, value, f"pretrain.{name}"))


@dataclass
class TuneOptions:
    lr: float = 0.01
    batch_size: int = 4096
    max_epochs: int = 300
    reg_weight: float = 0.01
    #: batch_frobenius (reference code, RecBole EmbLoss) | squared_l2 (flag 5)
    reg_form: str = "batch_frobenius"
    #: target (the target-train graph) | unified (the pre-training graph; flag 4)
    graph: str = "target"
    #: xavier_normal (reference code) | zeros (flag 13)
    prompt_init: str = "xavier_normal"
    #: ego (pre-trained ID tables) | encoder_output (the pre-trained encoder's output; flag 14)
    pretrained_source: str = "ego"
    #: model selection and early stopping; read by the trainer through conf/method/hago.yaml
    valid_metric: str = "ndcg@10"
    stopping_step: int = 10
    neg_per_pos: int = 1


def _derived_seed(seed: int, stream: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{stream}".encode()).digest()[:8], "little") >> 1


def _generator(seed: int, stream: str, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(_derived_seed(seed, stream))


# ---------------------------------------------------------------------------- method
class HAGO(DotProductScoring, Method):
    """HAGO (see the module docstring). Arguments are the groups of ``conf/method/hago.yaml``.

    Args:
        optimizer: ``optimizer(params, lr=...)`` builds both stages' optimisers (Adam, weight decay
            0 in the reference code); ``pretrain.lr`` and ``tune.lr`` set the rates.
        profile: ``paper`` | ``refcode``; a label here (the YAML resolves the flag values).
        variant: ``hago`` | ``backbone`` | ``wo_go`` | ``homo_go`` | ``heter_go``.
        model, encoder, coord, wo_go, homo_go, pretrain, tune: option groups (dataclasses above).
        save_embeddings: also write ``embeddings.parquet`` (pre-trained ID tables of every domain,
            tuned target representations) for t-SNE plots.
    """

    uses_source_by_default = True

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        profile: str = "paper",
        variant: str = "hago",
        model: Optional[dict] = None,
        encoder: Optional[dict] = None,
        coord: Optional[dict] = None,
        wo_go: Optional[dict] = None,
        homo_go: Optional[dict] = None,
        pretrain: Optional[dict] = None,
        tune: Optional[dict] = None,
        save_embeddings: bool = False,
    ):
        super().__init__()
        check_choices([("method.variant", variant, VARIANTS)])
        self.optimizer_factory = optimizer
        self.profile = profile
        self.variant = variant
        self.opt_model = build_options(ModelOptions, model, "model")
        self.opt_encoder = build_options(EncoderOptions, encoder, "encoder")
        self.opt_coord = build_options(CoordOptions, coord, "coord")
        self.opt_wo_go = build_options(WoGoOptions, wo_go, "wo_go")
        self.opt_homo_go = build_options(HomoGoOptions, homo_go, "homo_go")
        self.opt_pretrain = build_options(PretrainOptions, pretrain, "pretrain")
        self.opt_tune = build_options(TuneOptions, tune, "tune")
        self.save_embeddings = bool(save_embeddings)
        self._check_options()
        self.pretrainer: Optional[MultiDomainPretraining] = None
        self.pretrain_optimizer: Optional[torch.optim.Optimizer] = None
        self.tuner: Optional[TargetRecommender] = None
        self.tune_optimizer: Optional[torch.optim.Optimizer] = None
        self._cached_pretrain: Optional[dict] = None

    def _check_options(self) -> None:
        p, t = self.opt_pretrain, self.opt_tune
        check_choices([
            ("method.encoder.name", self.opt_encoder.name, ENCODERS),
            ("method.encoder.layer_combination", self.opt_encoder.layer_combination, COMBINATIONS),
            ("method.pretrain.method", p.method, OBJECTIVES),
            ("method.pretrain.anchor_order", p.anchor_order, ANCHOR_ORDERS),
            ("method.coord.item_weight_source", self.opt_coord.item_weight_source, ITEM_WEIGHT_SOURCES),
            ("method.wo_go.graph", self.opt_wo_go.graph, WO_GO_GRAPHS),
            ("method.homo_go.coord_links", self.opt_homo_go.coord_links, HOMO_LINKS),
            ("method.tune.reg_form", t.reg_form, REG_FORMS),
            ("method.tune.graph", t.graph, TUNE_GRAPHS),
            ("method.tune.prompt_init", t.prompt_init, PROMPT_INITS),
            ("method.tune.pretrained_source", t.pretrained_source, PRETRAINED_SOURCES),
        ])
        positive = [
            ("method.model.num_coords", self.opt_model.num_coords), ("method.model.embedding_dim", self.opt_model.embedding_dim),
            ("method.encoder.num_layers", self.opt_encoder.num_layers), ("method.pretrain.batch_size", p.batch_size),
            ("method.tune.batch_size", t.batch_size), ("method.tune.neg_per_pos", t.neg_per_pos),
        ]
        for key, value in positive:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                hint = " (no coordinators at all: method.variant=wo_go)" if key.endswith("num_coords") else ""
                raise ConfigError(f"{key}={value!r} is not allowed: it must be an integer >= 1{hint}")
        for key, value in (("method.pretrain.epochs", p.epochs), ("method.tune.max_epochs", t.max_epochs)):
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{key}={value!r} must be an integer >= 0")
        for key, value in (("method.pretrain.aug.edge_drop", p.aug.edge_drop), ("method.pretrain.aug.feature_mask", p.aug.feature_mask),
                           ("method.pretrain.bgrl.dropout", p.bgrl.dropout)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{key}={value!r} must be in [0, 1)")
        if not 0.0 <= p.bgrl.ema <= 1.0 or not 0.0 < p.costa.ratio <= 1.0 or p.tau <= 0:
            raise ConfigError("method.pretrain.bgrl.ema must be in [0, 1], method.pretrain.costa.ratio in (0, 1], "
                              "method.pretrain.tau > 0")
        if self.variant == "backbone" and t.graph == "unified":
            raise ConfigError("method.tune.graph=unified tunes on the pre-training graph: method.variant=backbone has none")

    # ------------------------------------------------------------------ setup
    def setup(self, data: CrossDomainData, device: torch.device, seed: int) -> None:
        target = data.target_domain
        if self.variant != "backbone" and not data.source_domains:
            raise ConfigError(f"method 'hago' pre-trains on source domains, but data '{data.name}' has none "
                              "(data.source is empty or data.use_source=false)")
        target_train = data.train(target)
        if len(target_train) == 0:
            raise ConfigError(f"data '{data.name}': the target domain '{target}' (data.target) has no training rows "
                              "after data.split; HAGO tunes on them")
        self.data, self.device, self.seed = data, device, seed
        self.num_users, self.num_target_items = data.num_users, data.num_items(target)
        self.train_users, self.train_items = target_train.user, target_train.item
        self.pretrain_generator = _generator(seed, "anchors", torch.device("cpu"))
        self.aug_generator = _generator(seed, "augmentation", device)
        self.tune_generator = _generator(seed, "tune", torch.device("cpu"))
        self.sampler = NegativeSampler.single_domain(self.train_users, self.train_items, self.num_target_items,
                                                     self.tune_generator)
        target_layout = NodeLayout(self.num_users, [target], [target], {target: self.num_target_items}, pad_node=False)
        users, items = target_train.user, target_layout.item_nodes(target, target_train.item)
        self.target_graph = build_unified_graph(target_layout, {target: (users, items)}, {}, "none").to(device)
        self.pretrainer = self.pretrain_optimizer = self.tuner = self.tune_optimizer = None
        self._cached_pretrain = None
        if self.variant != "backbone":
            torch.manual_seed(seed)
            self.pretrainer = self._build_pretrainer(data).to(device)
            self.pretrain_optimizer = self._optimizer(self.pretrainer.parameters(), self.opt_pretrain.lr)
            self._cached_pretrain = self._load_cached()

    def _optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=[p for p in params if p.requires_grad], lr=lr)

    def _build_pretrainer(self, data: CrossDomainData) -> MultiDomainPretraining:
        target, domains = data.target_domain, data.domains
        wiring = WIRING[self.variant]
        k = self.opt_model.num_coords
        layout = NodeLayout(
            data.num_users, domains, [target, *data.source_domains], {d: data.num_items(d) for d in domains},
            pad_node=self.opt_pretrain.pad_node, num_coords=0 if wiring == "none" else 2 * len(domains) * k,
        )
        interactions, members = {}, {}
        for domain in domains:
            rows = data.train(domain)  # the target's training rows only
            item_nodes = layout.item_nodes(domain, rows.item)
            interactions[domain] = (rows.user, item_nodes)
            members[domain] = (torch.unique(rows.user), torch.unique(item_nodes))
        if self.variant == "wo_go" and self.opt_wo_go.graph == "separate":
            parts = []
            for domain in domains:
                mask = torch.zeros(layout.num_nodes, dtype=torch.bool)
                mask[members[domain][0]] = True
                mask[members[domain][1]] = True
                graph = build_unified_graph(layout, {domain: interactions[domain]}, {}, "none")
                parts.append(GraphPart(graph, mask))
        else:
            graph = build_unified_graph(layout, interactions, members, wiring, k, self.opt_homo_go.coord_links)
            parts = [GraphPart(graph)]
        e, p, d = self.opt_encoder, self.opt_pretrain, self.opt_model.embedding_dim
        return MultiDomainPretraining(
            layout, [part.to(self.device) for part in parts],
            encoder=make_encoder(e.name, d, e.num_layers, e.layer_combination),
            objective=make_objective(p.method, d, p.tau, p.bgrl.dropout, p.costa.ratio),
            augmentation=GraphAugmentation(p.aug.edge_drop, p.aug.feature_mask, p.aug.edge_drop_symmetric),
            embedding_dim=d, adaptive=self.variant == "hago", detach_node=self.opt_coord.detach_node,
            item_weight_source=self.opt_coord.item_weight_source, ema=p.bgrl.ema,
        )

    # ------------------------------------------------------------------ pre-training cache
    def cache_parts(self) -> Optional[dict]:
        """Everything that determines the pre-trained weights (``None``: data without a cache key)."""
        data_key = (self.data.manifest or {}).get("cache_key")
        if data_key is None:
            return None
        p = self.opt_pretrain
        pretrain = {k: v for k, v in asdict(p).items() if k not in ("bgrl", "costa", "tau")}
        if p.method in ("grace", "costa"):
            pretrain["tau"] = p.tau
        if p.method in ("bgrl", "costa"):
            pretrain[p.method] = asdict(getattr(p, p.method))
        model = {"embedding_dim": self.opt_model.embedding_dim}
        if WIRING[self.variant] != "none":
            model["num_coords"] = self.opt_model.num_coords
        parts = {
            "data": data_key, "variant": self.variant, "model": model, "encoder": asdict(self.opt_encoder),
            "pretrain": pretrain, "optimizer": _factory_identity(self.optimizer_factory), "seed": self.seed,
            "code": _pretraining_code_hash(),
        }
        if self.variant == "hago":
            parts["coord"] = asdict(self.opt_coord)
        if self.variant in ("wo_go", "homo_go"):
            parts[self.variant] = asdict(self.opt_wo_go if self.variant == "wo_go" else self.opt_homo_go)
        return parts

    def _load_cached(self) -> Optional[dict]:
        parts = self.cache_parts() if self.artifact_cache is not None else None
        if parts is None:
            return None
        state = self.artifact_cache.load(CACHE_NAMESPACE, parts)
        if state is not None:
            self.pretrainer.load_state_dict(state["pretrainer"], strict=True)
        return state

    # ------------------------------------------------------------------ phases
    def phases(self) -> list[Phase]:
        pretrain_epochs = 0 if self.pretrainer is None or self._cached_pretrain is not None else self.opt_pretrain.epochs
        return [Phase("pretrain", max_epochs=pretrain_epochs, select=False),
                Phase("tune", max_epochs=self.opt_tune.max_epochs, select=True)]

    def start_phase(self, phase: Phase) -> None:
        if phase.name == "tune":
            self._build_tuner()

    def end_phase(self, phase: Phase) -> None:
        if phase.name != "pretrain" or self.pretrainer is None:
            return
        if self._cached_pretrain is not None:  # (also after a resume that found the entry meanwhile)
            self.pretrainer.load_state_dict(self._cached_pretrain["pretrainer"], strict=True)
            return
        parts = self.cache_parts() if self.artifact_cache is not None else None
        if parts is not None and self.opt_pretrain.epochs > 0:
            self.artifact_cache.save(CACHE_NAMESPACE, parts, {"pretrainer": self.pretrainer.state_dict()},
                                     info={"data": self.data.name, "variant": self.variant})

    def train_epoch(self, phase: Phase, epoch: int, progress: Progress) -> dict[str, float]:
        if phase.name == "pretrain":
            return self._pretrain_epoch(epoch, progress)
        return self._tune_epoch(epoch, progress)

    def _pretrain_epoch(self, epoch: int, progress: Progress) -> dict[str, float]:
        self.pretrainer.train()
        p = self.opt_pretrain
        batches = anchor_batches(self.pretrainer.layout, p.batch_size, p.anchor_order, self.pretrain_generator)
        total = 0.0
        for anchors in progress(batches, total=len(batches), desc=f"pretrain epoch {epoch}"):
            loss = self.pretrainer(anchors.to(self.device), self.aug_generator)
            self.pretrain_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.pretrain_optimizer.step()
            total += float(loss.detach())
        stats = {"loss": total / max(1, len(batches)), "steps": float(len(batches))}
        if self.variant == "hago":
            weights = self.pretrainer.final_pair_weights()
            stats["coord_weight_mean"] = float(weights.mean())
            stats["coord_zero_share"] = float((weights == 0).float().mean())
        return stats

    def _tune_epoch(self, epoch: int, progress: Progress) -> dict[str, float]:
        self.tuner.train()
        t = self.opt_tune
        batches = bpr_triples(self.train_users, self.train_items, self.sampler, t.batch_size, self.tune_generator,
                              t.neg_per_pos)
        total, rows = 0.0, 0
        for users, pos, neg in progress(batches, total=math.ceil(len(self.train_users) / t.batch_size),
                                        desc=f"tune epoch {epoch}"):
            users, pos, neg = users.to(self.device), pos.to(self.device), neg.to(self.device)
            loss = self.tuner.loss(users, pos, neg, t.reg_weight, t.reg_form)
            self.tune_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.tune_optimizer.step()
            total += float(loss.detach()) * len(users)
            rows += len(users)
        return {"loss": total / max(1, rows)}

    # ------------------------------------------------------------------ tuning model
    def _build_tuner(self) -> None:
        """The tuning model of Eqs. 5-7 over the current pre-trained state (or, for ``backbone``,
        fresh trainable tables); initialised from its own derived seed."""
        t, e, d = self.opt_tune, self.opt_encoder, self.opt_model.embedding_dim
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(_derived_seed(self.seed, "tune-init"))
            user_nodes = torch.arange(self.num_users)
            target_item_nodes = self.num_users + torch.arange(self.num_target_items)
            graph = WeightedGraph(self.target_graph.pattern, self.target_graph.weights())
            if self.pretrainer is None:
                inputs = TrainableInputs(self.num_users, self.num_target_items, d)
                encoder = make_encoder(e.name, d, e.num_layers, e.layer_combination)
            else:
                pre = self.pretrainer
                encoder = copy.deepcopy(pre.encoder).requires_grad_(False)
                with torch.no_grad():
                    features = pre.node_features().detach() if t.pretrained_source == "ego" else pre.encode()
                target_items = pre.layout.item_block(self.data.target_domain).to(features.device)
                if t.graph == "target":
                    pretrained = torch.cat([features[: self.num_users], features[target_items]])
                else:  # the pre-training graph, weights frozen at their pre-trained values
                    unified = pre.parts[0].graph
                    weights = pre.final_pair_weights() if unified.blocks else None
                    graph = WeightedGraph(unified.pattern, unified.weights(weights).detach())
                    pretrained, target_item_nodes = features, target_items.cpu()
                inputs = GraphPrompt(pretrained, user_nodes.to(self.device), target_item_nodes.to(self.device), t.prompt_init)
            self.tuner = TargetRecommender(inputs.to(self.device), encoder.to(self.device), graph,
                                           user_nodes, target_item_nodes).to(self.device)
        self.tune_optimizer = self._optimizer(self.tuner.parameters(), t.lr)
        if self.pretrainer is not None:  # pre-training is over: free its gradients and moments
            self.pretrainer.zero_grad(set_to_none=True)
        self.pretrain_optimizer = None

    def trainable_parameter_names(self) -> list[str]:
        """Names of the tuning model's parameters that the tuning optimiser updates."""
        return [name for name, p in self.tuner.named_parameters() if p.requires_grad]

    # ------------------------------------------------------------------ scoring
    def scoring_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.tuner()

    # ------------------------------------------------------------------ artifacts
    def artifacts(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.pretrainer is not None and self.pretrainer.parts[0].graph.blocks:
            graph = self.pretrainer.parts[0].graph
            out["coord_weights.parquet"] = coordinator_weight_table(graph, self.pretrainer.final_pair_weights())
        if self.save_embeddings:
            out["embeddings.parquet"] = self.embedding_table()
        return out

    @torch.no_grad()
    def embedding_table(self) -> pd.DataFrame:
        """Rows ``(stage, kind, domain, id, token, e0..e{d-1})``: the pre-trained ID tables of every
        domain's users (those with rows there) and items (``stage=pretrained``), and the tuned
        target representations ``h`` (``stage=tuned``)."""
        data, frames = self.data, []

        def block(stage, kind, domain, ids, tokens, vectors):
            frame = pd.DataFrame(vectors.float().cpu().numpy(), columns=[f"e{j}" for j in range(vectors.shape[1])])
            frame.insert(0, "token", tokens)
            frame.insert(0, "id", ids.numpy())
            frame.insert(0, "domain", domain)
            frame.insert(0, "kind", kind)
            frame.insert(0, "stage", stage)
            frames.append(frame)

        if self.pretrainer is not None:
            x = self.pretrainer.node_features()
            for domain in data.domains:
                users = torch.unique(data.train(domain).user)
                block("pretrained", "user", domain, users, data.user_tokens[users.numpy()], x[users.to(x.device)])
                items = torch.arange(data.num_items(domain))
                nodes = self.pretrainer.layout.item_nodes(domain, items).to(x.device)
                block("pretrained", "item", domain, items, data.item_tokens[domain], x[nodes])
        if self.tuner is not None:
            was_training = self.tuner.training
            self.tuner.eval()
            h_users, h_items = self.tuner()
            self.tuner.train(was_training)
            target = data.target_domain
            users = torch.unique(self.train_users)
            block("tuned", "user", target, users, data.user_tokens[users.numpy()], h_users[users.to(h_users.device)])
            items = torch.arange(self.num_target_items)
            block("tuned", "item", target, items, data.item_tokens[target], h_items)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    # ------------------------------------------------------------------ state
    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.pretrainer, self.tuner) if m is not None]

    def state_dict(self) -> dict:
        def maybe(obj):
            return None if obj is None else obj.state_dict()

        return {
            "pretrainer": maybe(self.pretrainer),
            "pretrain_optimizer": maybe(self.pretrain_optimizer),
            "tuner": maybe(self.tuner),
            "tune_optimizer": maybe(self.tune_optimizer),
            "generators": {"anchors": self.pretrain_generator.get_state(), "augmentation": self.aug_generator.get_state(),
                           "tune": self.tune_generator.get_state()},
        }

    def load_state_dict(self, state: dict) -> None:
        if state["pretrainer"] is not None:
            self.pretrainer.load_state_dict(state["pretrainer"], strict=True)
        if state["pretrain_optimizer"] is not None:
            if self.pretrain_optimizer is None:
                self.pretrain_optimizer = self._optimizer(self.pretrainer.parameters(), self.opt_pretrain.lr)
            self.pretrain_optimizer.load_state_dict(state["pretrain_optimizer"])
        if state["tuner"] is not None:
            if self.tuner is None:  # resuming inside the tuning phase
                self._build_tuner()
            self.tuner.load_state_dict(state["tuner"], strict=True)
            self.tune_optimizer.load_state_dict(state["tune_optimizer"])
        generators = state["generators"]
        self.pretrain_generator.set_state(generators["anchors"])
        self.aug_generator.set_state(generators["augmentation"])
        self.tune_generator.set_state(generators["tune"])


def _factory_identity(factory) -> dict:
    """The optimiser factory as plain data (class and fixed keywords; the rate comes from the
    stage's own ``lr`` key)."""
    if isinstance(factory, functools.partial):
        func, keywords = factory.func, {k: v for k, v in factory.keywords.items() if k != "lr"}
    else:
        func, keywords = factory, {}
    name = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', repr(func))}"
    return {"class": name, "keywords": {k: v if isinstance(v, (bool, int, float, str, type(None))) else repr(v)
                                          for k, v in keywords.items()}}


@functools.lru_cache(maxsize=1)
def _pretraining_code_hash() -> str:
    """sha256 of the code pre-training runs through: a change there never reuses stale weights."""
    digest = hashlib.sha256()
    for module in (coordinators_module, encoders_module, pretrain_module, sparse_module, losses_module):
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:16]
