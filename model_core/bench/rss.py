"""Peak RSS of a benchmarked process, counted from its own memory only.

``getrusage``'s ``ru_maxrss`` (and ``wait4``'s) is not that: Linux carries the high-water mark
of the memory a process had before ``exec`` over into it, and a child started by ``vfork`` or
``posix_spawn`` (as :mod:`subprocess` does) had its parent's memory before ``exec``. A child of
a bench process that once held 2 GB therefore reports 2 GB whatever it used: every whole-raster
row after the 20,000 px raster read 2,233 MB. ``VmHWM`` in ``/proc/self/status`` is the high-water
mark of the process's current memory, which starts afresh at ``exec``.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

MARKER = "FCTL_BENCH_PEAK_RSS_KB"

# Runs ``python -m PACKAGE ARGS`` and prints the process's own peak at exit.
_WRAPPER = f"""
import atexit, importlib, runpy, sys
package = sys.argv.pop(1)
rss = importlib.import_module(package + ".bench.rss")
atexit.register(lambda: print("\\n{MARKER}", int(rss.peak_rss_mb() * 1024), file=sys.stderr,
                              flush=True))
sys.argv = [package, *sys.argv[1:]]
runpy.run_module(package, run_name="__main__", alter_sys=True)
"""
_PACKAGE = __package__.rsplit(".", 1)[0]    # the engine, whatever it is imported as


def peak_rss_mb() -> float:
    """This process's peak RSS in MiB since it started (``VmHWM``); ``ru_maxrss`` where there is
    no ``/proc`` (it may then include the parent's memory, see the module docstring)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_model_core(args: Sequence[str], env: Mapping[str, str] | None = None,
                   cwd: str | Path | None = None) -> tuple[int, str, float]:
    """``python -m model_core ARGS`` in a fresh process: exit code, output (stdout and stderr)
    and the process's own peak RSS in MiB."""
    proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, _PACKAGE, *args],
                            env=dict(env or os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            cwd=str(cwd) if cwd else None)
    out, _ = proc.communicate()
    text = out.decode(errors="replace")
    found = re.findall(rf"^{MARKER} (\d+)$", text, re.M)
    if not found:
        raise RuntimeError(f"python -m model_core {' '.join(args)} reported no peak RSS "
                           f"(exit code {proc.returncode}):\n{text[-2000:]}")
    return proc.returncode, text, int(found[-1]) / 1024
