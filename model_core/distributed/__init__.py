"""Distributed segmentation over a Dask cluster, with the labels of a single-process run.

``python -m model_core segment INPUT OUT.tif --dask local:2`` (or ``--dask tcp://host:8786``)
splits the processed area into blocks of whole patches (:mod:`.blocks`), sends each to a Dask
worker that runs it through the engine's own code (:mod:`.worker`), and assembles and finishes
the result on the client (:mod:`.client`, reached through :func:`model_core.inference.segment`
when ``options.dask`` is set). Dask (``dask[distributed]``) is imported only when a run asks
for it.
"""

from __future__ import annotations
