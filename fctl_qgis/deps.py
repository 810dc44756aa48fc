"""Python dependencies of the engine inside QGIS: detect what is missing, install it with pip.

QGIS's Python often lacks torch and timm. The plugin still loads; the Processing provider then
offers no algorithm and the dock lists what is missing, what will be installed and which device
will run, with an "Install" button. The installer:

* runs pip as a *subprocess of QGIS's own Python interpreter* (:func:`.platform_env.find_python`;
  inside QGIS ``sys.executable`` is QGIS itself), so pip's logging and output redirections stay
  out of QGIS's process, and a cancel terminates it;
* installs with ``--target`` into a plugin-owned folder that :mod:`.bootstrap` puts at the *front*
  of ``sys.path`` (what was installed is what runs), with ``numpy<2`` as a constraint, and leaves
  numpy out of that folder when QGIS's own numpy fits (GDAL is built against it);
* takes torch from PyTorch's index for this machine: the CUDA build the NVIDIA driver supports,
  else the CPU build (:func:`.platform_env.choose_torch_build`);
* checks the installed versions and whether CUDA works with QGIS's Python afterwards, and
  refreshes the Processing provider (:func:`refresh_processing`) so that ``fctl:segment``
  appears without a restart.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .bootstrap import deps_dir, put_first
from .i18n import tr
from .platform_env import (InstallerError, TorchBuild, clean_env, detect_torch_build,
                           find_python, no_window, probe_python)

log = logging.getLogger(__name__)

# Import name -> pinned requirement (kept equal to the repository's requirements.txt; a test
# checks).
REQUIRED = {
    "torch": "torch==2.14.1",
    "torchvision": "torchvision==0.29.1",
    "timm": "timm==1.0.31",
    "safetensors": "safetensors==0.8.0",
}
# Debian's GDAL bindings are built against numpy 1.x: never let pip pull numpy 2 next to them.
CONSTRAINTS = ["numpy<2"]
TORCH_PACKAGES = {"torch", "torchvision"}
VERIFY_MARK = "FCTL-VERIFY "


class Cancelled(RuntimeError):
    """The user cancelled the installation."""


@dataclass
class DependencyStatus:
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def message(self) -> str:
        if self.ok:
            return tr("All dependencies are available.")
        text = tr("FCtL needs the Python package(s) {names}, missing from QGIS's Python.").format(
            names=", ".join(self.missing))
        try:
            return text + " " + make_plan({m: REQUIRED[m] for m in self.missing}).describe()
        except InstallerError as exc:
            return text + " " + str(exc)


def find_spec(name: str):
    """Module lookup, a seam for tests that simulate missing packages."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def check(names: Sequence[str] | None = None) -> DependencyStatus:
    """Which required packages cannot be imported (nothing is imported)."""
    names = list(REQUIRED) if names is None else list(names)
    return DependencyStatus([n for n in names if find_spec(n) is None])


# ------------------------------------------------------------------ plan
@dataclass
class InstallPlan:
    python: Path                        # QGIS's Python interpreter
    requirements: dict[str, str]        # import name -> requirement ("torch==2.14.1")
    target: Path                        # the plugin-owned dependency folder
    build: TorchBuild | None = None     # the torch build (None: no torch in the requirements)
    system_numpy: str | None = None     # QGIS's numpy version, kept out of the target when < 2

    @property
    def keeps_system_numpy(self) -> bool:
        return bool(self.system_numpy) and int(self.system_numpy.split(".")[0]) < 2

    def describe(self) -> str:
        """What will be installed, where, and which device will run (shown by the dock)."""
        reqs = ", ".join(self.requirements.values())
        text = tr("'Install dependencies' runs pip with QGIS's Python ({python}) to install "
                  "{reqs} into {target}").format(python=self.python, reqs=reqs,
                                                 target=self.target)
        if self.build is None:
            return text + "."
        text += tr(": the {label} build of PyTorch, about {gb:.1f} GB to download").format(
            label=self.build.label, gb=self.build.download_gb)
        if self.build.note:
            text += f" ({self.build.note})"
        device = (tr("the GPU {name} (CUDA)").format(name=self.build.device) if self.build.cuda
                  else tr("the CPU"))
        return text + ". " + tr("FCtL will then run on {device}.").format(device=device)


def _name(requirement: str) -> str:
    for sep in "=<>!~;[ ":
        requirement = requirement.split(sep)[0]
    return requirement.strip()


