"""FCtL network modules, named after the paper's concepts (LCC, MCF, LCF, LFI, ALE)."""

from .ale import ALE, LFI, ConcatFusion, GroupDepthConv, crop_to_patch
from .backbone import Encoder
from .decoder import FCN8sDecoder
from .fctl import FCtL, parameter_counts
from .lcc import LCC, axis_offsets
from .lcf import LCF
from .mcf import MCF

__all__ = ["ALE", "LFI", "ConcatFusion", "GroupDepthConv", "crop_to_patch", "Encoder",
           "FCN8sDecoder", "FCtL", "parameter_counts", "LCC", "axis_offsets", "LCF", "MCF"]
