"""glibc heap tuning of the processes that run the network (every command of
``python -m model_core``, Dask workers).

A forward pass allocates and frees activations of tens of MB; by default glibc maps and unmaps
them every time and the kernel zeroes the pages again: on CPU that system time was as large as
the compute (EfficientNet-Lite0, 508 px, batch 4: 1.7 -> 1.3 s per patch), and in training,
whose backward pass frees as much again, it was about a third of the CPU time (10 mini-batches
of the quick recipe: 53-61 -> 42-46 s, for 0.7-0.8 GB more peak RSS). So those processes keep freed blocks for
reuse (:func:`keep_freed_memory`), and hand them back to the system once the network is done
(:func:`return_freed_memory`), before the polygon step, whose peak would otherwise come on top
of them (100,000 x 10,000 px with polygons: 1.83 GB before).
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:   # not glibc
        return None


def keep_freed_memory() -> None:
    """Have glibc keep freed blocks up to 1 GiB for reuse instead of unmapping them. Done only
    in this project's own processes, never in a host application such as QGIS."""
    libc = _libc()
    try:
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    except AttributeError:   # no glibc, or no mallopt: nothing to tune
        log.debug("mallopt unavailable; allocator left as is")


def return_freed_memory() -> None:
    """Give the freed blocks of every heap arena back to the system (glibc's malloc_trim);
    harmless anywhere, QGIS included."""
    libc = _libc()
    try:
        libc.malloc_trim(0)
    except AttributeError:
        pass
