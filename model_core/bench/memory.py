"""Peak memory of the tensors a computation allocates, measured op by op on any device.

The CUDA allocator reports its peak (``torch.cuda.max_memory_allocated``), the CPU one does not,
and a process's RSS mixes tensors with libraries, GDAL's cache and the allocator's slack. This
tracker sees every tensor an operator returns, counts each storage once while any tensor on it
lives, and so gives the activation peak of a forward on a machine without a GPU, e.g. to size
what a 508 px patch needs on a GPU. Library workspaces (cuDNN, oneDNN) are not tensors returned
by operators and are not counted: on CUDA the allocator's figure is the one to trust.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class TensorMemoryTracker(TorchDispatchMode):
    """Within ``with TensorMemoryTracker(exclude=...) as t:``, ``t.peak`` is the most bytes of
    storages allocated inside the block that were alive at once, ``t.current`` those still
    alive. Storages of ``exclude`` tensors (weights, inputs) are never counted, nor are views of
    them or in-place results on them."""

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self._external = {_ptr(t) for t in exclude}
        self._live: dict[int, list[int]] = {}   # storage pointer -> [bytes, live tensors]
        self.current = 0
        self.peak = 0

    def _release(self, ptr: int) -> None:
        entry = self._live.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[ptr]

    def _track(self, t: torch.Tensor) -> None:
        if t.device.type == "meta":
            return
        ptr = _ptr(t)
        if ptr == 0 or ptr in self._external:
            return
        entry = self._live.get(ptr)
        if entry is None:
            entry = self._live[ptr] = [t.untyped_storage().nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(t, self._release, ptr)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


def _ptr(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def peak_tensor_bytes(fn: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Peak bytes of the tensors ``fn()`` allocates (its result dropped at once), beyond the
    ``exclude`` tensors that exist already."""
    with TensorMemoryTracker(exclude) as tracker:
        out = fn()
        del out
    return tracker.peak
