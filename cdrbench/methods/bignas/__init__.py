"""BiGNAS (Ge et al., AAAI-25): cross-domain supernet, importance perceptron, implicit hypergradient."""

from cdrbench.methods.bignas.hypergrad import apply_hypergradient, neumann_hypergradient
from cdrbench.methods.bignas.ops import OPS, GraphOp, make_op
from cdrbench.methods.bignas.perceptron import ImportancePerceptron, train_union_edge_index, uniform_weights
from cdrbench.methods.bignas.supernet import (
    DEFAULT_SPACE,
    CrossDomainSupernet,
    CTRPredictor,
    MixedOp,
    Supernet,
    pair_repr,
)

__all__ = [
    "OPS",
    "GraphOp",
    "make_op",
    "MixedOp",
    "Supernet",
    "CrossDomainSupernet",
    "CTRPredictor",
    "pair_repr",
    "DEFAULT_SPACE",
    "ImportancePerceptron",
    "train_union_edge_index",
    "uniform_weights",
    "neumann_hypergradient",
    "apply_hypergradient",
]
