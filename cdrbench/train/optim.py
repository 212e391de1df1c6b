r"""Optimisers for embedding tables whose gradients are sparse (one mechanism for every method).

An embedding table built with ``NodeEmbeddings(sparse=True)`` and read through row look-ups
(BPR-MF, and any method built on MF parts) gets a *sparse* gradient: only the rows of the batch.
A dense optimiser then still costs O(table) per step (it would refuse the gradient anyway);
:class:`LazyAdam` updates only those rows, so a step costs O(batch) whatever the table's size.

:class:`LazyAdam` is :class:`torch.optim.Adam` for every dense gradient (same arithmetic, same
state) and, for a sparse gradient, the *lazy* Adam update of ``torch.optim.SparseAdam`` (and of
TF's ``LazyAdam``): the moments and the parameter of a row change only at steps where the row
has a gradient,

.. math::
    m_r \leftarrow \beta_1 m_r + (1-\beta_1) g_r,\quad
    v_r \leftarrow \beta_2 v_r + (1-\beta_2) g_r^2,\quad
    \theta_r \leftarrow \theta_r - \frac{\mathrm{lr}}{1-\beta_1^t}\,
        \frac{m_r}{\sqrt{v_r}/\sqrt{1-\beta_2^t} + \epsilon}
    \qquad (r \text{ in the batch}),

with the parameter's step count ``t`` in the bias corrections. Differences from dense Adam,
by design: a row outside the batch keeps its moments and its value (dense Adam keeps moving it
with its momentum); ``weight_decay`` (coupled L2, as in Adam) is applied to the batch's rows
only. At a row's first step the two updates are identical.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: optimisers that accept sparse gradients (torch's own and cdrbench's)
SPARSE_CAPABLE = (torch.optim.SparseAdam, torch.optim.SGD, torch.optim.Adagrad)


class LazyAdam(torch.optim.Adam):
    """Adam for dense gradients, lazy Adam for sparse ones (see the module docstring).

    Takes :class:`torch.optim.Adam`'s arguments; ``amsgrad`` and ``maximize`` apply to dense
    gradients only (a sparse gradient with either set is an error)."""

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sparse: list[tuple[dict, Tensor, Tensor]] = []
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None and param.grad.is_sparse:
                    sparse.append((group, param, param.grad))
                    param.grad = None  # hidden from Adam's dense step
        try:
            super().step()
        finally:
            for _, param, grad in sparse:
                param.grad = grad
        for group, param, grad in sparse:
            self._lazy_update(group, param, grad)
        return loss

    @torch.no_grad()
    def _lazy_update(self, group: dict, param: Tensor, grad: Tensor) -> None:
        if group["amsgrad"] or group["maximize"]:
            raise ValueError("LazyAdam: amsgrad and maximize are not supported for sparse gradients")
        grad = grad.coalesce()
        rows = grad.indices()[0]
        values = grad.values()
        beta1, beta2 = group["betas"]
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["step"] += 1
        step = float(state["step"])
        # index_select / index_copy_ rather than x[rows]: several times faster on CPU
        current = param.index_select(0, rows)
        if group["weight_decay"]:
            values = values.add(current, alpha=group["weight_decay"])
        exp_avg = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
        state["exp_avg"].index_copy_(0, rows, exp_avg)
        state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
        step_size = group["lr"] / (1 - beta1**step)
        denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(group["eps"])
        param.index_copy_(0, rows, current.addcdiv_(exp_avg, denom, value=-step_size))


def supports_sparse_gradients(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` accepts the sparse gradients of ``NodeEmbeddings(sparse=True)``."""
    return isinstance(optimizer, (LazyAdam, *SPARSE_CAPABLE))