def make_plan(requirements: Mapping[str, str] | Sequence[str] | None = None,
              target: str | Path | None = None, python: str | Path | None = None,
              build: TorchBuild | None = None) -> InstallPlan:
    """The installation for ``requirements`` (default: the missing pins) on this machine."""
    if requirements is None:
        requirements = {m: REQUIRED[m] for m in check().missing}
    elif not isinstance(requirements, Mapping):
        requirements = {_name(r).replace("-", "_"): r for r in requirements}
    python = Path(python) if python is not None else find_python()
    info = _probe(python)
    if tuple(info["version"]) != tuple(sys.version_info[:2]):
        raise InstallerError(tr("{python} is Python {found}, not QGIS's Python {want}: install "
                                "the dependencies by hand with QGIS's Python").format(
            python=python, found=".".join(map(str, info["version"])),
            want=".".join(map(str, sys.version_info[:2]))))
    if not info["pip"]:
        raise InstallerError(tr("pip is not available in QGIS's Python ({python}): install it "
                                "(Debian/Ubuntu: apt install python3-pip; OSGeo4W: the "
                                "python3-pip package), then click 'Install dependencies' "
                                "again").format(python=python))
    if build is None and {_name(r) for r in requirements.values()} & TORCH_PACKAGES:
        build = _detected_build()
    return InstallPlan(python, dict(requirements), Path(target) if target else deps_dir(), build,
                       info["numpy"])


_CACHE: dict[str, object] = {}


def _probe(python: Path) -> dict:
    key = f"probe:{python}"
    if key not in _CACHE:
        _CACHE[key] = probe_python(python)
    return _CACHE[key]  # type: ignore[return-value]


def _detected_build() -> TorchBuild:
    if "build" not in _CACHE:
        _CACHE["build"] = detect_torch_build()
    return _CACHE["build"]  # type: ignore[return-value]


def pip_command(plan: InstallPlan, constraints_file: str | Path,
                extra: Sequence[str] = ()) -> list[str]:
    """The exact pip command line of ``plan``."""
    cmd = [str(plan.python), "-m", "pip", "install", "--target", str(plan.target), "--upgrade",
           "--no-input", "--only-binary", ":all:", "--disable-pip-version-check",
           "--no-warn-script-location", "--progress-bar", "off",
           "--constraint", str(constraints_file)]
    if plan.build is not None:
        # an extra index: the user's own pip configuration (a mirror, a proxy) keeps working,
        # and PyTorch's "2.14.1+cu126" outranks PyPI's "2.14.1"
        cmd += ["--extra-index-url", plan.build.index_url]
    return cmd + list(extra) + list(plan.requirements.values())


# ------------------------------------------------------------------ running
def run_process(cmd: Sequence[str], log_fn: Callable[[str], None] | None = None,
                should_cancel: Callable[[], bool] | None = None,
                env: Mapping[str, str] | None = None, poll_s: float = 0.2) -> int:
    """Run ``cmd``, passing each output line to ``log_fn``; returns its exit status. When
    ``should_cancel()`` turns true the process is interrupted (then killed) and
    :class:`Cancelled` is raised."""
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace",
                            env=dict(env) if env is not None else None, **no_window())
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    done = False
    while not done:
        if should_cancel is not None and should_cancel():
            _stop(proc)
            raise Cancelled(tr("installation cancelled: click 'Install dependencies' to start "
                               "again"))
        try:
            line = lines.get(timeout=poll_s)
        except queue.Empty:
            continue
        if line is None:
            done = True
            continue
        log.debug("pip: %s", line)
        if log_fn is not None:
            log_fn(line)
    return proc.wait()


