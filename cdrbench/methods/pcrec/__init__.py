"""PCRec (Wang et al., CogMI 2021): GCC-style contrastive pre-training of a GIN encoder on the
source graph, initialisation of the target embeddings, BPR fine-tuning."""

from cdrbench.methods.pcrec.features import GraphBatch, featurize, positional_features, top_eigenpairs
from cdrbench.methods.pcrec.gcc import GCCEncoder, MoCo, pretrain_scheduler, warmup_linear
from cdrbench.methods.pcrec.sampling import CSRGraph, RWRSampler, Subgraphs, Visits, batch_generator, reference_walk

__all__ = [
    "CSRGraph",
    "RWRSampler",
    "Subgraphs",
    "Visits",
    "batch_generator",
    "reference_walk",
    "GraphBatch",
    "featurize",
    "positional_features",
    "top_eigenpairs",
    "GCCEncoder",
    "MoCo",
    "pretrain_scheduler",
    "warmup_linear",
]
