"""Build the installable plugin zip (``make package``) and install it into a QGIS profile
(``make deploy``).

Zip layout (QGIS "Install from ZIP"): one top folder ``fctl_qgis/`` holding the plugin modules,
its ``metadata.txt`` and ``LICENSE`` (GPL-2.0-or-later, from the repository root),
``model_core/`` (the engine, imported by the plugin as ``fctl_qgis.model_core``, see
``fctl_qgis/engine.py``) and ``resources/`` (icons, the default model and its licence note), so
that the engine's ``DEFAULT_MODEL`` resolves inside the plugin. No compiled files, no tests.
:func:`check_zip` applies qgis-plugin-ci-style checks to the result.

Why not qgis-plugin-ci (2.10.0, tried): it packages ``git archive`` of the plugin folder only,
and its ``--asset-path`` files keep their repository paths, so the engine and the model land in
extra top folders (``model_core/``, ``resources/``) beside ``fctl_qgis/`` instead of inside it;
it also refuses a tree with uncommitted changes or, with ``-c``, rewrites the working tree
(``git reset --hard`` to a stash) when it is done.
"""

from __future__ import annotations

import argparse
import configparser
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "fctl_qgis"
DEFAULT_MODEL = Path("resources") / "models" / "default.safetensors"
MAX_ZIP_BYTES = 25 * 2 ** 20     # plugins.qgis.org's upload limit
ABSOLUTE_ENGINE_IMPORT = re.compile(r"^\s*(from|import)\s+model_core\b", re.M)
REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author",
                     "email", "repository")
FORBIDDEN = re.compile(r"(__pycache__|\.pyc$|\.pyo$|\.so$|\.pyd$|(^|/)tests?/|(^|/)\.|"
                       r"\.part$|~$)")
SOURCE_SUFFIXES = {".py", ".txt", ".md", ".json", ".svg", ".png", ".qml", ".ui", ".safetensors"}


class PackageError(RuntimeError):
    """The plugin cannot be packaged or the zip fails a check; the message says why."""


def _files(folder: Path, base: Path) -> list[tuple[Path, str]]:
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(base).as_posix()
        if p.is_file() and p.suffix in SOURCE_SUFFIXES and not FORBIDDEN.search(rel):
            out.append((p, rel))
    return out


def collect(root: Path = ROOT, default_model: Path | None = None) -> list[tuple[Path, str]]:
    """(source file, path inside the zip) of everything the plugin needs."""
    for needed, why in ((root / PLUGIN / "metadata.txt", "the plugin needs its metadata.txt"),
                        (root / "LICENSE", "the zip must carry the licence (GPL-2.0-or-later)")):
        if not needed.is_file():
            raise PackageError(f"{needed} is missing: {why}")
    model = default_model or root / DEFAULT_MODEL
    if not Path(model).is_file():
        raise PackageError(f"the default model {model} is missing: train or copy it there "
                           "(see README, 'Default model') before `make package`")
    items = [(p, f"{PLUGIN}/{rel}") for p, rel in _files(root / PLUGIN, root / PLUGIN)]
    # the benchmark is a development tool: it stays in the repository
    items += [(p, f"{PLUGIN}/{rel}") for p, rel in _files(root / "model_core", root)
              if p.suffix == ".py" and not rel.startswith("model_core/bench/")]
    # the plugin needs the icons and the default model (with its licence note), not the
    # repository's sample data
    items += [(p, f"{PLUGIN}/{rel}") for p, rel in _files(root / "resources" / "icons", root)]
    items.append((Path(model), f"{PLUGIN}/{DEFAULT_MODEL.as_posix()}"))
    model_readme = root / DEFAULT_MODEL.parent / "README.md"
    if model_readme.is_file():
        items.append((model_readme, f"{PLUGIN}/{DEFAULT_MODEL.parent.as_posix()}/README.md"))
    for extra in ("LICENSE", "README.md"):
        if (root / extra).is_file():
            items.append((root / extra, f"{PLUGIN}/{extra}"))
    return items


