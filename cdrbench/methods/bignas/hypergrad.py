r"""Implicit hypergradient of the BiGNAS outer problem (paper Eqs. 7–12; design spec §4.3).

Bi-level problem (paper Eq. 7):

.. math::
    \phi^* = \arg\min_\phi \mathcal{L}_{dev}(W^*(\phi)), \quad
    W^*(\phi) = \arg\min_W \mathcal{L}_{main}(W; \phi).

By the implicit function theorem (Eqs. 9–10) and the K-truncated Neumann series for the
inverse Hessian (Eq. 11, with an optional step size :math:`\eta`):

.. math::
    \nabla_\phi \mathcal{L}_{dev} \approx - \nabla_W \mathcal{L}_{dev}
    \Big[\sum_{n=0}^{K} (\mathbf{I} - \eta \nabla^2_W \mathcal{L}_{main})^n\Big]
    \nabla_\phi \nabla_W \mathcal{L}_{main} \qquad \text{(Eq. 12)}.

Only Hessian-vector and mixed second-derivative *products* are formed, via
:func:`torch.autograd.grad` (Lorraine et al., 2020); no Hessian is materialised and no
``.grad`` field is touched.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor


def _zeros_for_none(grads: Sequence[Optional[Tensor]], params: Sequence[Tensor]) -> List[Tensor]:
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def neumann_hypergradient(
    dev_loss: Tensor,
    train_loss: Tensor,
    inner_params: Sequence[Tensor],
    outer_params: Sequence[Tensor],
    k: int,
    eta: float,
    scale_series_by_eta: bool = False,
) -> List[Tensor]:
    r"""Neumann-series estimate of :math:`\nabla_\phi \mathcal{L}_{dev}` (spec §4.3 steps 1–4).

    1. :math:`g_V = \nabla_W \mathcal{L}_{dev}`.
    2. :math:`g_T = \nabla_W \mathcal{L}_{main}` with ``create_graph=True``.
    3. :math:`v \leftarrow g_V,\ p \leftarrow g_V`; ``k`` times: :math:`v \leftarrow v - \eta H v`
       (:math:`Hv = \nabla_W (g_T \cdot v)`), :math:`p \leftarrow p + v`. Then
       :math:`p = \sum_{n=0}^{k} (\mathbf{I} - \eta H)^n g_V`.
    4. :math:`h_\phi = -\nabla_\phi (g_T \cdot p)`; the direct term
       :math:`\partial \mathcal{L}_{dev} / \partial \phi` is zero and omitted.

    With ``scale_series_by_eta`` the result is multiplied by :math:`\eta` (Lorraine et al.;
    :math:`H^{-1} = \eta \sum_n (\mathbf{I} - \eta H)^n` when :math:`\|\mathbf{I} - \eta H\| < 1`).
    The paper and reference code omit it (flag ``bilevel.scale_series_by_eta=false``).

    Parameters not reached by a loss get zero gradients (``allow_unused``). ``dev_loss``'s graph
    is retained (it may share the forward with ``train_loss``); the double-backward graph of
    ``train_loss`` is released by the final product.

    Args:
        dev_loss: :math:`\mathcal{L}_{dev}` at the current :math:`W`.
        train_loss: :math:`\mathcal{L}_{main}(W; \phi)`, differentiable in both.
        inner_params: :math:`W` (spec: every model parameter except the heads).
        outer_params: :math:`\phi` (perceptron parameters).
        k: Neumann terms :math:`K` (``0`` keeps only :math:`g_V`).
        eta: Neumann step :math:`\eta`.
        scale_series_by_eta: multiply the estimate by :math:`\eta`.

    Returns:
        One tensor per ``outer_params`` entry, detached.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    inner_params, outer_params = list(inner_params), list(outer_params)

    # Step 1: dev gradient; a plain vector from here on.
    g_v = torch.autograd.grad(dev_loss, inner_params, retain_graph=True, allow_unused=True)
    g_v = [g.detach() for g in _zeros_for_none(g_v, inner_params)]

    # Step 2: differentiable training gradient. Entries that are None or constant (no graph)
    # contribute nothing to any second derivative, so they are dropped from the products.
    g_t = torch.autograd.grad(train_loss, inner_params, create_graph=True, allow_unused=True)
    live = [i for i, g in enumerate(g_t) if g is not None and g.requires_grad]
    zeros = [torch.zeros_like(p) for p in outer_params]
    if not live:
        return zeros
    g_t_live = [g_t[i] for i in live]

    # Step 3: p = sum_{n=0}^{K} (I - eta H)^n g_V via Hessian-vector products.
    v = list(g_v)
    p = [x.clone() for x in g_v]
    for _ in range(k):
        hv = torch.autograd.grad(
            g_t_live, inner_params, grad_outputs=[v[i] for i in live], retain_graph=True, allow_unused=True
        )
        hv = _zeros_for_none(hv, inner_params)
        v = [vi - eta * hvi.detach() for vi, hvi in zip(v, hv)]
        p = [pi + vi for pi, vi in zip(p, v)]

    # Step 4: h_phi = -d/dphi (g_T . p); last use of the double-backward graph, so free it.
    mixed = torch.autograd.grad(
        g_t_live, outer_params, grad_outputs=[p[i] for i in live], retain_graph=False, allow_unused=True
    )
    scale = -eta if scale_series_by_eta else -1.0
    return [scale * g.detach() for g in _zeros_for_none(mixed, outer_params)]


def apply_hypergradient(
    outer_params: Sequence[Tensor],
    grads: Sequence[Tensor],
    optimizer: torch.optim.Optimizer,
    clip_norm: Optional[float] = None,
) -> Tensor:
    """Outer update (spec §4.3 steps 5–7): **overwrite** ``φ.grad`` with the hypergradient
    (anything a training loss left there is discarded, §3.3), clip its total norm to
    ``clip_norm`` (skipped when ``None``), and take one ``optimizer`` step.

    Returns the total gradient norm before clipping.
    """
    outer_params, grads = list(outer_params), list(grads)
    if len(outer_params) != len(grads):
        raise ValueError(f"{len(outer_params)} outer params but {len(grads)} gradients")
    for param, grad in zip(outer_params, grads):
        if grad.shape != param.shape:
            raise ValueError(f"gradient shape {tuple(grad.shape)} != parameter shape {tuple(param.shape)}")
        param.grad = grad.detach().clone().to(dtype=param.dtype, device=param.device)
    if clip_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(outer_params, clip_norm)
    else:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    optimizer.step()
    return norm.detach()
