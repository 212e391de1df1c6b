r"""XSimGCL: extremely simple graph contrastive learning (Yu et al., TKDE 2023), single-domain.

Spec: ``shared/design/baselines.md`` §5. Reference: the authors' SELFRec ``5b02294``
``model/graph/XSimGCL.py`` (``XSimGCL_Encoder.forward``, ``XSimGCL.train``, ``cal_cl_loss``),
``util/loss_torch.py`` (``bpr_loss``, ``l2_reg_loss``, ``InfoNCE``) and ``conf/XSimGCL.yaml``.

A LightGCN encoder whose every layer output is perturbed by noise with the embedding's sign,

.. math::
    E^{(l)} = \hat A E^{(l-1)} + \Delta^{(l)}, \qquad
    \Delta^{(l)} = \epsilon \cdot \mathrm{sign}(E^{(l)}) \odot \frac{\omega}{\lVert\omega\rVert_2},
    \quad \omega \sim U(0, 1)^{d} \text{ per row},

(:math:`\mathrm{sign}(E^{(l)})` of the propagated, unperturbed output, as the code computes it),
so :math:`\Delta` keeps the sign pattern of the embedding and has row norm :math:`\epsilon`
where the embedding has no zero entry. The recommendation representation is the mean of layers
``1..L``; the contrastive view is the output of layer :math:`l^*` of the **same** perturbed
pass (cross-layer contrast). The loss is

.. math::
    L = \mathrm{BPR} + \lambda\,[\mathrm{InfoNCE}_u + \mathrm{InfoNCE}_i] + \text{reg},

InfoNCE on cosine similarities at temperature :math:`\tau`, in-batch negatives, one direction
(the final view against the layer-:math:`l^*` view), over the batch's unique users and unique
positive items. BPR uses the perturbed pass; evaluation the clean one. It trains on the target
graph, or on source + target merged into one graph with ``data.use_source=true`` (the
single-domain baselines' convention: :class:`~cdrbench.methods.baselines.CollaborativeFiltering`,
which this class extends with the contrastive term).

Differences (named flags; ids of the spec's table):

* X1 ``skip_layer0``: the representation averages layers ``1..L`` (code and the SimGCL text) or
  ``0..L`` (``false``, LightGCN's).
* X2 ``reg``: ``ego_squared`` (the paper's :math:`\lVert\Theta\rVert^2` on the batch's layer-0
  user, positive and negative rows, :math:`\tfrac{1}{2B}`-scaled) | ``propagated_frobenius`` (code
  ``l2_reg_loss``: :math:`\sum \lVert E\rVert_F / B` of the *propagated* user and positive rows).
* X3 contrastive nodes: unique batch users + unique positive items (code; one value).
* X4 the code keeps the epoch with the best *test* result (``fast_evaluation``); cdrbench selects
  on the validation split (policy, not a flag).

Also different, not flags: BPR is the shared ``softplus`` form, the code's
:math:`-\ln(10^{-5} + \sigma(\cdot))` differs only at saturation; the noise is drawn from the
global torch generator (saved for resume), the code's from CUDA's.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from cdrbench.data.graph import Graph
from cdrbench.errors import ConfigError
from cdrbench.methods.baselines import CollaborativeFiltering
from cdrbench.models.lightgcn import LightGCNEncoder
from cdrbench.models.losses import bpr_loss, embedding_l2, info_nce
from cdrbench.models.sparse import spmm

REGS = ("ego_squared", "propagated_frobenius")


def sign_noise(x: Tensor, eps: float, generator: Optional[torch.Generator] = None) -> Tensor:
    r""":math:`\Delta = \epsilon\,\mathrm{sign}(x) \odot \omega/\lVert\omega\rVert_2`, ``ω ~ U(0,1)`` per row."""
    omega = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return eps * torch.sign(x) * F.normalize(omega, dim=-1)


class XSimGCLEncoder(LightGCNEncoder):
    r"""LightGCN with sign-preserving noise after every layer and a layer-:math:`l^*` tap.

    Args:
        num_users, num_items: node counts (users first).
        embedding_dim: 64. num_layers: :math:`L` (2).
        eps: noise norm :math:`\epsilon` (0.2).
        cl_layer: :math:`l^*`, the layer whose output is the contrastive view (1; 0 = the
            unperturbed layer-0 embeddings, as the code's initial value).
        skip_layer0: X1.
    """

    def __init__(self, num_users: int, num_items: int, embedding_dim: int = 64, num_layers: int = 2,
                 eps: float = 0.2, cl_layer: int = 1, skip_layer0: bool = True):
        super().__init__(num_users, num_items, embedding_dim, num_layers)
        if not 0 <= cl_layer <= num_layers:
            raise ConfigError(f"method.encoder.cl_layer must lie in [0, num_layers={num_layers}], got {cl_layer}")
        if num_layers < 1 and skip_layer0:
            raise ConfigError("method.encoder.num_layers must be >= 1 with skip_layer0=true")
        self.eps, self.cl_layer, self.skip_layer0 = eps, cl_layer, skip_layer0
        with torch.no_grad():  # SELFRec: Xavier-uniform user and item tables, initialised separately
            for block in self.embedding.weight.split([num_users, num_items]):
                torch.nn.init.xavier_uniform_(block)

    def propagate(self, adj: Tensor, perturbed: bool = False) -> tuple[Tensor, Tensor]:
        """``(representation [U + I, d], contrastive view [U + I, d])``."""
        x = self.embedding.weight
        layers, view = [x], x
        for layer in range(1, self.num_layers + 1):
            x = spmm(adj, x)
            if perturbed:
                x = x + sign_noise(x, self.eps)
            layers.append(x)
            if layer == self.cl_layer:
                view = x
        kept = layers[1:] if self.skip_layer0 else layers
        return torch.stack(kept).mean(0), view

    def forward(self, graph: Graph) -> tuple[Tensor, Tensor]:
        """Clean ``(user_embeddings, item_embeddings)`` (evaluation)."""
        return self.split(self.propagate(graph.adj)[0])

    def perturbed(self, graph: Graph) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Noisy ``(users, items, view users, view items)`` of one training pass."""
        final, view = self.propagate(graph.adj, perturbed=True)
        return (*self.split(final), *self.split(view))


class XSimGCL(CollaborativeFiltering):
    r"""XSimGCL (see the module docstring): BPR on the perturbed pass plus the cross-layer
    InfoNCE term. Top-N ranks the clean :math:`e_u^\top e_i`; CTR is :math:`\sigma(\cdot)`
    (AUC is meaningful, LogLoss is not calibrated under BPR).

    Args:
        encoder: ``encoder(num_users=, num_items=)`` builds an :class:`XSimGCLEncoder`.
        optimizer: ``optimizer(params)``.
        profile: ``paper`` | ``refcode`` (a label; the YAML resolves the flags).
        cl_weight: :math:`\lambda` (0.2). tau: :math:`\tau` (0.15).
        reg: X2. reg_weight: its weight (1e-4).
        batch_size: BPR triples per step (2048). num_negatives: 1.
    """

    tasks = frozenset({"topn", "ctr"})

    def __init__(
        self,
        encoder: Callable[..., torch.nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        profile: str = "paper",
        cl_weight: float = 0.2,
        tau: float = 0.15,
        reg: str = "ego_squared",
        reg_weight: float = 1e-4,
        batch_size: int = 2048,
        num_negatives: int = 1,
    ):
        super().__init__(encoder, optimizer, loss="bpr", batch_size=batch_size, reg_weight=reg_weight,
                         num_negatives=num_negatives)
        if reg not in REGS:
            raise ConfigError(f"method.reg={reg!r} is not one of {list(REGS)}")
        if tau <= 0:
            raise ConfigError(f"method.tau must be > 0, got {tau}")
        self.profile = profile
        self.cl_weight, self.tau, self.reg = cl_weight, tau, reg

    def setup(self, data, device, seed) -> None:
        super().setup(data, device, seed)
        if not isinstance(self.encoder, XSimGCLEncoder):
            raise ConfigError("method.encoder must build a cdrbench.methods.cdr.xsimgcl.XSimGCLEncoder")

    def contrastive_loss(self, users: Tensor, pos: Tensor, views: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        user_emb, item_emb, view_u, view_i = views
        u, i = torch.unique(users), torch.unique(pos)
        return (info_nce(user_emb[u], view_u[u], self.tau, intra_view_negatives=False)
                + info_nce(item_emb[i], view_i[i], self.tau, intra_view_negatives=False))

    def _bpr_loss(self, users: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        views = self.encoder.perturbed(self.graph)
        user_emb, item_emb = views[0], views[1]
        u, p, n = user_emb[users], item_emb[pos], item_emb[neg]
        loss = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        if self.cl_weight:
            loss = loss + self.cl_weight * self.contrastive_loss(users, pos, views)
        if self.reg_weight:
            if self.reg == "ego_squared":
                eu, ei = self.encoder.ego_embeddings(users, pos)
                _, ej = self.encoder.ego_embeddings(users, neg)
                loss = loss + self.reg_weight * embedding_l2(eu, ei, ej)
            else:
                loss = loss + self.reg_weight * embedding_l2(u, p, form="frobenius")
        return loss
