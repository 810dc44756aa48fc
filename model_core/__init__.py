"""FCtL engine: the network, streaming inference over GDAL rasters, training and evaluation.

Pure PyTorch + numpy + GDAL; importable without QGIS. GDAL is imported only where raster I/O
needs it, so the network runs on machines without GDAL.
"""

from .config import FCtLConfig, ablation_configs

__version__ = "0.1.0"
__all__ = ["FCtLConfig", "ablation_configs", "__version__"]
