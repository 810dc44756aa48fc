"""The dock's run-option widgets, built from the engine's run-option table
(:mod:`model_core.inference.option_table`): one widget per option the table offers in the dock,
except the layer, model and area, which the dock shows its own way."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from qgis.gui import QgsDoubleSpinBox, QgsSpinBox
from qgis.PyQt.QtCore import QRegularExpression
from qgis.PyQt.QtGui import QRegularExpressionValidator
from qgis.PyQt.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QLineEdit, QSizePolicy,
                                 QWidget)

from .engine import engine_import
RunOption, dock_options, parse_numbers = engine_import(
    "inference.option_table", "RunOption", "dock_options", "parse_numbers")

TrFn = Callable[[str], str]
# Kinds with a widget here; "raster", "model" and "extent" are the dock's own pickers.
WIDGET_KINDS = ("bool", "int", "float", "choice", "text", "bands", "range")


def _make(opt: RunOption, parent: QWidget, tr: TrFn) -> QWidget:
    k = opt.kind
    if k == "bool":
        w: QWidget = QCheckBox(tr(opt.label), parent)
    elif k == "int":
        w = QgsSpinBox(parent)
        w.setRange(int(opt.minimum or 0), int(opt.maximum if opt.maximum is not None else 10 ** 6))
        w.setClearValue(int(opt.default))
        if opt.special:
            w.setSpecialValueText(tr(opt.special))
    elif k == "float":
        w = QgsDoubleSpinBox(parent)
        w.setDecimals(opt.decimals)
        w.setRange(opt.minimum or 0.0, opt.maximum if opt.maximum is not None else 1e12)
        w.setClearValue(float(opt.default))
        if opt.special:
            w.setSpecialValueText(tr(opt.special))
    elif k == "choice":
        w = QComboBox(parent)
        for choice in opt.choices:
            w.addItem(tr(choice), choice)
    elif k == "bands":
        w = QLineEdit(parent)
        w.setPlaceholderText(tr("the model's, e.g. 3 2 1"))
        w.setValidator(QRegularExpressionValidator(QRegularExpression(r"[0-9 ,]*"), w))
    elif k == "range":
        w = QLineEdit(parent)
        w.setPlaceholderText(tr("automatic, e.g. 0 4000"))
        w.setValidator(QRegularExpressionValidator(QRegularExpression(r"[0-9 ,.eE+-]*"), w))
    elif k == "text":
        w = QLineEdit(parent)
    else:
        raise ValueError(f"run option {opt.name!r} of kind {k!r} has no dock widget")
    if k in ("int", "float"):   # as wide as the other fields of the form
        w.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
    w.setToolTip(tr(opt.help))
    return w


class OptionWidgets:
    """Widgets of the dock's run options, by option name, set to the table's defaults."""

    def __init__(self, parent: QWidget, tr: TrFn) -> None:
        self.tr = tr
        self.options = [o for o in dock_options() if o.kind in WIDGET_KINDS]
        self.widgets: dict[str, QWidget] = {o.name: _make(o, parent, tr) for o in self.options}
        self.reset()

    def __getitem__(self, name: str) -> QWidget:
        return self.widgets[name]

    def add_rows(self, form: QFormLayout, advanced: bool) -> None:
        """Add the basic (or the advanced) options to ``form`` in the table's order."""
        for opt in self.options:
            if opt.advanced == advanced:
                w = self.widgets[opt.name]
                form.addRow("" if opt.kind == "bool" else self.tr(opt.label), w)

    def reset(self) -> None:
        for opt in self.options:
            self.set_value(opt.name, opt.default)

    def set_value(self, name: str, value: Any) -> None:
        opt = next(o for o in self.options if o.name == name)
        w = self.widgets[name]
        if opt.kind == "bool":
            w.setChecked(bool(value))
        elif opt.kind in ("int", "float"):
            w.setValue(value)
        elif opt.kind == "choice":
            w.setCurrentIndex(max(0, w.findData(value)))
        elif opt.kind in ("bands", "range"):
            w.setText(" ".join(f"{b:g}" for b in value) if value else "")
        else:
            w.setText(value or "")

    def value(self, name: str) -> Any:
        opt = next(o for o in self.options if o.name == name)
        w = self.widgets[name]
        if opt.kind == "bool":
            return w.isChecked()
        if opt.kind in ("int", "float"):
            return w.value()
        if opt.kind == "choice":
            return w.currentData() or opt.default
        if opt.kind == "bands":
            text = w.text().strip()
            return parse_numbers(text, int, None, self.tr("Bands")) if text else None
        if opt.kind == "range":
            text = w.text().strip()
            return tuple(parse_numbers(text, float, 2, self.tr(opt.label))) if text else None
        return w.text()

    def values(self) -> dict[str, Any]:
        """Every option's value, by option name (raises ValueError on unreadable bands)."""
        return {o.name: self.value(o.name) for o in self.options}

    # ------------------------------------------------------------------ settings
    def state(self) -> dict[str, Any]:
        """Every option's value as plain bool/int/float/str for QgsSettings (the bands as
        typed, so that a half-typed list is kept rather than refused)."""
        out: dict[str, Any] = {}
        for opt in self.options:
            w = self.widgets[opt.name]
            if opt.kind in ("bands", "text", "range"):
                out[opt.name] = w.text()
            elif opt.kind == "choice":
                out[opt.name] = str(w.currentData() or opt.default)
            else:
                out[opt.name] = self.value(opt.name)
        return out

    def restore(self, state: Mapping[str, Any]) -> None:
        """Set the options found in ``state`` (as :meth:`state` wrote them; QSettings may hand
        back strings). Values that no longer fit (an option's type changed, a choice was
        removed) keep the default."""
        for opt in self.options:
            if opt.name not in state or state[opt.name] is None:
                continue
            raw = state[opt.name]
            w = self.widgets[opt.name]
            try:
                if opt.kind == "bool":
                    w.setChecked(raw if isinstance(raw, bool) else
                                 str(raw).strip().lower() in ("true", "1", "yes"))
                elif opt.kind == "int":
                    w.setValue(int(float(raw)))
                elif opt.kind == "float":
                    w.setValue(float(raw))
                elif opt.kind == "choice":
                    if w.findData(str(raw)) >= 0:
                        w.setCurrentIndex(w.findData(str(raw)))
                else:
                    w.setText(str(raw))
            except (TypeError, ValueError):
                continue

    def connect_changed(self, slot: Callable[..., None]) -> None:
        """Call ``slot`` whenever the user changes any option."""
        for opt in self.options:
            w = self.widgets[opt.name]
            if opt.kind == "bool":
                w.toggled.connect(slot)
            elif opt.kind in ("int", "float"):
                w.valueChanged.connect(slot)
            elif opt.kind == "choice":
                w.currentIndexChanged.connect(slot)
            else:
                w.textChanged.connect(slot)
