"""What a Dask worker runs: one block through the engine's own :func:`segment`.

The worker loads the model once and keeps it for the blocks that follow. The block's labels go
to ``<block>.tif.part`` and are renamed into place only when complete, so a worker that dies
mid-block leaves nothing the client would take for a result; the block runs again elsewhere. A
block whose work folder disappears (the run was cancelled) stops at its next batch.

Dask sends :func:`run_block` by reference: a worker imports the engine under the client's name,
``model_core`` (the repository on the worker's ``PYTHONPATH``) or, for runs sent from the QGIS
plugin, ``fctl_qgis.model_core`` (the plugin's folder on it).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_MODELS: dict[tuple, Any] = {}   # (model path, mtime, device) -> (model, card), per process

def _threads(spec: dict) -> int:
    """torch threads for this block: the client's choice, else the cores shared among the
    worker's task slots."""
    if spec.get("threads"):
        return int(spec["threads"])
    try:
        from distributed import get_worker

        slots = max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        slots = 1
    return max(1, (os.cpu_count() or 1) // slots)


def _model(options) -> tuple[Any, Any]:
    from ..checkpoint import load_checkpoint
    from ..inference.predict import resolve_device

    path = options.model or ""
    mtime = os.stat(path).st_mtime if path and os.path.exists(path) else 0.0
    key = (path, mtime, options.device)
    if key not in _MODELS:
        _MODELS.clear()   # one model per worker process
        _MODELS[key] = load_checkpoint(options.model, resolve_device(options.device))
    return _MODELS[key]


def run_block(spec: dict) -> dict:
    """Segment one block (``spec``: options, window, globals, path, threads); returns
    its summary. A block already in place (a task run twice) is not computed again."""
    import torch
    from osgeo import gdal

    from ..inference.engine import Block, segment
    from ..inference.options import SegmentOptions

    t0 = time.perf_counter()
    final = Path(spec["path"])
    if final.exists():
        return {"index": spec["index"], "seconds": 0.0, "pid": os.getpid(), "patches": 0,
                "reused": True}
    torch.set_num_threads(_threads(spec))
    if not _MODELS:   # first block of this process: tune its allocator like the command line's
        from ..inference.heap import keep_freed_memory

        keep_freed_memory()
    if not os.environ.get("GDAL_CACHEMAX"):
        gdal.SetCacheMax(64 * 2 ** 20)
    options = SegmentOptions(**{**spec["options"], "output": str(final), "vector": None,
                                "dask": "", "min_area": 0.0, "sieve_raster": False})
    model, card = _model(options)
    # a cancelled or failed run removes its work folder: a block still running stops then
    result = segment(options, model=model, card=card,
                     is_cancelled=lambda: not final.parent.is_dir(),
                     block=Block(tuple(spec["window"]), spec["globals"]))
    return {"index": spec["index"], "seconds": time.perf_counter() - t0, "pid": os.getpid(),
            "patches": result.patches, "reused": False}
