"""Processing parameters of ``fctl:segment`` built from the engine's run-option table
(:mod:`model_core.inference.option_table`), and their values read back by option name."""

from __future__ import annotations

from typing import Any, Callable

from qgis.core import (QgsProcessing, QgsProcessingAlgorithm, QgsProcessingContext,
                       QgsProcessingParameterBand, QgsProcessingParameterBoolean,
                       QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterExtent, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterRange,
                       QgsProcessingParameterFile,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString,
                       QgsProcessingParameterVectorDestination)

from .engine import engine_import
RunOption, option, processing_options = engine_import(
    "inference.option_table", "RunOption", "option", "processing_options")

from .i18n import tr

TrFn = Callable[[str], str]
# Values Processing reads generically; the algorithm resolves the layer, extent and outputs.
READ_KINDS = ("bool", "int", "float", "choice", "text", "bands", "model", "range")


def _definition(opt: RunOption, name: str, label: str, default: Any, optional: bool
                ) -> QgsProcessingParameterDefinition:
    k = opt.kind
    if k == "raster":
        return QgsProcessingParameterRasterLayer(name, label, optional=optional)
    if k == "model":
        return QgsProcessingParameterFile(name, label,
                                          behavior=QgsProcessingParameterFile.Behavior.File,
                                          extension="safetensors", optional=True)
    if k == "bands":
        return QgsProcessingParameterBand(name, label, None, option("input").processing,
                                          optional=True, allowMultiple=True)
    if k == "extent":
        return QgsProcessingParameterExtent(name, label, optional=True)
    if k == "range":
        return QgsProcessingParameterRange(name, label,
                                           QgsProcessingParameterNumber.Type.Double,
                                           optional=True)
    if k == "polygons":   # any CRS; the dialog offers "selected features only"
        return QgsProcessingParameterFeatureSource(
            name, label, [QgsProcessing.SourceType.TypeVectorPolygon], optional=True)
    if k == "choice":
        return QgsProcessingParameterEnum(
            name, label, options=list(opt.choices), optional=optional,
            defaultValue=None if default is None else opt.choices.index(default))
    if k in ("int", "float"):
        kind = (QgsProcessingParameterNumber.Type.Integer if k == "int"
                else QgsProcessingParameterNumber.Type.Double)
        param = QgsProcessingParameterNumber(name, label, kind, defaultValue=default,
                                             optional=optional, minValue=opt.minimum,
                                             maxValue=opt.maximum)
        if k == "float":
            param.setMetadata({"widget_wrapper": {"decimals": opt.decimals}})
        return param
    if k == "bool":
        return QgsProcessingParameterBoolean(name, label, defaultValue=default, optional=optional)
    if k == "text":
        return QgsProcessingParameterString(name, label, defaultValue=default, optional=optional)
    if k == "output":
        return QgsProcessingParameterRasterDestination(name, label)
    if k == "vector":
        return QgsProcessingParameterVectorDestination(
            name, label, QgsProcessing.SourceType.TypeVectorPolygon, optional=True,
            createByDefault=False)
    raise ValueError(f"run option {opt.name!r} of kind {k!r} cannot be a Processing parameter")


def parameter_definitions(translate: TrFn = tr) -> list[QgsProcessingParameterDefinition]:
    """Every Processing parameter of the table, in its order, then the former names (hidden,
    optional, ignored) so that old scripts and graphical models keep running."""
    params = []
    for opt in processing_options():
        # advanced parameters are optional: models and scripts saved before they existed lack them
        optional = opt.advanced or opt.default is None
        param = _definition(opt, opt.processing, translate(opt.label), opt.default, optional)
        param.setHelp(translate(opt.help))
        if opt.advanced:
            param.setFlags(param.flags()
                           | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        params.append(param)
    for opt in processing_options():
        for old in opt.old_processing:
            param = _definition(opt, old, translate(opt.label) + translate(" (deprecated)"),
                                None, True)
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.Flag.FlagHidden)
            params.append(param)
    return params


def deprecated_given(parameters: dict[str, Any]) -> list[tuple[str, str]]:
    """(former name, current name) of each deprecated parameter a caller still passes."""
    return [(old, opt.processing) for opt in processing_options() for old in opt.old_processing
            if parameters.get(old) is not None]


def read_values(alg: QgsProcessingAlgorithm, parameters: dict[str, Any],
                context: QgsProcessingContext) -> dict[str, Any]:
    """The table's options read from ``parameters`` (defaults where absent), by option name."""
    values: dict[str, Any] = {}
    for opt in processing_options():
        name, k = opt.processing, opt.kind
        if k not in READ_KINDS:
            continue
        if k == "bool":
            value: Any = alg.parameterAsBool(parameters, name, context)
        elif k == "int":
            value = alg.parameterAsInt(parameters, name, context)
        elif k == "float":
            value = alg.parameterAsDouble(parameters, name, context)
        elif k == "choice":
            value = opt.choices[alg.parameterAsEnum(parameters, name, context)]
        elif k == "text":
            value = alg.parameterAsString(parameters, name, context)
        elif k == "bands":
            value = alg.parameterAsInts(parameters, name, context) or None
        elif k == "range":   # empty = the engine's default (the model's, or a stretch)
            given = parameters.get(name) not in (None, "")
            value = tuple(alg.parameterAsRange(parameters, name, context)) if given else None
        else:   # model
            value = alg.parameterAsFile(parameters, name, context) or None
        values[opt.name] = value
    return values


def help_text(intro: str, translate: TrFn = tr) -> str:
    """The algorithm's help: ``intro``, then one line per parameter from the table."""
    lines = [translate(intro), ""]
    for opt in processing_options():
        extra = ""
        if opt.kind == "choice":
            extra = " (" + ", ".join(f"{i} = {c}" for i, c in enumerate(opt.choices)) + ")"
        lines.append(f"{opt.processing}: {translate(opt.help)}{extra}")
    return "\n".join(lines)
