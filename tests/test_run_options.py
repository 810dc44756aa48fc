"""The run-option table against its front ends: every option exists on the command line, in
Processing and in the dock where the table says, with the table's default (and range, choices,
advanced flag); the docs' parameter table is the table's; the former spellings still work."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from conftest import ROOT

from model_core.inference import SegmentOptions
from model_core.inference.option_table import (NUMBER_LISTS, RUN_OPTIONS, cli_options,
                                               dock_options, markdown_table, option,
                                               processing_options, qgis_values,
                                               segment_options)


# ------------------------------------------------------------------ the table itself
def test_table_covers_segment_options_with_their_defaults():
    fields = {f.name: f for f in dataclasses.fields(SegmentOptions)}
    engine = [o for o in RUN_OPTIONS if o.field is not None]
    assert sorted(o.field for o in engine) == sorted(fields)      # every field, once
    for o in engine:
        f = fields[o.field]
        expected = None if f.default is dataclasses.MISSING else f.default
        assert o.default == ((not expected) if o.negate else expected), o.name
    for attr in ("name", "cli", "processing"):
        values = [getattr(o, attr) for o in RUN_OPTIONS if getattr(o, attr)]
        assert len(values) == len(set(values)), f"duplicate {attr}"
    for o in processing_options():
        assert re.fullmatch(r"[A-Z][A-Z_]*", o.processing), o.processing
        assert all(re.fullmatch(r"[A-Z][A-Z_]*", p) for p in o.old_processing)
    for o in RUN_OPTIONS:
        assert o.label and o.help.endswith("."), o.name
        # a switch is turned on: options on by default are shown negated (--no-prefetch)
        assert o.kind != "bool" or o.default is False, o.name
        assert o.kind != "choice" or o.default in o.choices, o.name
        assert not (o.has_qgis_value and o.in_qgis), o.name


def test_shared_context_is_the_default_and_exact_context_the_option():
    assert SegmentOptions("a", "b").shared_context is True
    exact = option("exact_context")
    assert exact.field == "shared_context" and exact.negate and exact.default is False
    assert exact.cli == "--exact-context" and exact.processing == "EXACT_CONTEXT"
    assert exact.dock and exact.advanced
    assert segment_options({"exact_context": True}, input="a", output="b").shared_context is False
    assert segment_options({}, input="a", output="b") == SegmentOptions("a", "b")


# ------------------------------------------------------------------ command line
def _segment_parser() -> argparse.ArgumentParser:
    from model_core.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["segment"]


def test_command_line_has_every_option_with_the_tables_default():
    from model_core.inference.cli import options_from_args

    parser = _segment_parser()
    actions = {s: a for a in parser._actions for s in (a.option_strings or [a.dest])}
    for o in cli_options():
        action = actions[o.cli]
        assert action.dest == o.name, o.name
        if o.kind == "bool":
            assert isinstance(action, argparse._StoreTrueAction), o.name
        elif o.kind in NUMBER_LISTS:
            assert action.nargs == "+", o.name
        else:
            assert action.default == o.default, o.name
        if o.kind == "choice":
            assert tuple(action.choices) == o.choices
        assert action.help.replace("%%", "%") == o.help
        for old in o.old_cli:
            assert old in actions and actions[old].help == argparse.SUPPRESS
    run_flags = {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}
    assert run_flags == {o.cli for o in cli_options() if not o.positional} | \
        {old for o in cli_options() for old in o.old_cli}
    # nothing given = SegmentOptions' defaults
    args = parser.parse_args(["in.tif", "out.tif"])
    assert options_from_args(args) == SegmentOptions("in.tif", "out.tif")


def test_command_line_exact_context_and_the_old_flag(caplog):
    from model_core.inference.cli import options_from_args

    parser = _segment_parser()
    assert not options_from_args(parser.parse_args(["a", "b", "--exact-context"])).shared_context
    with caplog.at_level("WARNING"):
        opts = options_from_args(parser.parse_args(["a", "b", "--shared-context"]))
    assert opts.shared_context and "--shared-context is deprecated" in caplog.text
    opts = options_from_args(parser.parse_args(
        ["a", "b", "--extent", "1,2", "3", "4", "--bands", "3", "2", "1", "--no-prefetch",
         "--layer", "x", "--min-area-unit", "map"]))
    assert opts.extent == (1.0, 2.0, 3.0, 4.0) and opts.bands == [3, 2, 1]
    assert not opts.prefetch and opts.layer_name == "x" and opts.min_area_unit == "map"
    with pytest.raises(ValueError, match="--extent takes 4 numbers"):
        options_from_args(parser.parse_args(["a", "b", "--extent", "1", "2"]))


def test_evaluate_defaults_to_the_shared_context():
    import inspect

    from model_core.cli import build_parser
    from model_core.training import evaluate as ev

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.choices["evaluate"]
    assert p.parse_args([]).exact_context is False
    assert p.parse_args(["--exact-context"]).exact_context is True
    p.parse_args(["--shared-context"])       # the former flag is still accepted
    for fn in (ev.segment_file, ev.evaluate):
        assert inspect.signature(fn).parameters["shared_context"].default is True


# ------------------------------------------------------------------ Processing
@pytest.fixture
def algorithm(qgis_app):
    from fctl_qgis.algorithm import SegmentAlgorithm

    alg = SegmentAlgorithm()
    alg.initAlgorithm()
    return alg


def test_processing_has_every_option_with_the_tables_default(algorithm):
    from qgis.core import QgsProcessingParameterDefinition as Definition

    from fctl_qgis.algorithm import SegmentAlgorithm

    names = [p.name() for p in algorithm.parameterDefinitions()]
    old = [n for o in processing_options() for n in o.old_processing]
    assert names == [o.processing for o in processing_options()] + old
    for o in processing_options():
        p = algorithm.parameterDefinition(o.processing)
        assert bool(p.flags() & Definition.FlagAdvanced) == o.advanced, o.name
        assert p.description() == o.label and p.help() == o.help
        if o.kind == "choice":
            assert p.options() == list(o.choices)
            assert p.defaultValue() == o.choices.index(o.default), o.name
        elif o.kind in ("bool", "int", "float", "text"):
            assert p.defaultValue() == o.default, o.name
        elif o.kind != "output":
            assert p.defaultValue() is None, o.name
        if o.kind in ("int", "float"):
            assert (p.minimum(), p.maximum()) == (o.minimum, o.maximum), o.name
    for name in old:
        assert algorithm.parameterDefinition(name).flags() & Definition.FlagHidden
    constants = {v for k, v in vars(SegmentAlgorithm).items() if k.isupper() and
                 isinstance(v, str) and k == v}
    assert constants <= set(names)


def test_processing_reads_the_tables_defaults_back(algorithm):
    from qgis.core import QgsProcessingContext

    from fctl_qgis.parameters import deprecated_given, read_values

    context = QgsProcessingContext()
    values = read_values(algorithm, {}, context)
    assert values == {o.name: o.default for o in processing_options() if o.name in values}
    assert set(values) >= {"device", "batch_size", "tta", "exact_context", "min_area",
                           "pixel_size", "bands", "model"}
    opts = segment_options({**values, **qgis_values()}, input="a", output="b")
    assert opts == SegmentOptions("a", "b")   # QGIS: the engine's defaults (m2 areas)
    values = read_values(algorithm, {"EXACT_CONTEXT": True, "DEVICE": 1, "BANDS": [3, 2, 1],
                                     "SHARED_CONTEXT": True}, context)
    assert values["exact_context"] and values["device"] == "cpu" and values["bands"] == [3, 2, 1]
    assert deprecated_given({"SHARED_CONTEXT": False}) == [("SHARED_CONTEXT", "EXACT_CONTEXT")]


# ------------------------------------------------------------------ dock
def test_dock_offers_what_processing_offers_with_the_tables_defaults(qgis_iface):
    from fctl_qgis.dock import OWN_WIDGETS, FCtLDock

    dock = FCtLDock(qgis_iface)
    try:
        # everything Processing offers but the outputs, which the dock names itself
        expected = {o.name for o in processing_options() if o.kind not in ("output", "vector")}
        assert {o.name for o in dock_options()} == expected
        widgets = dock.run_options
        for o in dock_options():
            if o.name in OWN_WIDGETS:
                assert getattr(dock, OWN_WIDGETS[o.name]) is not None
                continue
            w = widgets[o.name]
            assert widgets.value(o.name) == o.default, o.name
            # advanced options sit in the collapsible "Advanced" box, the others outside it
            assert dock.advanced_box.isAncestorOf(w) == o.advanced, o.name
            assert w.toolTip() == o.help
        assert dock.advanced_box.isCollapsed()
        assert dock.model_path() is None and dock.area_combo.currentIndex() == 0
        assert dock.run_options["exact_context"].text() == option("exact_context").label
        widgets["bands"].setText("3, 2 1")
        assert widgets.value("bands") == [3, 2, 1]
    finally:
        dock.deleteLater()


# ------------------------------------------------------------------ docs
def test_docs_parameter_table_is_the_tables():
    text = (ROOT / "docs" / "plugin.md").read_text()
    block = re.search(r"<!-- run options: begin.*?-->\n(.*?)\n<!-- run options: end -->", text,
                      re.S)
    assert block, "docs/plugin.md lost its generated parameter table markers"
    assert block.group(1) == markdown_table(), (
        "docs/plugin.md's parameter table is out of date: paste the output of "
        "`python -m model_core.inference.option_table` between its markers")


def test_table_and_qgis_front_ends_import_without_torch():
    """The dock is built before the plugin's dependencies are installed."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; sys.modules['timm'] = None\n"
            "import model_core.inference.option_table, fctl_qgis.parameters, "
            "fctl_qgis.option_widgets, fctl_qgis.dock, fctl_qgis.algorithm")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