def build(out: Path, root: Path = ROOT, default_model: Path | None = None) -> Path:
    """Write the zip atomically and check it."""
    items = collect(root, default_model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for src, arc in items:
                z.write(src, arc)
        problems = check_zip(tmp)
        if problems:
            raise PackageError("the plugin zip fails its checks:\n  " + "\n  ".join(problems))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def check_zip(path: Path) -> list[str]:
    """qgis-plugin-ci-style checks; returns the problems found (empty = fine)."""
    problems: list[str] = []
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        tops = {n.split("/", 1)[0] for n in names}
        if tops != {PLUGIN}:
            problems.append(f"the zip must hold exactly one top folder {PLUGIN}/, has {sorted(tops)}")
        bad = [n for n in names if FORBIDDEN.search(n.split("/", 1)[-1])]
        if bad:
            problems.append(f"compiled, hidden or test files: {bad[:5]}")
        meta_name = f"{PLUGIN}/metadata.txt"
        if meta_name not in names:
            return problems + ["metadata.txt is missing"]
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str  # keys are case-sensitive (qgisMinimumVersion)
        parser.read_string(z.read(meta_name).decode("utf-8"))
        meta = dict(parser["general"]) if parser.has_section("general") else {}
        missing = [k for k in REQUIRED_METADATA if not meta.get(k, "").strip()]
        if missing:
            problems.append(f"metadata.txt lacks {missing}")
        if meta.get("version") and not re.fullmatch(r"\d+\.\d+(\.\d+)?", meta["version"]):
            problems.append(f"version {meta['version']!r} is not x.y or x.y.z")
        icon = meta.get("icon", "")
        if not icon or f"{PLUGIN}/{icon}" not in names:
            problems.append(f"the icon {icon!r} named in metadata.txt is not in the zip")
        init = f"{PLUGIN}/__init__.py"
        if init not in names or "def classFactory" not in z.read(init).decode():
            problems.append("__init__.py with classFactory is missing")
        if f"{PLUGIN}/{DEFAULT_MODEL.as_posix()}" not in names:
            problems.append("the default model is missing")
        if f"{PLUGIN}/model_core/__init__.py" not in names:
            problems.append("the engine (model_core) is missing")
        if f"{PLUGIN}/LICENSE" not in names:
            problems.append("the LICENSE file is missing")
        absolute = [n for n in names if n.endswith(".py")
                    and ABSOLUTE_ENGINE_IMPORT.search(z.read(n).decode("utf-8", "replace"))]
        if absolute:
            problems.append("these modules import a top-level model_core instead of the "
                            f"plugin's own engine (use relative imports / fctl_qgis.engine): "
                            f"{absolute[:5]}")
        for n in names:
            if n.endswith(".py"):
                try:
                    compile(z.read(n), n, "exec", dont_inherit=True)
                except SyntaxError as exc:
                    problems.append(f"{n} does not compile: {exc}")
    size = path.stat().st_size
    if size > MAX_ZIP_BYTES:
        problems.append(f"the zip is {size / 2**20:.1f} MiB, over the {MAX_ZIP_BYTES / 2**20:.0f} "
                        "MiB that plugins.qgis.org accepts: ship a smaller default model")
    return problems


def default_profiles_path() -> Path:
    return Path.home() / ".local" / "share" / "QGIS" / "QGIS3" / "profiles"


def deploy(zip_path: Path, profiles: Path | None = None, profile: str = "default") -> Path:
    """Unzip into ``<profiles>/<profile>/python/plugins`` (replacing an older copy) and enable the
    plugin in that profile's QGIS3.ini."""
    profiles = profiles or default_profiles_path()
    base = profiles / profile
    plugins = base / "python" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=plugins) as tmp:
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(tmp)
        target = plugins / PLUGIN
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(Path(tmp) / PLUGIN), target)
    enable(base / "QGIS" / "QGIS3.ini")
    return plugins / PLUGIN


def enable(ini: Path) -> None:
    """Set ``[PythonPlugins] fctl_qgis=true`` in a QGIS3.ini, keeping everything else."""
    ini.parent.mkdir(parents=True, exist_ok=True)
    lines = ini.read_text(encoding="utf-8").splitlines() if ini.is_file() else []
    out, in_section, done = [], False, False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if in_section and not done:
                out.append(f"{PLUGIN}=true")
                done = True
            in_section = stripped == "[PythonPlugins]"
        elif in_section and stripped.split("=", 1)[0].strip() == PLUGIN:
            line, done = f"{PLUGIN}=true", True
        out.append(line)
    if not done:
        if not in_section:
            out += ["", "[PythonPlugins]"] if out else ["[PythonPlugins]"]
        out.append(f"{PLUGIN}=true")
    ini.write_text("\n".join(out) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="build the zip here (e.g. dist/fctl_qgis.zip)")
    ap.add_argument("--deploy", type=Path, metavar="ZIP", help="install this zip into QGIS")
    ap.add_argument("--default-model", type=Path,
                    help=f"checkpoint to ship as the default model (default: {DEFAULT_MODEL})")
    ap.add_argument("--profiles-path", type=Path,
                    help=f"QGIS profiles folder (default: {default_profiles_path()})")
    ap.add_argument("--profile", default="default")
    args = ap.parse_args(argv)
    if not args.out and not args.deploy:
        ap.error("give --out and/or --deploy")
    try:
        if args.out:
            path = build(args.out, default_model=args.default_model)
            print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        if args.deploy:
            target = deploy(args.deploy, args.profiles_path, args.profile)
            print(f"installed into {target} and enabled; restart QGIS")
    except (PackageError, OSError, zipfile.BadZipFile) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
