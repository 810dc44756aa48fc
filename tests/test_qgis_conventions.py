"""QGIS plugin conventions of fctl_qgis: user-visible strings through tr(), Qt code that runs on
Qt 5 and Qt 6 (QGIS 4), the dock's choices remembered in QgsSettings, messages in the Log
Messages panel, and a dock that opens without importing torch on the GUI thread."""

from __future__ import annotations

import ast
import importlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsApplication, QgsSettings
from qgis.PyQt.QtCore import QCoreApplication

from conftest import ROOT
from plugin_fixtures import site_packages

PLUGIN = ROOT / "fctl_qgis"
SOURCES = sorted(PLUGIN.glob("*.py"))


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


# ---------------------------------------------------------------- tr()
# Calls whose string arguments the user reads in the GUI. (Processing's feedback.pushInfo log
# lines are not listed: scripts parse that log, and Processing itself logs in English.)
UI_METHODS = {"setText", "setToolTip", "setWindowTitle", "pushMessage", "addItem", "addItems",
              "setPlaceholderText", "setTitle", "setStatusTip", "setWhatsThis", "setSuffix",
              "setPrefix", "setSpecialValueText", "addRow", "insertItem", "setLabelText",
              "setFilter"}
# item text followed by item data (an identifier the code reads back, not shown)
WITH_DATA = {"addItem", "insertItem"}
UI_CLASSES = {"QLabel", "QPushButton", "QAction", "QCheckBox", "QRadioButton", "QGroupBox",
              "QToolButton", "QgsCollapsibleGroupBox", "QDockWidget", "QListWidgetItem",
              "QMessageBox"}
TR_NAMES = {"tr", "translate", "self.tr"}


def _is_tr_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    if isinstance(f, ast.Name) and f.id in TR_NAMES:
        return True
    if isinstance(f, ast.Attribute) and f.attr in ("tr", "translate"):
        return True
    # tr("... {x}").format(x=...)
    return isinstance(f, ast.Attribute) and f.attr == "format" and _is_tr_call(f.value)


