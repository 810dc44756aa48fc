"""Blocks of a distributed run and the work folder that holds them.

A block is a window of the processed area whose edges fall on patch starts of the whole
raster's grid (:func:`model_core.geometry.patch_starts`), so it is made of whole patches plus
the one patch column or row it shares with each neighbour (patches overlap). The engine gives an
extent the labels of the whole-raster run inside it (:mod:`model_core.inference.plan`), so each
block's labels are exactly the crop of a single-machine run, whoever computes it.

The work folder, ``<output>.fctl-blocks`` next to the output, holds one GeoTIFF per finished
block (written as ``.part`` and renamed when complete), the mosaic VRT when the input is a
folder of tiles, and ``run.json``: what the run is, so that ``--resume`` reuses blocks only of
the same run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..geometry import patch_starts
from ..inference.options import SegmentOptions

PixelWindow = tuple[int, int, int, int]

# Options that change a block's labels; the rest (outputs, polygons, sieving, reading threads,
# the scheduler) may change between a run and its resumption.
LABEL_FIELDS = ("input", "model", "device", "batch_size", "tta", "extent", "window", "mask",
                "mask_layer", "bands", "scale", "min_overlap", "shared_context", "pixel_size",
                "precision", "block_size")


@dataclass(frozen=True)
class BlockPlan:
    """One block: its index in row-major order, grid position and processing-grid window."""

    index: int
    row: int
    col: int
    window: PixelWindow

    @property
    def name(self) -> str:
        return f"block_{self.row:04d}_{self.col:04d}.tif"


def _cuts(start: int, length: int, total: int, patch: int, min_overlap: int,
          block: int) -> list[int]:
    """Edges of the blocks along one axis of [start, start + length): patch starts of the whole
    axis (``total`` px), about ``block`` px apart."""
    end = start + length
    cuts = [start]
    for s in patch_starts(total, patch, min_overlap):
        if cuts[-1] < s < end and s - cuts[-1] >= block and end - s >= patch // 2:
            cuts.append(s)
    return cuts + [end]


def plan_blocks(raster_size: tuple[int, int], window: PixelWindow, patch: int,
                min_overlap: int, block_size: int) -> list[BlockPlan]:
    """Blocks of about ``block_size`` px covering ``window`` of a raster of ``raster_size``."""
    if block_size < patch:
        raise ValueError(f"the block size {block_size} px is smaller than the model's {patch} "
                         "px patches: give a larger --block-size")
    x0, y0, w, h = window
    xc = _cuts(x0, w, raster_size[0], patch, min_overlap, block_size)
    yc = _cuts(y0, h, raster_size[1], patch, min_overlap, block_size)
    out = []
    for r in range(len(yc) - 1):
        for c in range(len(xc) - 1):
            out.append(BlockPlan(len(out), r, c, (xc[c], yc[r], xc[c + 1] - xc[c],
                                                  yc[r + 1] - yc[r])))
    return out


def work_folder(output: str) -> Path:
    """The run's work folder next to its output."""
    out = Path(output)
    return out.with_name(out.name + ".fctl-blocks")


def run_key(options: SegmentOptions, blocks: list[BlockPlan]) -> dict[str, Any]:
    """What identifies a run's blocks (written to ``run.json``)."""
    opts = dataclasses.asdict(options)
    key: dict[str, Any] = {f: opts[f] for f in LABEL_FIELDS}
    for f in ("input", "model", "mask"):
        if key[f] and os.path.exists(key[f]):
            st = os.stat(key[f])
            key[f] = [os.path.realpath(key[f]), st.st_size, int(st.st_mtime)]
    key["blocks"] = [list(b.window) for b in blocks]
    return json.loads(json.dumps(key))   # tuples -> lists, as read back


def check_resume(folder: Path, key: dict[str, Any]) -> list[str]:
    """Names of the finished blocks ``folder`` holds for the run ``key``; refuses a folder of
    another run."""
    manifest = folder / "run.json"
    if not manifest.exists():
        return []
    old = json.loads(manifest.read_text(encoding="utf-8"))
    if old != key:
        diff = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
        raise ValueError(f"{folder} holds the blocks of another run (different {', '.join(diff)}"
                         "): run without --resume to start again, or with that run's options")
    return sorted(p.name for p in folder.glob("block_*.tif"))


def write_manifest(folder: Path, key: dict[str, Any]) -> None:
    tmp = folder / "run.json.part"
    tmp.write_text(json.dumps(key, indent=1), encoding="utf-8")
    os.replace(tmp, folder / "run.json")
