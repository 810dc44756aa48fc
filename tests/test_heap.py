"""The command line's processes keep freed memory for reuse (glibc): a network's activations and,
in training, its gradients are allocated and freed every mini-batch, and glibc's default maps
and unmaps every block over 32 MiB, so the kernel zeroed them again each time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Minor page faults of allocating, filling and freeing a 64 MiB tensor (torch's CPU allocator,
# like an activation; numpy would ask for huge pages, which hides the faults), the last 8 of 16
# times: kept blocks settle after a few rounds, while glibc's default maps new pages every time.
FAULTS = """
import resource, sys
import torch
if sys.argv[1] == "keep":
    from model_core.inference.heap import keep_freed_memory
    keep_freed_memory()
for _ in range(8):
    torch.ones(1 << 24)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    torch.ones(1 << 24)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_blocks_are_reused_instead_of_zeroed_again():
    pages = (64 << 20) // 4096
    default, kept = _faults("default"), _faults("keep")
    assert default >= 4 * pages, default    # each 64 MiB block mapped and faulted in again
    assert kept < pages, kept               # the freed block is handed out again as it is


def test_every_command_keeps_freed_memory(monkeypatch, tmp_path):
    """Training, evaluation and comparison run the network too (10 mini-batches of the quick
    recipe took 53-61 s with glibc's default and 42-46 s with freed blocks kept)."""
    from model_core import cli
    from model_core.inference import heap

    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(1))
    code = cli.main(["train", "--layout", "raster", "--image", str(tmp_path / "none.tif"),
                     "--labels", str(tmp_path / "none.gpkg"), "--out", str(tmp_path / "run")])
    assert code == 2            # the missing image is reported, after the allocator was set
    assert calls == [1]
