"""Where the dock writes a run's results: the output folder (QGIS's temporary folder when none
is chosen) and a file stem named after the layer and the time, unique within the folder."""

from __future__ import annotations

import time
from pathlib import Path

from qgis.core import QgsProcessingUtils


def safe_name(name: str) -> str:
    """``name`` usable in a file name (at most 40 characters; "layer" when nothing is left)."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:40] or "layer"


_ISSUED_STEMS: set[str] = set()


def unique_stem(folder: Path, stem: str) -> str:
    """``stem``, or ``stem_2``, ``stem_3``...: unique even for two runs started in the same
    second, whose outputs do not exist yet (names issued in this session are remembered) and
    for files already in ``folder`` (finished or still being written as .part)."""
    candidate, n = stem, 1
    while str(folder / candidate) in _ISSUED_STEMS or any(folder.glob(f"{candidate}.*")):
        n += 1
        candidate = f"{stem}_{n}"
    _ISSUED_STEMS.add(str(folder / candidate))
    return candidate


def output_stem(folder_text: str, layer_name: str) -> tuple[Path, str]:
    """The output folder (``folder_text``, else QGIS's temporary folder; created if need be)
    and a fresh stem for the run's files in it."""
    folder = Path(folder_text.strip() or QgsProcessingUtils.tempFolder())
    folder.mkdir(parents=True, exist_ok=True)
    stem = unique_stem(folder, f"{safe_name(layer_name)}_fctl_"
                               f"{time.strftime('%Y%m%d_%H%M%S')}")
    return folder, stem