def _literal_text(node: ast.AST) -> bool:
    """A string the user would read that was written here without tr()."""
    if _is_tr_call(node):
        return False
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return any(ch.isalpha() for ch in node.value)
    if isinstance(node, ast.JoinedStr):
        return any(_literal_text(v) for v in node.values if isinstance(v, ast.Constant))
    if isinstance(node, ast.BinOp):
        return _literal_text(node.left) or _literal_text(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr in ("format", "join"):
        return _literal_text(node.func.value)
    if isinstance(node, ast.IfExp):
        return _literal_text(node.body) or _literal_text(node.orelse)
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(_literal_text(e) for e in node.elts)
    return False


def _stringish(node: ast.AST) -> bool:
    return _is_tr_call(node) or isinstance(node, (ast.JoinedStr, ast.BinOp, ast.IfExp)) or (
        isinstance(node, ast.Constant) and isinstance(node.value, str))


def untranslated(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, call) of user-facing Qt/QGIS calls given a literal string without tr()."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) \
            else ""
        if (isinstance(f, ast.Attribute) and name in UI_METHODS) or name in UI_CLASSES:
            args = list(node.args) + [k.value for k in node.keywords]
            if name in WITH_DATA:   # (icon,) text, data: only the text is shown
                texts = [a for a in node.args if _stringish(a)]
                args = texts[:1]
            if any(_literal_text(a) for a in args):
                found.append((node.lineno, name))
    return found


def test_tr_scan_finds_literals():
    bad = _parse_text('label.setText("Done")\nQPushButton(f"Run {n}", w)\n'
                      'bar.pushMessage("FCtL", "failed: " + err)\nb.setToolTip("x {}".format(1))')
    assert [n for _, n in untranslated(bad)] and len(untranslated(bad)) == 4
    good = _parse_text('label.setText(tr("Done"))\nQPushButton(tr("Run {n}").format(n=n), w)\n'
                       'bar.pushMessage(TAG, text)\nform.addRow("", w)\nc.addItem(tr("CPU"), "cpu")')
    assert untranslated(good) == []


def _parse_text(text: str) -> ast.Module:
    return ast.parse(text)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_user_visible_strings_use_tr(path):
    found = untranslated(_parse(path))
    assert not found, (f"{path.name}: string literals shown to the user without tr() "
                       f"(wrap them in fctl_qgis.i18n.tr): {found}")


# ---------------------------------------------------------------- Qt 5 / Qt 6
QT_MODULES = ("qgis.core", "qgis.gui", "qgis.PyQt.QtCore", "qgis.PyQt.QtGui",
              "qgis.PyQt.QtWidgets")
# Names that are gone from Qt 6 (or renamed) and have a replacement in Qt 5.15 already.
QT5_ONLY_NAMES = {"QRegExp": "QRegularExpression", "QRegExpValidator":
                  "QRegularExpressionValidator", "QDesktopWidget": "QScreen",
                  "QMatrix": "QTransform", "QStringRef": "str", "QTextCodec": "str.encode"}
QT5_ONLY_ATTRS = {"exec_": "exec()", "print_": "print()"}
# Better replacements than the 3.22 scoped spelling where QGIS 4 renamed the enum
HINTS = {"QgsMapLayer": "isinstance(layer, QgsRasterLayer) / QgsVectorLayer",
         "QVariant": "QVariant.Type.X here; QMetaType.Type.X once QGIS >= 3.38 is required"}


def _imported_classes(tree: ast.Module) -> dict[str, object]:
    """Names the module imports from the Qt/QGIS modules, resolved to their objects."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in QT_MODULES:
            module = importlib.import_module(node.module)
            for alias in node.names:
                obj = getattr(module, alias.name, None)
                if obj is not None:
                    out[alias.asname or alias.name] = obj
    return out


def qt5_idioms(tree: ast.Module, filename: str = "") -> list[str]:
    """Qt5-only code: exec_(), PyQt5 imports, unscoped enums (Qt.AlignLeft instead of
    Qt.AlignmentFlag.AlignLeft), classes gone from Qt 6, QAction outside the compat module."""
    problems = []
    classes = _imported_classes(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""]
            for m in mods:
                if m.split(".")[0] in ("PyQt5", "PyQt6", "PySide2", "PySide6", "sip"):
                    problems.append(f"line {node.lineno}: import {m} (use qgis.PyQt)")
            if isinstance(node, ast.ImportFrom) and node.module == "qgis.PyQt.QtWidgets" \
                    and any(a.name == "QAction" for a in node.names) \
                    and not filename.endswith("qtcompat.py"):
                problems.append(f"line {node.lineno}: QAction from QtWidgets (QtGui in Qt 6: "
                                "import it from fctl_qgis.qtcompat)")
        elif isinstance(node, ast.Attribute):
            if node.attr in QT5_ONLY_ATTRS:
                problems.append(f"line {node.lineno}: .{node.attr} (use "
                                f"{QT5_ONLY_ATTRS[node.attr]})")
            elif isinstance(node.value, ast.Name) and node.value.id in classes:
                owner = classes[node.value.id]
                member = getattr(owner, node.attr, None)
                # an enum member reached through its class, not through its enum type
                if isinstance(member, int) and type(member) not in (int, bool) \
                        and type(member).__qualname__ != f"{node.value.id}.{node.attr}" \
                        and isinstance(owner, type):
                    scoped = f"{type(member).__qualname__}.{node.attr}"
                    problems.append(f"line {node.lineno}: {node.value.id}.{node.attr} (use "
                                    f"{HINTS.get(node.value.id, scoped)})")
        elif isinstance(node, ast.Name) and node.id in QT5_ONLY_NAMES:
            problems.append(f"line {node.lineno}: {node.id} (Qt 6: "
                            f"{QT5_ONLY_NAMES[node.id]})")
    return problems


def test_qt5_idiom_scan_finds_them():
    bad = ast.parse("from qgis.PyQt.QtCore import Qt, QRegExp\n"
                    "from qgis.PyQt.QtWidgets import QAction, QMessageBox, QSizePolicy\n"
                    "from PyQt5.QtCore import QTimer\nfrom qgis.core import Qgis, QgsTask\n"
                    "d.exec_()\nw.setAlignment(Qt.AlignLeft)\nQMessageBox.Yes\n"
                    "QSizePolicy.Expanding\nQgis.Critical\nQgsTask.CanCancel\nQRegExp('a')\n")
    problems = qt5_idioms(bad)
    for needle in ("QAction", "PyQt5", "exec_", "Qt.AlignLeft", "QMessageBox.Yes",
                   "QSizePolicy.Expanding", "Qgis.Critical", "QgsTask.CanCancel", "QRegExp"):
        assert any(needle in p for p in problems), (needle, problems)
    good = ast.parse("from qgis.PyQt.QtCore import Qt\nfrom qgis.core import Qgis, QgsTask\n"
                     "w.setAlignment(Qt.AlignmentFlag.AlignLeft)\nd.exec()\n"
                     "Qgis.MessageLevel.Critical\nQgsTask.Flag.CanCancel\nQt.AlignmentFlag\n")
    assert qt5_idioms(good) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_qt6_ready(path):
    problems = qt5_idioms(_parse(path), path.name)
    assert not problems, f"{path.name}: Qt5-only code (breaks on QGIS 4 / Qt 6): {problems}"


def test_metadata_declares_qt6():
    files = {p.resolve() for p in (ROOT / "metadata.txt", PLUGIN / "metadata.txt")
             if p.is_file()}
    assert files
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert "\nsupportsQt6=True" in text, path
        assert "\nqgisMaximumVersion=4.99" in text, path


def test_qaction_compat_import():
    from qgis.PyQt import QtGui, QtWidgets

    from fctl_qgis.qtcompat import QAction

    assert QAction is getattr(QtGui, "QAction", None) or QAction is QtWidgets.QAction


# ---------------------------------------------------------------- settings
@pytest.fixture
def clean_settings():
    from fctl_qgis import settings

    settings.clear()
    yield
    settings.clear()


def test_dock_remembers_choices(qgis_iface, tmp_path, clean_settings):
    from fctl_qgis.dock import FCtLDock

    dock = FCtLDock(qgis_iface)
    assert dock.device_combo.currentData() == "auto" and dock.click_size.value() == 1024
    model = tmp_path / "m.safetensors"
    dock.model_widget.setFilePath(str(model))
    dock.output_widget.setFilePath(str(tmp_path / "out"))
    dock.device_combo.setCurrentIndex(dock.device_combo.findData("cpu"))
    precision = dock.run_options["precision"]
    precision.setCurrentIndex(precision.findData("fp32"))
    dock.click_size.setValue(512)
    dock.tta_check.setChecked(True)
    dock.batch_spin.setValue(3)
    dock.run_options["bands"].setText("3 2 1")
    dock.run_options["min_overlap"].setValue(40)
    dock.vector_check.setChecked(False)
    assert QgsSettings().value("fctl/device") == "cpu"
    dock.unload()
    dock.deleteLater()

    again = FCtLDock(qgis_iface)
    assert again.model_path() == str(model)
    assert again.output_widget.filePath() == str(tmp_path / "out")
    assert again.device_combo.currentData() == "cpu"
    assert again.run_options["precision"].currentData() == "fp32"
    assert again.click_size.value() == 512
    assert again.tta_check.isChecked() and again.batch_spin.value() == 3
    assert again.run_options.values()["bands"] == [3, 2, 1]
    assert again.run_options["min_overlap"].value() == 40
    assert not again.vector_check.isChecked()
    # a stored value that no longer fits keeps the default instead of breaking the dock
    QgsSettings().setValue("fctl/precision", "fp4")
    QgsSettings().setValue("fctl/click_size", "large")
    again.unload()
    third = FCtLDock(qgis_iface)
    assert third.run_options["precision"].currentData() == "auto"
    assert third.click_size.value() == 1024
    third.unload()
    again.deleteLater()
    third.deleteLater()


# ---------------------------------------------------------------- message log
@pytest.fixture
def log_messages():
    messages: list[tuple[str, str, object]] = []

    def received(message: str, tag: str, level) -> None:
        messages.append((message, tag, level))

    QgsApplication.messageLog().messageReceived.connect(received)
    yield messages
    QgsApplication.messageLog().messageReceived.disconnect(received)


def _spin(seconds: float, until) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and not until():
        QCoreApplication.processEvents()
        time.sleep(0.01)


def test_python_logging_reaches_message_log(qgis_iface, log_messages):
    from fctl_qgis.log import TAG
    from fctl_qgis.plugin import FCtLPlugin

    plugin = FCtLPlugin(qgis_iface)
    try:
        logging.getLogger("model_core.inference").info("grid 3 x 4, 12 patches")
        logging.getLogger("fctl_qgis.dock").warning("odd pixel size")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("model_core").exception("segmentation failed")
        _spin(2, lambda: len([m for m in log_messages if m[1] == TAG]) >= 3)
        ours = [m for m in log_messages if m[1] == TAG]
        assert ("model_core.inference: grid 3 x 4, 12 patches", TAG,
                Qgis.MessageLevel.Info) in ours
        assert ("fctl_qgis.dock: odd pixel size", TAG, Qgis.MessageLevel.Warning) in ours
        crit = [m for m in ours if m[2] == Qgis.MessageLevel.Critical]
        assert crit and "segmentation failed" in crit[0][0] and "Traceback" in crit[0][0] \
            and "RuntimeError: boom" in crit[0][0]
    finally:
        plugin.unload()
    log_messages.clear()
    logging.getLogger("model_core").warning("after unload")
    QCoreApplication.processEvents()
    assert not [m for m in log_messages if m[1] == TAG]


def test_failed_run_logs_traceback_and_tells_user(qgis_iface, log_messages):
    from fctl_qgis.dock import FCtLDock
    from fctl_qgis.log import TAG
    from fctl_qgis.task import SegmentTask

    dock = FCtLDock(qgis_iface)
    bar = qgis_iface.messageBar()
    bar.clear_messages()
    outcomes = []
    # options the engine cannot use: a real failure inside segment(), in the worker thread
    task = SegmentTask("failing run", options=None, legend=[],
                       on_done=lambda o: (outcomes.append(o), dock._done(o)))
    QgsApplication.taskManager().addTask(task)
    _spin(60, lambda: bool(outcomes))
    assert outcomes and not outcomes[0].ok and not outcomes[0].cancelled
    assert "Traceback" in outcomes[0].traceback
    crit = [m for m in log_messages if m[1] == TAG and m[2] == Qgis.MessageLevel.Critical]
    assert crit and "Segmentation failed" in crit[0][0] and "Traceback" in crit[0][0]
    assert "Segmentation failed" in dock.status.text()
    assert any("Segmentation failed" in m for m in bar.get_messages(Qgis.MessageLevel.Critical))
    dock.unload()
    dock.deleteLater()


# ---------------------------------------------------------------- reprojection
def test_impossible_reprojection_is_a_clear_message(qgis_iface, tmp_path, log_messages):
    from qgis.core import (QgsCoordinateReferenceSystem, QgsPointXY, QgsProject,
                           QgsRasterLayer, QgsRectangle)

    from fctl_qgis.dock import FCtLDock
    from plugin_fixtures import make_rgb

    layer = QgsRasterLayer(str(make_rgb(tmp_path / "r.tif", size=64)), "ortho", "gdal")
    # an orthographic view of Europe: the far side of the globe has no coordinates in it
    ortho = QgsCoordinateReferenceSystem.fromProj("+proj=ortho +lat_0=50 +lon_0=5 "
                                                  "+datum=WGS84 +units=m")
    assert ortho.isValid()
    layer.setCrs(ortho)
    QgsProject.instance().addMapLayer(layer)
    dock = FCtLDock(qgis_iface)
    dock.layer_combo.setLayer(layer)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    try:
        assert not dock.segment_at(QgsPointXY(-175.0, -40.0))     # antipodes of Europe
        assert "cannot be reprojected" in dock.status.text(), dock.status.text()
        assert "Zoom to the raster layer" in dock.status.text()
        canvas.setExtent(QgsRectangle(-179, -60, -150, -30))
        dock.area_combo.setCurrentIndex(1)                         # visible map extent
        assert not dock.run()
        assert "cannot be reprojected" in dock.status.text(), dock.status.text()
        assert dock.task is None
    finally:
        dock.unload()
        dock.deleteLater()
        QgsProject.instance().removeMapLayer(layer.id())
        canvas.setDestinationCrs(QgsCoordinateReferenceSystem())


# ---------------------------------------------------------------- no torch on the GUI thread
DOCK_WITHOUT_TORCH = r"""
import sys, time
from qgis.core import QgsApplication
app = QgsApplication([], True)
app.initQgis()
from qgis.gui import QgsMapCanvas
from qgis.PyQt.QtCore import QCoreApplication
from qgis.gui import QgsMessageBar
from qgis.PyQt.QtWidgets import QMainWindow


class Iface:   # the part of QgisInterface the plugin uses
    def __init__(self):
        self.window = QMainWindow()
        self.canvas = QgsMapCanvas(self.window)
        self.bar = QgsMessageBar(self.window)

    def mainWindow(self):
        return self.window

    def mapCanvas(self):
        return self.canvas

    def messageBar(self):
        return self.bar

    def addDockWidget(self, area, dock):
        self.window.addDockWidget(area, dock)

    def removeDockWidget(self, dock):
        self.window.removeDockWidget(dock)

    def __getattr__(self, name):   # menus and toolbars: nothing to check here
        return lambda *args: None


iface = Iface()
iface.window.show()
import fctl_qgis
plugin = fctl_qgis.classFactory(iface)
plugin.initGui()
plugin.show_dock(True)                   # builds and shows the dock
dock = plugin.dock
print("visible", dock.isVisible())
print("torch after open", "torch" in sys.modules)
print("device", dock.device_combo.currentData())
end = time.monotonic() + 120             # the engine loads in the background meanwhile
while time.monotonic() < end and not dock.device_combo.itemText(0).startswith("Auto ("):
    QCoreApplication.processEvents()
    time.sleep(0.02)
print("devices", [dock.device_combo.itemText(i) for i in range(dock.device_combo.count())])
print("legend", dock.legend_list.count())
print("torch later", "torch" in sys.modules)
plugin.unload()
"""


def test_opening_the_dock_does_not_import_torch(tmp_path):
    script = tmp_path / "dock.py"
    script.write_text(DOCK_WITHOUT_TORCH)
    env = {k: v for k, v in os.environ.items() if k != "QGIS_PLUGINPATH"}
    env.update(QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1",
               QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"),
               XDG_RUNTIME_DIR=str(tmp_path / "run"),
               PYTHONPATH=os.pathsep.join([str(ROOT), site_packages()]))
    (tmp_path / "run").mkdir(mode=0o700)
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    assert "visible True" in out, out
    assert "torch after open False" in out, out
    assert "device auto" in out, out
    # then the background task imported it and named the devices; the legend followed
    assert "torch later True" in out, out
    assert "devices ['Auto (" in out and "'CPU'" in out, out
    assert "legend 0" not in out, out


# ---------------------------------------------------------------- a translation, no code change
TS = """<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS><TS version="2.1" language="de">
<context><name>FCtL</name>
<message><source>Run</source><translation>Starten</translation></message>
<message><source>Cannot run: {reason}</source><translation>Kann nicht starten: {reason}</translation></message>
</context></TS>
"""


@pytest.mark.skipif(not any(Path(d, "lrelease").is_file()
                            for d in os.environ.get("PATH", "").split(os.pathsep)),
                    reason="needs Qt's lrelease to compile a .ts file")
def test_translation_file_is_picked_up(qgis_iface, tmp_path, monkeypatch):
    from fctl_qgis import i18n
    from fctl_qgis.dock import FCtLDock

    (tmp_path / "fctl_de.ts").write_text(TS, encoding="utf-8")
    subprocess.run(["lrelease", str(tmp_path / "fctl_de.ts"), "-qm",
                    str(tmp_path / "fctl_de.qm")], check=True, capture_output=True)
    monkeypatch.setattr(i18n, "FOLDER", tmp_path)
    assert i18n.install_translator("de_DE")        # falls back from de_DE to de
    try:
        dock = FCtLDock(qgis_iface)
        assert dock.run_button.text() == "Starten"
        dock.layer_combo.setLayer(None)
        assert not dock.run()
        assert dock.status.text().startswith("Kann nicht starten: ")
        dock.unload()
        dock.deleteLater()
    finally:
        i18n.remove_translator()
    assert i18n.tr("Run") == "Run"
