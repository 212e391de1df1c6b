"""The one training loop: phases, epochs, validation, early stopping, checkpoints, resume."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import torch

from cdrbench.errors import ConfigError, OutputError
from cdrbench.eval.evaluator import Evaluator, monitor_value
from cdrbench.methods.base import Method
from cdrbench.validate import STOPPING_RULES
from cdrbench.train.runtime import Progress, atomic_save, global_rng_state, peak_memory_bytes, set_global_rng_state

LAST = "last.pt"
BEST = "best.pt"
HISTORY = "history.csv"


@dataclass
class TrainerState:
    """Where training stands; saved in ``last.pt`` after every epoch."""

    phase: int = 0  # index into method.phases()
    epoch: int = 0  # next epoch to run within the phase
    phase_started: bool = False
    best_score: Optional[float] = None
    best_epoch: Optional[int] = None
    best_metrics: Optional[dict] = None
    bad_evaluations: int = 0
    stopped_early: bool = False
    history: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(vars(self))


#: what every ``last.pt`` holds (see :meth:`Trainer._save_last`)
LAST_KEYS = ("method", "best_method", "trainer", "rng")


def load_checkpoint(path: Path, required: tuple = ()) -> dict:
    """Checkpoints hold only tensors and plain containers: loaded with ``weights_only=True``.
    A truncated, foreign or random file is an :class:`OutputError` naming it."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise OutputError(f"checkpoint {path} does not exist") from None
    except Exception as error:  # zip, unpickling and EOF errors of a damaged file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OutputError(
            f"checkpoint {path} is corrupt or not a cdrbench checkpoint ({type(error).__name__}: {reason[:200]}); "
            "delete it, or resume another run with trainer.resume_from=<run dir>"
        ) from None
    missing = [key for key in required if not isinstance(state, dict) or key not in state]
    if missing:
        raise OutputError(f"checkpoint {path} is not a cdrbench resume checkpoint (it lacks {missing})")
    return state


