"""Pure ``nn.Module`` encoders with explicit constructor arguments."""

from cdrbench.models.lightgcn import LightGCNEncoder
from cdrbench.models.mf import MFEncoder
from cdrbench.models.ngcf import NGCFEncoder

__all__ = ["LightGCNEncoder", "MFEncoder", "NGCFEncoder"]
