"""HAGO (Zhang et al., SIGIR 2025): heterogeneous adaptive graph coordinators, multi-domain graph
pre-training (GRACE / BGRL / COSTA) and graph-prompt tuning on the target domain."""

from cdrbench.methods.hago.coordinators import (
    CoordinatorBlock,
    HeterogeneousGraphCoordinators,
    NodeLayout,
    UnifiedGraph,
    build_unified_graph,
    coordinator_weight_table,
)
from cdrbench.methods.hago.encoders import GAT, GCN, LightGCN, WeightedGraph, make_encoder
from cdrbench.methods.hago.pretrain import BGRL, COSTA, GRACE, GraphAugmentation, MultiDomainPretraining, anchor_batches
from cdrbench.methods.hago.prompt import GraphPrompt, TargetRecommender, TrainableInputs

__all__ = [
    "CoordinatorBlock",
    "HeterogeneousGraphCoordinators",
    "NodeLayout",
    "UnifiedGraph",
    "build_unified_graph",
    "coordinator_weight_table",
    "GAT",
    "GCN",
    "LightGCN",
    "WeightedGraph",
    "make_encoder",
    "BGRL",
    "COSTA",
    "GRACE",
    "GraphAugmentation",
    "MultiDomainPretraining",
    "anchor_batches",
    "GraphPrompt",
    "TargetRecommender",
    "TrainableInputs",
]
