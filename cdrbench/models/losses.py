r"""Training objectives shared by the methods (one definition each; methods never copy them).

* :func:`bpr_loss` — :math:`\frac1B\sum -\ln\sigma(\hat y_{ui} - \hat y_{uj})` (Rendle et al.);
* :func:`embedding_l2` — the two regularisers the reference implementations use on a batch's
  layer-0 rows: ``squared_half`` :math:`\frac{1}{2B}\sum_t \|E_t\|_F^2` (LightGCN / RecBole's
  BPR-MF) and ``frobenius`` :math:`\frac1B\sum_t \|E_t\|_F` (RecBole's ``EmbLoss`` without squaring,
  as HAGO's code calls it);
* :func:`info_nce` — InfoNCE over cosine similarities between two views (GRACE, with or without
  intra-view negatives; COSTA; XSimGCL);
* :func:`info_nce_logits` — cross-entropy with the positive at column 0 (MoCo / GCC).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

L2_FORMS = ("squared_half", "frobenius")


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    r"""Mean :math:`-\ln\sigma(s^+ - s^-)`, computed as ``softplus(s^- - s^+)`` (stable)."""
    return F.softplus(neg_scores - pos_scores).mean()


def embedding_l2(*rows: Tensor, form: str = "squared_half") -> Tensor:
    r"""Regulariser of a batch's embedding rows ``rows[t]`` (each ``[B, d]``), divided by ``B``.

    ``squared_half``: :math:`\frac{1}{2B}\sum_t \|E_t\|_F^2`; ``frobenius``: :math:`\frac1B\sum_t \|E_t\|_F`.
    """
    if form not in L2_FORMS:
        raise ValueError(f"embedding_l2 form={form!r} is not one of {list(L2_FORMS)}")
    batch = rows[0].shape[0]
    if form == "squared_half":
        return sum(r.pow(2).sum() for r in rows) / (2 * batch)
    return sum(torch.linalg.vector_norm(r) for r in rows) / batch


def info_nce(a: Tensor, b: Tensor, tau: float, intra_view_negatives: bool = True) -> Tensor:
    r"""InfoNCE between row-aligned views ``a`` and ``b`` ``[N, d]`` with cosine similarity ``s``:

    .. math::
        \ell(a, b)_i = -\log \frac{e^{s(a_i,b_i)/\tau}}
            {\sum_j e^{s(a_i,b_j)/\tau} + [\text{intra}] \sum_{j\ne i} e^{s(a_i,a_j)/\tau}}

    Returns the mean of ``l(a, b)_i``; symmetrise by averaging with ``info_nce(b, a, ...)``
    (GRACE: ``intra_view_negatives=True``; COSTA, XSimGCL: ``False``).
    """
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    between = a @ b.T / tau
    if not intra_view_negatives:
        return F.cross_entropy(between, torch.arange(len(a), device=a.device))
    within = a @ a.T / tau
    within = within.masked_fill(torch.eye(len(a), dtype=torch.bool, device=a.device), float("-inf"))
    logits = torch.cat([between, within], dim=1)
    return (torch.logsumexp(logits, dim=1) - between.diagonal()).mean()


def info_nce_logits(positive: Tensor, negatives: Tensor, tau: float) -> Tensor:
    r"""Cross-entropy with the positive at column 0: ``positive`` ``[N]`` and ``negatives``
    ``[N, K]`` are similarities (MoCo: :math:`q\cdot k^+` and :math:`q\cdot Q^\top`)."""
    logits = torch.cat([positive.unsqueeze(1), negatives], dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