def _stop(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Interrupt (pip then removes its temporary folders), then kill after ``grace_s``."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGINT if os.name != "nt" else signal.SIGTERM)
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class VerifyReport:
    versions: dict[str, str] = field(default_factory=dict)   # import name -> installed version
    problems: list[str] = field(default_factory=list)
    cuda: bool | None = None      # None: torch was not checked
    device: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> list[str]:
        lines = [tr("Installed: {items}").format(
            items=", ".join(f"{k} {v}" for k, v in self.versions.items()))]
        if self.cuda is True:
            lines.append(tr("CUDA works: FCtL will run on {device}.").format(device=self.device))
        elif self.cuda is False:
            lines.append(tr("CUDA is not available: FCtL will run on the CPU."))
        return lines + self.problems


def verify(plan: InstallPlan, timeout: float = 600) -> VerifyReport:
    """Import each requirement with QGIS's Python, the dependency folder first (as the plugin
    does), and compare the versions with the pins; with torch, also run one CUDA operation."""
    pairs = {mod: _name(req) for mod, req in plan.requirements.items()}
    code = ("import importlib, importlib.metadata as md, json, sys\n"
            f"pairs = {pairs!r}\nout = {{'versions': {{}}, 'errors': {{}}, 'files': {{}}}}\n"
            "for mod, dist in pairs.items():\n"
            "    try:\n        m = importlib.import_module(mod)\n"
            "        out['versions'][mod] = md.version(dist)\n"
            "        out['files'][mod] = getattr(m, '__file__', '') or ''\n"
            "    except Exception as exc:\n        out['errors'][mod] = repr(exc)\n"
            "if 'torch' in sys.modules:\n    import torch\n    try:\n"
            "        out['cuda'] = bool(torch.cuda.is_available()) and "
            "float(torch.ones(2, device='cuda').sum()) == 2.0\n"
            "        out['device'] = torch.cuda.get_device_name(0) if out['cuda'] else 'CPU'\n"
            "    except Exception as exc:\n        out['cuda'] = False\n"
            "        out['device'] = 'CPU (CUDA fails: %r)' % (exc,)\n"
            f"print({VERIFY_MARK!r} + json.dumps(out))\n")
    proc = subprocess.run([str(plan.python), "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=clean_env([plan.target]), **no_window())
    marked = [ln for ln in proc.stdout.splitlines() if ln.startswith(VERIFY_MARK)]
    if not marked:
        return VerifyReport(problems=[tr("checking the installed packages failed: {err}").format(
            err=proc.stderr.strip()[-800:])])
    out = json.loads(marked[-1][len(VERIFY_MARK):])
    report = VerifyReport(out["versions"], cuda=out.get("cuda"), device=out.get("device", ""))
    target = str(plan.target.resolve())
    for mod, req in plan.requirements.items():
        if mod in out["errors"]:
            report.problems.append(tr("{mod} does not import: {err}").format(
                mod=mod, err=out["errors"][mod]))
            continue
        want = req.split("==", 1)[1].strip() if "==" in req else ""
        got = out["versions"][mod]
        if want and got.split("+")[0] != want:
            report.problems.append(tr("{mod} {got} was found instead of {want}: an older copy "
                                      "shadows it").format(mod=mod, got=got, want=want))
        elif not str(Path(out["files"][mod]).resolve()).startswith(target):
            report.problems.append(tr("{mod} is imported from {path}, not from {target}").format(
                mod=mod, path=out["files"][mod], target=target))
    return report


def summary_lines(lines: Sequence[str]) -> list[str]:
    """The summary :func:`install` wrote after pip's output (versions, CUDA, problems)."""
    prefix = tr("Installed: {items}").split("{")[0]
    starts = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    return list(lines[starts[-1]:]) if starts else list(lines[-2:])


def _drop_numpy(target: Path) -> None:
    """Remove numpy from the dependency folder (QGIS's numpy, which GDAL uses, then serves)."""
    for path in [target / "numpy", target / "numpy.libs", *target.glob("numpy-*.dist-info")]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
    for script in target.glob("bin/f2py*"):
        script.unlink(missing_ok=True)


def install(requirements: Mapping[str, str] | Sequence[str] | None = None,
            target: str | Path | None = None, extra: Sequence[str] = (),
            log_fn: Callable[[str], None] | None = None,
            should_cancel: Callable[[], bool] | None = None,
            plan: InstallPlan | None = None) -> int:
    """Install ``requirements`` (default: the missing pins) into ``target`` with pip run by QGIS's
    Python; returns pip's exit status (non-zero also when the check after it fails). pip's output
    and then the summary (versions, CUDA) go to ``log_fn`` line by line. On success the folder
    is put first on ``sys.path``: the packages import in this QGIS session without a restart."""
    plan = plan or make_plan(requirements, target)
    if not plan.requirements:
        return 0
    emit = log_fn or (lambda line: None)
    plan.target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fctl-pip-") as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(CONSTRAINTS) + "\n", encoding="utf-8")
        cmd = pip_command(plan, constraints, extra)
        log.info("running %s", " ".join(cmd))
        emit(plan.describe())
        started = time.monotonic()
        rc = run_process(cmd, emit, should_cancel, env=clean_env())
    log.info("pip finished with status %d in %.0f s", rc, time.monotonic() - started)
    if rc != 0:
        return rc
    if plan.keeps_system_numpy:
        _drop_numpy(plan.target)
    report = verify(plan)
    for line in report.summary():
        emit(line)
    if not report.ok:
        return 1
    put_first(plan.target)
    return 0


def refresh_processing() -> bool:
    """Reload the Processing provider's algorithms (after an install): ``fctl:segment`` appears
    in the toolbox without restarting QGIS. True when it is listed."""
    from qgis.core import QgsApplication

    from .provider import PROVIDER_ID

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById(PROVIDER_ID)
    if provider is None:
        return False
    provider.refreshAlgorithms()
    return registry.algorithmById(f"{PROVIDER_ID}:segment") is not None
