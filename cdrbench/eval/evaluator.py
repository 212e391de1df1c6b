"""Ties a method's scores to the metric functions for one split of a :class:`CrossDomainData`.

Top-N: candidates are all target items; positives R_u are the split's target rows (only the
``y = 1`` rows when the data carries click labels); history H_u is every training row (valid:
train; test: train + valid), masked except where it is also a positive. With ``negatives=N`` the
candidates of each positive row are it and N sampled items instead (:mod:`cdrbench.eval.sampled`).
CTR: every labelled row of the split is scored with :meth:`Method.predict_ctr`
(:func:`check_click_labels` is what a training run checks first: labels with both classes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from cdrbench.data.dataset import CrossDomainData
from cdrbench.errors import ConfigError
from cdrbench.eval.ctr import ctr_metrics
from cdrbench.eval.names import LOWER_IS_BETTER, TASKS  # noqa: F401 (re-exported)
from cdrbench.eval.sampled import SampledCandidates, evaluate_sampled, sampled_candidates
from cdrbench.eval.topn import UserItemSets, evaluate_topn, masked_items


@dataclass
class EvalResult:
    split: str
    metrics: dict[str, Optional[float]] = field(default_factory=dict)
    #: top-N per-user rows (user, user_raw, n_pos, n_masked, metric@K...)
    per_user: Optional[pd.DataFrame] = None
    #: CTR per-row predictions (user, item, y, p)
    predictions: Optional[pd.DataFrame] = None
    notes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


class Evaluator:
    """Evaluates a method on the target domain's valid or test split.

    Args:
        data: the prepared data (its target domain is evaluated).
        tasks: any of ``topn`` and ``ctr``.
        ks: cut-offs for top-N metrics.
        map_denominator: see :func:`cdrbench.eval.topn.metrics_from_rel`.
        chunk_size / max_chunk_bytes: top-N user chunking (results do not depend on it).
        gauc: also report GAUC for CTR.
        batch_size: rows per :meth:`predict_ctr` call.
        device: where scores are ranked.
        negatives / negatives_seed: 0 = full ranking; N = sampled-negative protocol with N
            negatives per positive row, drawn with ``negatives_seed`` (saved beside the data).
        log: where the sampled-negative cache reports.
    """

    def __init__(
        self,
        data: CrossDomainData,
        tasks: Sequence[str] = ("topn",),
        ks: Sequence[int] = (10, 20, 50),
        map_denominator: str = "min_k_rel",
        chunk_size: Optional[int] = None,
        max_chunk_bytes: int = 1 << 30,
        gauc: bool = False,
        batch_size: int = 65536,
        device: torch.device | str = "cpu",
        negatives: int = 0,
        negatives_seed: int = 0,
        log=print,
    ):
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ConfigError(f"eval.tasks={list(tasks)} must be a non-empty subset of {list(TASKS)}")
        if "ctr" in tasks:
            require_click_labels(data)
        self.data = data
        self.tasks = list(tasks)
        self.ks = sorted(int(k) for k in ks)
        self.map_denominator = map_denominator
        self.chunk_size = chunk_size
        self.max_chunk_bytes = max_chunk_bytes
        self.gauc = gauc
        self.batch_size = batch_size
        self.device = torch.device(device)
        target = data.target_domain
        self.num_items = data.num_items(target)
        self.negatives = int(negatives)
        self._sets: dict[str, UserItemSets] = {}
        self._sampled: dict[str, SampledCandidates] = {}
        # the labelled rows of each split, selected once (evaluation runs every epoch)
        self._ctr_rows = {split: data.rows(target, split) for split in ("valid", "test")} if "ctr" in self.tasks else {}
        if "topn" in self.tasks and self.negatives:
            for split in ("valid", "test"):
                self._sampled[split] = sampled_candidates(data, split, self.negatives, negatives_seed, log)
        elif "topn" in self.tasks:
            for split in ("valid", "test"):
                rows = data.rows(target, split)
                if rows.y is not None:
                    rows = rows.select(rows.y > 0.5)
                self._sets[split] = UserItemSets.from_pairs(rows.user, rows.item, data.num_users)
            for split, history in (("valid", ["train"]), ("test", ["train", "valid"])):
                rows = data.rows(target, history)
                seen = UserItemSets.from_pairs(rows.user, rows.item, data.num_users)
                self._sets[f"masked_{split}"] = masked_items(self._sets[split], seen)

    def evaluate(self, method, split: str, keep_rows: bool = False) -> EvalResult:
        """Metrics of ``split`` (``valid`` or ``test``); call inside ``method.evaluation()``.

        ``keep_rows`` keeps the per-user / per-row frames (for the run record)."""
        if split not in ("valid", "test"):
            raise ValueError(f"split must be valid or test, got {split!r}")
        started = time.perf_counter()
        result = EvalResult(split=split)
        if "topn" in self.tasks and self.negatives:
            topn = evaluate_sampled(
                method.score_users, self._sampled[split], self.num_items, self.ks, self.map_denominator,
                chunk_size=self.chunk_size, max_chunk_bytes=self.max_chunk_bytes, device=self.device,
            )
            result.metrics.update(topn.means)
            result.metrics["topn_users"] = topn.num_users
            result.metrics["topn_cases"] = len(topn.per_user)
            if keep_rows:
                per_user = topn.per_user.copy()
                per_user.insert(1, "user_raw", self.data.user_tokens[per_user["user"].to_numpy()])
                result.per_user = per_user
        elif "topn" in self.tasks:
            topn = evaluate_topn(
                method.score_users,
                users=None,
                positives=self._sets[split],
                history=None,
                masked=self._sets[f"masked_{split}"],
                num_items=self.num_items,
                ks=self.ks,
                map_denominator=self.map_denominator,
                chunk_size=self.chunk_size,
                max_chunk_bytes=self.max_chunk_bytes,
                device=self.device,
            )
            result.metrics.update(topn.means)
            result.metrics["topn_users"] = topn.num_users
            if topn.peak_memory_bytes is not None:
                result.metrics["eval_peak_gpu_bytes"] = topn.peak_memory_bytes
            if keep_rows:
                per_user = topn.per_user.copy()
                per_user.insert(1, "user_raw", self.data.user_tokens[per_user["user"].to_numpy()])
                result.per_user = per_user
        if "ctr" in self.tasks:
            rows = self._ctr_rows[split]
            probs = []
            for start in range(0, len(rows), self.batch_size):
                users = rows.user[start : start + self.batch_size].to(self.device)
                items = rows.item[start : start + self.batch_size].to(self.device)
                probs.append(method.predict_ctr(users, items).detach().float().cpu())
            p = torch.cat(probs).numpy().astype(np.float64) if probs else np.zeros(0)
            y = rows.y.numpy()
            ctr = ctr_metrics(y, p, users=rows.user.numpy(), with_gauc=self.gauc)
            for key in ("auc", "logloss", "gauc", "gauc_coverage"):
                if key in ctr:
                    result.metrics[key] = ctr[key]
            for key in ("auc_undefined_reason", "gauc_undefined_reason"):
                if key in ctr:
                    result.notes[key] = ctr[key]
            result.metrics["ctr_rows"] = ctr["n_rows"]
            if keep_rows:
                result.predictions = pd.DataFrame(
                    {"user": rows.user.numpy(), "item": rows.item.numpy(), "y": y.astype(np.int8), "p": p}
                )
        result.seconds = time.perf_counter() - started
        return result


def require_click_labels(data: CrossDomainData) -> None:
    """CTR needs click labels: say how to get them, or that implicit data has none."""
    rows = data.interactions[data.target_domain]
    if rows.y is None:
        rated = bool((~torch.isnan(rows.rating)).any())
        fix = ("set data.label_threshold=T (click = rating > T)" if rated else
               "data.label_threshold cannot make them, its target has no ratings (implicit data): use a top-N "
               "method with eval.tasks=[topn]")
        raise ConfigError(f"eval.tasks includes ctr, which needs click labels, but data '{data.name}' has none: {fix}")


def check_click_labels(data: CrossDomainData) -> None:
    """Click labels with both classes in every target split: implicit data, or a label threshold
    that makes every row a click (4-5 star data with threshold 3), is refused before training
    with the counts and the key to change, not after an epoch."""
    require_click_labels(data)
    target = data.target_domain
    rows = data.interactions[target]
    for code, name in ((0, "train"), (1, "valid"), (2, "test")):
        part = rows.select(rows.split == code)
        if not len(part):
            continue
        clicks = int((part.y > 0.5).sum())
        if clicks in (0, len(part)):
            what = "a click (y = 1)" if clicks else "a non-click (y = 0)"
            rating = part.rating[~torch.isnan(part.rating)]
            ratings = f"; its ratings span {float(rating.min()):g}..{float(rating.max()):g}" if len(rating) else ""
            raise ConfigError(
                f"CTR needs both label classes, but every one of the {len(part)} {name} rows of '{target}' is {what}"
                f"{ratings}: change data.label_threshold (click = rating > threshold) so that both classes occur, "
                "or evaluate top-N only (eval.tasks=[topn])"
            )


def monitor_value(metrics: dict, monitor: str, notes: Optional[dict] = None) -> float:
    """The selection score of ``metrics`` (higher is better; LogLoss is negated).

    An undefined metric (e.g. AUC of a single-class split) cannot select a model: error."""
    if monitor not in metrics:
        raise ConfigError(f"trainer.monitor={monitor!r} is not among the evaluated metrics {sorted(metrics)}")
    value = metrics[monitor]
    if value is None:
        reason = (notes or {}).get(f"{monitor}_undefined_reason")
        raise ConfigError(
            f"trainer.monitor={monitor!r} is undefined on the validation split"
            + (f" ({reason})" if reason else "")
            + ": a split with one label class only (all clicks or no clicks) has no AUC; change data.label_threshold "
            "so that both classes occur, or select on trainer.monitor=logloss"
        )
    return -float(value) if monitor in LOWER_IS_BETTER else float(value)
