"""The dock's choices remembered between QGIS sessions, in the user profile's QgsSettings under
``fctl/`` (model, output folder, click window, polygons on/off, and every run option by its
name: ``fctl/device``, ``fctl/precision``, ``fctl/batch_size``...)."""

from __future__ import annotations

from typing import Any, Mapping

from qgis.core import QgsSettings

PREFIX = "fctl/"


def key(name: str) -> str:
    return PREFIX + name


def read_all(names: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The stored values of ``names`` (only those present; raw, as QSettings returns them)."""
    s = QgsSettings()
    return {n: s.value(key(n)) for n in names if s.contains(key(n))}


def write_all(values: Mapping[str, Any]) -> None:
    s = QgsSettings()
    for name, value in values.items():
        s.setValue(key(name), value)


def as_bool(raw: Any, default: bool) -> bool:
    if raw is None:
        return default
    if isinstance(raw, bool):
        return raw
    return str(raw).strip().lower() in ("true", "1", "yes")


def as_int(raw: Any, default: int) -> int:
    try:
        return int(float(raw))
    except (TypeError, ValueError):
        return default


def clear() -> None:
    """Forget everything the plugin stored (tests, or a reset)."""
    QgsSettings().remove(PREFIX.rstrip("/"))
