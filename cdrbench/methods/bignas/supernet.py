r"""Cross-domain customised supernet of BiGNAS (paper §"Cross-Domain Graph Neural Architecture
Search", Eq. 3; design spec §2).

Propagation (:class:`CrossDomainSupernet`) is separate from scoring (:func:`pair_repr` +
:class:`CTRPredictor`): one full-graph propagation serves any number of scored batches.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import BatchNorm1d, Dropout, Embedding, Identity, Linear, Module, ModuleDict, ModuleList, Parameter

from cdrbench.data.graph import Graph
from cdrbench.methods.bignas.ops import check_op_names, make_op

DEFAULT_SPACE: Tuple[str, ...] = ("gcn", "gat", "sage", "lightgcn", "linear")
SOURCE, TARGET = "source", "target"


class MixedOp(Module):
    r"""One supernet layer: a softmax-weighted mixture of candidate operations (paper Eq. 3),

    .. math::
        f^{(i)}(\mathbf{x}) = \sum_{o \in \mathcal{O}} p_o^{(i)} \cdot
        \mathrm{Dropout}\big(\mathrm{BN}_o(o(\mathbf{x}, \mathcal{G}))\big),
        \qquad p^{(i)} = \mathrm{softmax}(\alpha^{(i)}).

    Dropout acts on each op output *before* mixing, so every op gets its own mask (reference
    code). There is no activation. The mixing weights ``p`` are passed to :meth:`forward`
    because α belongs to the owning :class:`Supernet`.

    Args:
        space: operation names (see :data:`~cdrbench.methods.bignas.ops.OPS`).
        in_dim, out_dim: feature widths.
        dropout: dropout probability applied to every op output.
        batch_norm: ``BatchNorm1d`` per op (``BN_o``); Identity when ``False``.
        sage_aggr: aggregation of the ``sage`` op.
        shared_ops: reuse these op modules instead of building new ones (weights shared across
            layers, spec §2.2 ``share_op_weights_across_layers``); BN stays per layer.
    """

    def __init__(
        self,
        space: Sequence[str],
        in_dim: int,
        out_dim: int,
        dropout: float = 0.0,
        batch_norm: bool = False,
        sage_aggr: str = "mean",
        shared_ops: Optional[ModuleDict] = None,
    ):
        super().__init__()
        check_op_names(space)
        self.space = list(space)
        self.in_dim, self.out_dim = in_dim, out_dim
        if shared_ops is None:
            shared_ops = ModuleDict({name: make_op(name, in_dim, out_dim, sage_aggr) for name in self.space})
        elif list(shared_ops.keys()) != self.space:
            raise ValueError(f"shared_ops {list(shared_ops.keys())} do not match space {self.space}")
        self.ops = shared_ops
        self.norms = ModuleDict(
            {name: BatchNorm1d(out_dim) if batch_norm else Identity() for name in self.space}
        )
        self.dropout = Dropout(dropout)

    def reset_parameters(self) -> None:
        for name in self.space:
            self.ops[name].reset_parameters()
            if isinstance(self.norms[name], BatchNorm1d):
                self.norms[name].reset_parameters()

    def forward(self, x: Tensor, graph: Graph, weights: Tensor) -> Tensor:
        """``weights``: ``[len(space)]`` mixing weights (already softmax-normalised)."""
        if weights.shape != (len(self.space),):
            raise ValueError(f"expected {len(self.space)} op weights, got shape {tuple(weights.shape)}")
        outs = [self.dropout(self.norms[name](self.ops[name](x, graph))) for name in self.space]
        if len(outs) == 1:
            # One-op space (manual/discrete variants): softmax of one logit is exactly 1, so skip
            # the product and return that op's output unchanged.
            return outs[0]
        return torch.einsum("o,onh->nh", weights, torch.stack(outs))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.space}, {self.in_dim}, {self.out_dim})"


class Supernet(Module):
    r"""One domain's stack of :class:`MixedOp` layers with architecture parameters
    :math:`\alpha \in \mathbb{R}^{L \times |\mathcal{O}|}` initialised to :math:`10^{-3}\cdot
    \mathcal{N}(0, 1)` (reference code, spec §2.3).

    α is trained by the same optimiser as the weights (single-level, paper Eq. 4), so it is a
    plain :class:`~torch.nn.Parameter` when ``learn_alpha=True``. With ``learn_alpha=False``
    (the ``mix`` ablation) α is a zero *buffer*: it is not returned by :meth:`parameters`, so
    no optimiser or weight decay can move it, and every op gets weight :math:`1/|\mathcal{O}|`.
    A one-op space (``manual``/``discrete`` variants) has no α at all and the layer output is
    exactly that op's output.

    Args:
        space: operation names.
        num_layers: :math:`L`.
        dim: input width of layer 1 (the embedding width :math:`d`).
        dropout, batch_norm, sage_aggr: see :class:`MixedOp`.
        share_op_weights_across_layers: one set of op weights used by every layer (needs
            ``dim == hidden_dim``); α stays per layer.
        learn_alpha: see above.
        hidden_dim: output width :math:`h` of every layer (default: ``dim``).
    """

    def __init__(
        self,
        space: Sequence[str],
        num_layers: int,
        dim: int,
        dropout: float = 0.0,
        batch_norm: bool = False,
        sage_aggr: str = "mean",
        share_op_weights_across_layers: bool = False,
        learn_alpha: bool = True,
        hidden_dim: Optional[int] = None,
        layer_spaces: Optional[Sequence[Sequence[str]]] = None,
    ):
        super().__init__()
        check_op_names(space)
        if layer_spaces is not None:
            # the DISCRETE ablation: one (possibly different) op per layer, no α
            if len(layer_spaces) != num_layers or any(len(ls) != 1 for ls in layer_spaces):
                raise ValueError(f"layer_spaces needs one single-op list per layer, got {layer_spaces}")
            for ls in layer_spaces:
                check_op_names(ls)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        hidden_dim = dim if hidden_dim is None else hidden_dim
        if share_op_weights_across_layers and dim != hidden_dim and num_layers > 1:
            raise ValueError("share_op_weights_across_layers needs dim == hidden_dim")
        self.space = list(space)
        self.num_layers = num_layers
        self.dim, self.hidden_dim = dim, hidden_dim
        self.share_op_weights_across_layers = share_op_weights_across_layers
        self.layer_spaces = [list(ls) for ls in layer_spaces] if layer_spaces is not None else None
        self.learn_alpha = learn_alpha and len(self.space) > 1 and layer_spaces is None

        layers: List[MixedOp] = []
        for i in range(num_layers):
            layer_space = self.layer_spaces[i] if self.layer_spaces is not None else self.space
            same_ops = bool(layers) and layer_space == layers[0].space
            shared = layers[0].ops if (share_op_weights_across_layers and same_ops) else None
            in_dim = dim if i == 0 else hidden_dim
            layers.append(MixedOp(layer_space, in_dim, hidden_dim, dropout, batch_norm, sage_aggr, shared))
        self.layers = ModuleList(layers)

        alpha = torch.zeros(num_layers, 1 if self.layer_spaces is not None else len(self.space))
        if self.learn_alpha:
            self.alpha = Parameter(alpha)
        else:
            # Fixed logits: zero -> uniform weights (mix), or the single op's weight 1.
            self.register_buffer("alpha", alpha)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()
        if self.learn_alpha:
            with torch.no_grad():
                self.alpha.normal_(0.0, 1.0).mul_(1e-3)

    def arch_parameters(self) -> List[Parameter]:
        """The trainable α (empty for ``mix`` and one-op spaces)."""
        return [self.alpha] if self.learn_alpha else []

    def op_weights(self) -> Tensor:
        r""":math:`p^{(i)} = \mathrm{softmax}(\alpha^{(i)})`, shape ``[num_layers, |space|]``."""
        return F.softmax(self.alpha, dim=-1)

    def layer_forward(self, i: int, x: Tensor, graph: Graph, weights: Optional[Tensor] = None) -> Tensor:
        """Layer ``i`` alone, for callers that fuse between layers. ``weights`` defaults to
        :meth:`op_weights` ``[i]`` (pass them to avoid recomputing the softmax per layer)."""
        if weights is None:
            weights = self.op_weights()[i]
        return self.layers[i](x, graph, weights)

    def forward(self, x: Tensor, graph: Graph) -> List[Tensor]:
        """All layer outputs ``[x^(0), x^(1), ..., x^(L)]`` (input included)."""
        weights = self.op_weights()
        outs = [x]
        for i in range(self.num_layers):
            outs.append(self.layers[i](outs[-1], graph, weights[i]))
        return outs


def _item_counts(num_items: Union[Mapping[str, int], Sequence[int], int], use_source: bool) -> Tuple[int, int]:
    if isinstance(num_items, Mapping):
        unknown = set(num_items) - {SOURCE, TARGET}
        if unknown:
            raise ValueError(f"num_items keys must be {SOURCE!r}/{TARGET!r}, got {sorted(num_items)}")
        return int(num_items.get(SOURCE, 0) or 0), int(num_items[TARGET])
    if isinstance(num_items, int):
        if use_source:
            raise ValueError("num_items must give (source, target) counts when use_source=True")
        return 0, num_items
    num_source, num_target = num_items
    return int(num_source or 0), int(num_target)


class CrossDomainSupernet(Module):
    r"""Embeddings, one :class:`Supernet` per domain, user fusion and NGCF-style readout
    (spec §2.1–2.5). For layers :math:`i = 1..L`:

    .. math::
        \mathbf{x}_S^{(i)} = f_S^{(i)}(\mathbf{x}_S^{(i-1)}), \quad
        \mathbf{x}_T^{(i)} = f_T^{(i)}(\mathbf{x}_T^{(i-1)}), \quad
        \mathbf{u}^{(i)} = \mathbf{W}_i\,[\mathbf{x}_S^{(i)}[\mathcal{U}] \,\|\,
        \mathbf{x}_T^{(i)}[\mathcal{U}]] + \mathbf{b}_i,

    and :math:`\mathbf{u}^{(i)}` replaces the user rows of *both* domains (no activation; the
    paper's Figure 1 gives no formula, this follows the reference code). Inputs are
    :math:`\mathbf{x}_S^{(0)} = [\mathbf{E}_U; \mathbf{E}_S]`, :math:`\mathbf{x}_T^{(0)} =
    [\mathbf{E}_U; \mathbf{E}_T]`. The readout concatenates every layer (paper §"CTR
    prediction", following NGCF): :math:`\mathbf{h} = \mathbf{x}^{(0)} \| \dots \|
    \mathbf{x}^{(L)} \in \mathbb{R}^{d + Lh}`.

    With ``use_source=False`` (``no_source`` ablation) there is no source table, no source
    supernet and no fusion; the target stack alone gives the reps, with unchanged shapes.

    Prediction heads are *not* part of this module; all its parameters are the "shared"
    parameters W of the hypergradient (spec §4.3), α included.

    Args:
        num_users: :math:`U` (shared user id space).
        num_items: ``{"source": I_s, "target": I_t}`` or ``(I_s, I_t)``; with
            ``use_source=False`` a plain ``I_t`` is accepted.
        embedding_dim: :math:`d`.
        hidden_dim: :math:`h` (must equal ``d`` when ``lightgcn`` is in the space).
        num_layers: :math:`L`.
        space: operation names.
        dropout, batch_norm, sage_aggr, share_op_weights_across_layers: see :class:`Supernet`.
        use_source: ``False`` for the ``no_source`` ablation.
        learn_alpha: ``False`` for the ``mix`` ablation (α fixed at 0).
    """

    def __init__(
        self,
        num_users: int,
        num_items: Union[Mapping[str, int], Sequence[int], int],
        embedding_dim: int = 32,
        hidden_dim: int = 32,
        num_layers: int = 2,
        space: Sequence[str] = DEFAULT_SPACE,
        dropout: float = 0.8,
        batch_norm: bool = False,
        sage_aggr: str = "mean",
        share_op_weights_across_layers: bool = False,
        use_source: bool = True,
        learn_alpha: bool = True,
        layer_ops: Optional[Mapping[str, Sequence[str]]] = None,
    ):
        super().__init__()
        num_source_items, num_target_items = _item_counts(num_items, use_source)
        if num_target_items < 1 or (use_source and num_source_items < 1):
            raise ValueError(f"need at least one item per used domain, got {num_items}")
        self.num_users = num_users
        self.num_source_items = num_source_items if use_source else 0
        self.num_target_items = num_target_items
        self.embedding_dim, self.hidden_dim, self.num_layers = embedding_dim, hidden_dim, num_layers
        self.space = list(space)
        self.use_source = use_source
        self.domains: List[str] = [SOURCE, TARGET] if use_source else [TARGET]

        self.layer_ops = {d: list(ops) for d, ops in layer_ops.items()} if layer_ops is not None else None

        def supernet(domain: str) -> Supernet:
            layer_spaces = None if self.layer_ops is None else [[op] for op in self.layer_ops[domain]]
            return Supernet(
                self.space, num_layers, embedding_dim, dropout, batch_norm, sage_aggr,
                share_op_weights_across_layers, learn_alpha, hidden_dim=hidden_dim, layer_spaces=layer_spaces,
            )

        self.user_embedding = Embedding(num_users, embedding_dim)
        self.item_embeddings = ModuleDict({TARGET: Embedding(num_target_items, embedding_dim)})
        self.supernets = ModuleDict({TARGET: supernet(TARGET)})
        if use_source:
            self.item_embeddings[SOURCE] = Embedding(num_source_items, embedding_dim)
            self.supernets[SOURCE] = supernet(SOURCE)
            self.fusion = ModuleList([Linear(2 * hidden_dim, hidden_dim) for _ in range(num_layers)])
        else:
            self.fusion = None
        self.reset_parameters()

    @property
    def out_dim(self) -> int:
        """Width of a node representation, :math:`d + Lh`."""
        return self.embedding_dim + self.num_layers * self.hidden_dim

    def reset_parameters(self) -> None:
        # N(0, 0.01^2): reference code value (paper silent), spec §2.1.
        torch.nn.init.normal_(self.user_embedding.weight, std=0.01)
        for emb in self.item_embeddings.values():
            torch.nn.init.normal_(emb.weight, std=0.01)
        for net in self.supernets.values():
            net.reset_parameters()
        if self.fusion is not None:
            for lin in self.fusion:
                lin.reset_parameters()

    # -- parameter groups --------------------------------------------------------------------
    def arch_parameters(self) -> List[Parameter]:
        """Trainable α of every domain (empty for ``mix`` / one-op spaces)."""
        return [p for d in self.domains for p in self.supernets[d].arch_parameters()]

    def weight_parameters(self) -> List[Parameter]:
        """Every parameter except α: embeddings, op weights, BN, fusion."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def shared_parameters(self) -> List[Parameter]:
        """W of the hypergradient (spec §4.3, ``bilevel.inner_params=shared``): every parameter
        of this module, α included. Heads live outside, so this is "all but the heads"."""
        return list(self.parameters())

    def alpha_dict(self) -> Dict[str, List[List[float]]]:
        """``{domain: softmax(α) per layer}`` as nested lists (for ``alpha.jsonl``); op order is
        :attr:`space`."""
        with torch.no_grad():
            return {d: self.supernets[d].op_weights().cpu().tolist() for d in self.domains}

    # -- propagation -------------------------------------------------------------------------
    def _check_graph(self, graph: Optional[Graph], domain: str, num_items: int) -> Graph:
        if graph is None:
            raise ValueError(f"the {domain} graph is required")
        if graph.num_users != self.num_users or graph.num_nodes != self.num_users + num_items:
            raise ValueError(
                f"{domain} graph has {graph.num_users} users / {graph.num_nodes} nodes; model expects "
                f"{self.num_users} users + {num_items} items"
            )
        return graph

    def node_features(self, domain: str) -> Tensor:
        r""":math:`\mathbf{x}^{(0)} = [\mathbf{E}_U; \mathbf{E}_D]`."""
        return torch.cat([self.user_embedding.weight, self.item_embeddings[domain].weight], dim=0)

    def forward(
        self, graph_s: Optional[Graph], graph_t: Graph
    ) -> Tuple[Optional[Tensor], Tensor]:
        """Full-graph propagation.

        Returns:
            ``(reps_s [U + I_s, d + Lh], reps_t [U + I_t, d + Lh])``; ``reps_s`` is ``None``
            when ``use_source=False`` (then ``graph_s`` is ignored and may be ``None``).
        """
        U = self.num_users
        graph_t = self._check_graph(graph_t, TARGET, self.num_target_items)
        net_t = self.supernets[TARGET]
        w_t = net_t.op_weights()
        x_t = self.node_features(TARGET)
        outs_t = [x_t]

        if not self.use_source:
            for i in range(self.num_layers):
                x_t = net_t.layer_forward(i, x_t, graph_t, w_t[i])
                outs_t.append(x_t)
            return None, torch.cat(outs_t, dim=-1)

        graph_s = self._check_graph(graph_s, SOURCE, self.num_source_items)
        net_s = self.supernets[SOURCE]
        w_s = net_s.op_weights()
        x_s = self.node_features(SOURCE)
        outs_s = [x_s]
        for i in range(self.num_layers):
            x_s = net_s.layer_forward(i, x_s, graph_s, w_s[i])
            x_t = net_t.layer_forward(i, x_t, graph_t, w_t[i])
            users = self.fusion[i](torch.cat([x_s[:U], x_t[:U]], dim=-1))
            x_s = torch.cat([users, x_s[U:]], dim=0)
            x_t = torch.cat([users, x_t[U:]], dim=0)
            outs_s.append(x_s)
            outs_t.append(x_t)
        return torch.cat(outs_s, dim=-1), torch.cat(outs_t, dim=-1)


def pair_repr(reps: Tensor, users: Tensor, items: Tensor, num_users: int) -> Tensor:
    r"""Predictor input :math:`\mathbf{h}^*_{uv} = \mathbf{h}_u \| \mathbf{h}_v`, ``[B, 2(d+Lh)]``.

    ``items`` are item ids of the domain of ``reps`` (node ``num_users + item``).
    """
    return torch.cat([reps[users], reps[num_users + items]], dim=-1)


class CTRPredictor(Module):
    r"""Click-through-rate head on :func:`pair_repr` (spec §2.5). Returns **logits**; the click
    probability is :math:`\hat{y} = \sigma(\mathrm{logit})` for both kinds.

    * ``mlp`` (paper, "a multi-layer MLP"): ``in -> hidden[0] -> ReLU -> ... -> 1``.
    * ``linear_leaky`` (reference code): :math:`\mathrm{LeakyReLU}(\mathbf{w}^\top\mathbf{h} + b)`
      (slope 0.01). Because the sigmoid follows the LeakyReLU, negative pre-activations are
      shrunk by 100x and their probabilities squashed towards 0.5, as in the reference code.

    Args:
        in_dim: ``2(d + Lh)``.
        kind: ``"mlp"`` or ``"linear_leaky"``.
        hidden: hidden widths of ``mlp`` (ignored by ``linear_leaky``).
    """

    def __init__(self, in_dim: int, kind: str = "mlp", hidden: Sequence[int] = (64,)):
        super().__init__()
        self.in_dim, self.kind, self.hidden = in_dim, kind, list(hidden)
        if kind == "mlp":
            widths = [in_dim, *self.hidden]
            layers: List[Module] = []
            for a, b in zip(widths[:-1], widths[1:]):
                layers += [Linear(a, b), torch.nn.ReLU()]
            layers.append(Linear(widths[-1], 1))
            self.net = torch.nn.Sequential(*layers)
        elif kind == "linear_leaky":
            self.net = torch.nn.Sequential(Linear(in_dim, 1), torch.nn.LeakyReLU())
        else:
            raise ValueError(f"unknown predictor kind {kind!r}; valid: ['linear_leaky', 'mlp']")

    def reset_parameters(self) -> None:
        for m in self.net:
            if isinstance(m, Linear):
                m.reset_parameters()

    def forward(self, h: Tensor) -> Tensor:
        """``h``: ``[B, in_dim]`` -> logits ``[B]``."""
        return self.net(h).squeeze(-1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_dim}, kind={self.kind!r}, hidden={self.hidden})"
