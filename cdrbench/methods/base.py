"""The method interface every recommender in cdrbench implements.

A *method* is a training procedure that composes pure ``nn.Module`` models (``cdrbench.models``
and the method's own subpackage). It is built by the entry point with
``hydra.utils.instantiate(cfg.method, ...)`` from plain constructor arguments, and never sees the
config. The :class:`~cdrbench.train.trainer.Trainer` drives it::

    method.setup(data, device, seed)            # graphs, models, optimisers, samplers
    for phase in method.phases():               # e.g. [pretrain (no selection), tune (selected)]
        method.start_phase(phase)
        for epoch in ...:
            stats = method.train_epoch(phase, epoch, progress)
            if phase.select and it is time:     # validation, early stopping, best state kept
                with method.evaluation():
                    evaluator.evaluate(method, "valid")
        # a selecting phase ends with its best state restored (load_state_dict)
        method.end_phase(phase)                 # e.g. store pre-trained weights in the artifact cache
    with method.evaluation():                   # test, once, from the best state
        evaluator.evaluate(method, "test")

How the three papers fit:

* **BiGNAS** — one selecting phase; ``train_epoch`` runs the inner steps and, every
  ``outer_every`` iterations, the implicit-gradient outer step of the importance perceptron.
  Scores with :meth:`predict_ctr`.
* **HAGO** — a ``pretrain`` phase (``select=False``, fixed epochs of graph contrastive learning),
  then a selecting ``tune`` phase (prompt tuning). Scores with :meth:`score_users`.
* **PCRec** — a ``pretrain`` phase on the source graph, an initialisation step in
  :meth:`start_phase` of the ``finetune`` phase, then selected fine-tuning.
* The DISCRETE ablation of BiGNAS — a selecting ``search`` phase, then a selecting ``retrain``
  phase that :meth:`start_phase` builds from the searched architecture.

Everything a method needs to resume exactly (model and optimiser states, its own random
generators, sampler positions) goes into :meth:`state_dict`; the trainer adds the global RNG
states. State dicts must hold only tensors, numbers, strings, lists and dicts: checkpoints are
loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, TypeVar

import torch
from torch import Tensor

from cdrbench.data.dataset import CrossDomainData
from cdrbench.errors import ConfigError
from cdrbench.train.artifact_cache import ArtifactCache

#: wraps an iterable in a progress bar (or not): ``progress(iterable, total=..., desc=...)``
Progress = Callable[..., Iterable]


Options = TypeVar("Options")


def option_group(cls: type[Options], values: Optional[dict], group: str) -> Options:
    """A method's option group (``method.<group>`` of its YAML) as the dataclass ``cls``; an
    unknown key is a :class:`ConfigError` naming the group and the valid keys."""
    try:
        return cls(**(values or {}))
    except TypeError as error:
        valid = [f.name for f in dataclasses.fields(cls)]
        raise ConfigError(f"method.{group}: {error} (valid keys: {valid})") from error


@dataclass(frozen=True)
class Phase:
    """A stretch of training with one objective.

    ``max_epochs=None`` means ``trainer.max_epochs``. A ``select`` phase is evaluated on the
    validation split every ``trainer.eval_every`` epochs, stops early on ``trainer.monitor`` and
    ends with its best state restored; a phase without selection runs all its epochs.
    """

    name: str
    max_epochs: Optional[int] = None
    select: bool = True


class Method(abc.ABC):
    """Base class of all methods. Subclasses set :attr:`tasks` and implement the abstract hooks."""

    #: evaluation tasks the method can be scored on: "topn" needs :meth:`score_users`,
    #: "ctr" needs :meth:`predict_ctr`
    tasks: frozenset[str] = frozenset({"topn"})
    #: whether the method uses source domains by default (``data.use_source=null``)
    uses_source_by_default: bool = False

    def __init__(self) -> None:
        self.data: Optional[CrossDomainData] = None
        self.device = torch.device("cpu")
        #: set by the entry point before :meth:`setup` (``None`` = no caching). A method with a
        #: pre-training stage looks its pre-trained state up there in ``setup`` (a hit makes that
        #: phase 0 epochs long, so phase indices stay stable for resume) and stores it in
        #: :meth:`end_phase`; the key hashes the prepared data's key and every pre-training option.
        self.artifact_cache: Optional[ArtifactCache] = None

    # ------------------------------------------------------------------ lifecycle
    @abc.abstractmethod
    def setup(self, data: CrossDomainData, device: torch.device, seed: int) -> None:
        """Build graphs (training edges only), models, optimisers and samplers."""

    def phases(self) -> list[Phase]:
        return [Phase("train")]

    def start_phase(self, phase: Phase) -> None:
        """Called before the first epoch of ``phase`` (not again when resuming inside it)."""

    def end_phase(self, phase: Phase) -> None:
        """Called once after the last epoch of ``phase`` (a selecting phase has its best state
        restored by then), e.g. to store pre-trained weights in :attr:`artifact_cache`."""

    @abc.abstractmethod
    def train_epoch(self, phase: Phase, epoch: int, progress: Progress) -> dict[str, float]:
        """One epoch; returns scalar statistics for history.csv (e.g. ``{"loss": ...}``)."""

    # ------------------------------------------------------------------ scoring
    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """Eval mode plus any per-evaluation cache (propagated embeddings); restores train mode."""
        modules = [m for m in self.modules() if m.training]
        for module in modules:
            module.eval()
        try:
            with torch.no_grad():
                self.prepare_scoring()
                yield
        finally:
            self.clear_scoring()
            for module in modules:
                module.train()

    def prepare_scoring(self) -> None:
        """Compute what scoring reuses across chunks (called inside :meth:`evaluation`)."""

    def clear_scoring(self) -> None:
        """Drop the scoring cache."""

    def score_users(self, users: Tensor) -> Tensor:
        """Scores ``[len(users), I_target]`` of every target item (top-N ranking)."""
        raise NotImplementedError(f"{type(self).__name__} does not rank items (no 'topn' task)")

    def predict_ctr(self, users: Tensor, items: Tensor) -> Tensor:
        """Click probabilities of (user, target item) pairs (CTR)."""
        raise NotImplementedError(f"{type(self).__name__} does not predict clicks (no 'ctr' task)")

    # ------------------------------------------------------------------ state
    @abc.abstractmethod
    def modules(self) -> list[torch.nn.Module]:
        """The nn.Modules the method trains (for train/eval mode and parameter counts)."""

    @abc.abstractmethod
    def state_dict(self) -> dict:
        """Everything needed to resume exactly (see the module docstring)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict) -> None:
        ...

    def artifacts(self) -> dict[str, object]:
        """Extra files for the run directory (name -> DataFrame/dict/list), written at the end."""
        return {}

    def num_parameters(self) -> int:
        return sum(p.numel() for m in self.modules() for p in m.parameters())


class DotProductScoring:
    r"""Scoring of every method whose score is :math:`\hat y_{ui} = h_u^\top h_i`.

    A mixin placed before :class:`Method` in the bases: the subclass implements
    :meth:`scoring_embeddings` (user rows ``[U, d]`` and *target* item rows ``[I_target, d]``,
    computed once per evaluation), and gets top-N scores by chunked matrix products and click
    probabilities :math:`\sigma(\hat y_{ui})` (so a top-N method also sits in a CTR table).
    """

    tasks = frozenset({"topn", "ctr"})
    _scoring: Optional[tuple[Tensor, Tensor]] = None

    def scoring_embeddings(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def prepare_scoring(self) -> None:
        self._scoring = self.scoring_embeddings()

    def clear_scoring(self) -> None:
        self._scoring = None

    def score_users(self, users: Tensor) -> Tensor:
        user_emb, item_emb = self._scoring
        return user_emb[users.to(user_emb.device)] @ item_emb.T

    def predict_ctr(self, users: Tensor, items: Tensor) -> Tensor:
        user_emb, item_emb = self._scoring
        users, items = users.to(user_emb.device), items.to(item_emb.device)
        return torch.sigmoid((user_emb[users] * item_emb[items]).sum(-1))