def clone_state(state):
    """Deep copy of a (nested) state dict with tensors cloned (the live ones keep changing)."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: clone_state(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(clone_state(v) for v in state)
    return copy.deepcopy(state)


class Trainer:
    """Drives a :class:`~cdrbench.methods.base.Method` through its phases.

    Args:
        method, evaluator: what to train and how to validate it.
        run_dir: where ``last.pt`` / ``best.pt`` go.
        max_epochs: epochs of a selecting phase that does not set its own.
        eval_every: validate every N epochs (and after a phase's last epoch).
        patience: evaluations without improvement before stopping (see ``stopping_rule``).
        min_epochs: never stop early before this many epochs of the phase.
        monitor: validation metric; ``logloss`` is minimised, everything else maximised.
        save_last: write ``last.pt`` after every epoch (needed for resume).
        progress: progress-bar factory passed to the method.
        config_yaml: the resolved config, stored in checkpoints as plain YAML.
        log: where epoch summaries go.
        on_epoch: called with each epoch's history row (experiment trackers).
        stopping_rule: ``strict`` (a tie keeps the earlier best; stop after ``patience``
            evaluations without improvement) or ``recbole`` (RecBole's ``early_stopping``: a value
            >= the best counts as an improvement; stop after more than ``patience``).
    """

    def __init__(
        self,
        method: Method,
        evaluator: Evaluator,
        run_dir: Path,
        max_epochs: int,
        eval_every: int = 1,
        patience: int = 10,
        min_epochs: int = 0,
        monitor: str = "ndcg@20",
        save_last: bool = True,
        progress: Optional[Progress] = None,
        config_yaml: str = "",
        log: Callable[[str], None] = print,
        on_epoch: Optional[Callable[[dict], None]] = None,
        stopping_rule: str = "strict",
    ):
        if eval_every < 1 or patience < 1 or max_epochs < 0:
            raise ValueError("trainer.eval_every and trainer.patience must be >= 1, trainer.max_epochs >= 0")
        if stopping_rule not in STOPPING_RULES:
            raise ConfigError(f"trainer.stopping_rule={stopping_rule!r} is not one of {list(STOPPING_RULES)}")
        self.stopping_rule = stopping_rule
        self.method = method
        self.evaluator = evaluator
        self.run_dir = Path(run_dir)
        self.max_epochs = max_epochs
        self.eval_every = eval_every
        self.patience = patience
        self.min_epochs = min_epochs
        self.monitor = monitor
        self.save_last = save_last
        self.progress = progress or Progress(False)
        self.config_yaml = config_yaml
        self.log = log
        self.on_epoch = on_epoch
        self.state = TrainerState()
        self._best_method_state: Optional[dict] = None

    # ------------------------------------------------------------------ checkpoints
    def _save_last(self) -> None:
        # the phase's best state travels in last.pt too, so a resumed run restores exactly the
        # best it had (best.pt alone may be one improvement ahead of last.pt after a crash)
        payload = {
            "method": self.method.state_dict(),
            "best_method": self._best_method_state,
            "trainer": self.state.to_dict(),
            "rng": global_rng_state(),
            "config_yaml": self.config_yaml,
        }
        atomic_save(self.run_dir / LAST, lambda tmp: torch.save(payload, tmp))

    def _save_best(self, phase_name: str) -> None:
        payload = {
            "method": self._best_method_state,
            "phase": phase_name,
            "epoch": self.state.best_epoch,
            "valid_metrics": self.state.best_metrics,
            "config_yaml": self.config_yaml,
        }
        atomic_save(self.run_dir / BEST, lambda tmp: torch.save(payload, tmp))

    def write_history(self) -> None:
        """``history.csv`` after every epoch (rewritten whole and atomically: epochs without a
        validation leave its columns empty), so an interrupted run keeps its curve."""
        frame = pd.DataFrame(self.state.history)
        atomic_save(self.run_dir / HISTORY, lambda tmp: frame.to_csv(tmp, index=False))

    def restore(self, last: dict) -> None:
        """Continue from a ``last.pt`` written by an interrupted run."""
        self.method.load_state_dict(last["method"])
        self.state = TrainerState(**last["trainer"])
        set_global_rng_state(last["rng"])
        self._best_method_state = last["best_method"]
        if self._best_method_state is not None:
            self._save_best(self.method.phases()[self.state.phase].name)

    # ------------------------------------------------------------------ loop
    def fit(self) -> TrainerState:
        phases = self.method.phases()
        while self.state.phase < len(phases):
            phase = phases[self.state.phase]
            if not self.state.phase_started:
                self.method.start_phase(phase)
                self.state.phase_started = True
            self._run_phase(phase)
            if phase.select and self._best_method_state is not None:
                self.method.load_state_dict(self._best_method_state)
            self.method.end_phase(phase)
            last_phase = self.state.phase == len(phases) - 1
            if not last_phase:  # the next selecting phase keeps its own best
                self.state = TrainerState(phase=self.state.phase + 1, history=self.state.history)
                self._best_method_state = None
            else:
                self.state.phase += 1
        return self.state

    def _run_phase(self, phase) -> None:
        max_epochs = phase.max_epochs if phase.max_epochs is not None else self.max_epochs
        epochs = range(self.state.epoch, max_epochs)
        for epoch in self.progress(epochs, total=len(epochs), desc=f"{phase.name} epochs", leave=True):
            started = time.perf_counter()
            stats = self.method.train_epoch(phase, epoch, self.progress)
            row = {"phase": phase.name, "epoch": epoch, **stats, "train_seconds": time.perf_counter() - started,
                   "peak_rss_mib": peak_memory_bytes(torch.device("cpu"))["peak_rss_bytes"] / 2**20}
            stop = False
            if phase.select and ((epoch + 1) % self.eval_every == 0 or epoch + 1 == max_epochs):
                stop = self._validate(phase, epoch, row)
            stop = stop or self.method.phase_finished(phase)
            self.state.history.append(row)
            if self.on_epoch is not None:
                self.on_epoch(row)
            self.state.epoch = epoch + 1
            self.log(_epoch_line(row, self.monitor))
            self.write_history()
            if self.save_last:
                self._save_last()
            if stop:
                self.state.stopped_early = True
                break

    def _validate(self, phase, epoch: int, row: dict) -> bool:
        with self.method.evaluation():
            result = self.evaluator.evaluate(self.method, "valid")
        row.update({f"valid_{k}": v for k, v in result.metrics.items()})
        row["eval_seconds"] = result.seconds
        score = monitor_value(result.metrics, self.monitor, result.notes)
        best = self.state.best_score
        ties_improve = self.stopping_rule == "recbole"  # strict: a tie keeps the old best
        if best is None or score > best or (ties_improve and score == best):
            self.state.best_score = score
            self.state.best_epoch = epoch
            self.state.best_metrics = dict(result.metrics)
            self.state.bad_evaluations = 0
            self._best_method_state = clone_state(self.method.state_dict())
            self._save_best(phase.name)
        else:
            self.state.bad_evaluations += 1
        limit = self.patience + 1 if self.stopping_rule == "recbole" else self.patience
        return self.state.bad_evaluations >= limit and epoch + 1 >= self.min_epochs


def _epoch_line(row: dict, monitor: str) -> str:
    parts = [f"[{row['phase']}] epoch {row['epoch']:>3}"]
    for key, value in row.items():
        if key in ("phase", "epoch") or not isinstance(value, float):
            continue
        if key.startswith("valid_") and key != f"valid_{monitor}":
            continue
        parts.append(f"{key} {value:.4f}")
    return "  ".join(parts)
