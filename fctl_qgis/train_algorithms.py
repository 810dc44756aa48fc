"""``fctl:train`` (fine-tune a model on labelled polygons or a label raster) and
``fctl:evaluate`` (score a model on them). The work is the engine's
(:mod:`model_core.training.finetune`, :mod:`model_core.training.gis_evaluate`); these classes
turn layers into files and the engine's errors into Processing errors."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from qgis.core import (QgsFeature, QgsFeatureSink, QgsField, QgsFields, QgsProcessing,
                       QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingException,
                       QgsProcessingFeedback, QgsProcessingOutputFile, QgsProcessingOutputNumber,
                       QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterFeatureSink, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterNumber,
                       QgsProcessingUtils, QgsCoordinateReferenceSystem, QgsWkbTypes)
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtGui import QIcon

from . import train_inputs as ti
from .engine import engine_import
from .i18n import tr

log = logging.getLogger(__name__)

TRAIN_HELP = (
    "Fine-tunes an FCtL model on your own imagery: label a few polygons (or give a label "
    "raster), train, then segment with the new model in fctl:segment. The encoder and context "
    "modules of the base model are reused; when the classes differ, each new class starts from "
    "the base class that matches it best on the training area, and the starting model is "
    "validated too, so the result never scores below it on the validation strip. Without a class field every polygon is one class named after the layer and the "
    "other pixels of the area are 'background'; with one (integer ids, or text names that become "
    "classes in order of first appearance) unlabelled pixels are ignored. In a label raster 255 "
    "and nodata are unlabelled, except in a mask of only 0 and 255 (Inria, SpaceNet, most "
    "building masks), whose 255 is class 1. A spatially separate "
    "strip holds out the validation pixels. The model is trained at the raster's pixel size, or "
    "at the training pixel size you give (pixels resampled as fctl:segment resamples imagery: "
    "averaged when coarser, cubic when finer; labels burnt onto that grid), which its card "
    "records; fctl:segment then reads imagery at that pixel size. A cancelled run writes no "
    "model.")
EVAL_HELP = (
    "Scores a model on labelled polygons or a label raster: the labelled area is segmented as "
    "fctl:segment does and compared with the labels. Writes per-class IoU, F1 and accuracy "
    "as a table (the last row, class_id -1, holds the means and the pixel accuracy), and the "
    "same as JSON next to it.")


class _Base(QgsProcessingAlgorithm):
    def tr(self, text: str) -> str:
        return tr(text)

    def icon(self) -> QIcon:
        from .provider import icon_path

        return QIcon(icon_path())

    def _engine_call(self, fn, feedback: QgsProcessingFeedback, what: str):
        Cancelled = engine_import("inference.options", "Cancelled")

        try:
            return fn()
        except Cancelled as exc:
            raise QgsProcessingException(tr("{0} cancelled: nothing was written").format(what)) \
                from exc
        except (ValueError, OSError, RuntimeError) as exc:
            raise QgsProcessingException(str(exc)) from exc


class TrainAlgorithm(_Base):
    INPUT, BANDS, LABELS, CLASS_FIELD, EXTENT = (ti.INPUT, ti.BANDS, ti.LABELS, ti.CLASS_FIELD,
                                                 ti.EXTENT)
    BASE_MODEL = "BASE_MODEL"
    STEPS = "STEPS"
    PATCH_SIZE = "PATCH_SIZE"
    PIXEL_SIZE = "PIXEL_SIZE"
    LEARNING_RATE = "LEARNING_RATE"
    VALIDATION_FRACTION = "VALIDATION_FRACTION"
    DEVICE = ti.DEVICE
    PRECISION = "PRECISION"
    OUTPUT_MODEL = "OUTPUT_MODEL"
    TRAINING_LOG = "TRAINING_LOG"
    TRAINING_PLOT = "TRAINING_PLOT"
    VALIDATION_MIOU = "VALIDATION_MIOU"

    def name(self) -> str:
        return "train"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Train model on labelled areas (FCtL)")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(TRAIN_HELP)

    def createInstance(self) -> "TrainAlgorithm":  # noqa: N802
        return TrainAlgorithm()

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        DEFAULT_LR, DEFAULT_STEPS = engine_import("training.finetune", "DEFAULT_LR",
                                                  "DEFAULT_STEPS")

        ti.add_input_parameters(self)
        self.addParameter(QgsProcessingParameterFile(
            self.BASE_MODEL, self.tr("Base model (empty = the bundled default)"),
            behavior=QgsProcessingParameterFile.Behavior.File, extension="safetensors", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.STEPS, self.tr("Training steps (batches of 4 patches)"),
            QgsProcessingParameterNumber.Type.Integer, DEFAULT_STEPS, minValue=1, maxValue=100000))
        self.addParameter(QgsProcessingParameterNumber(
            self.PATCH_SIZE, self.tr("Patch size in pixels (0 = the base model's)"),
            QgsProcessingParameterNumber.Type.Integer, 0, minValue=0, maxValue=2048))
        px = QgsProcessingParameterNumber(
            self.PIXEL_SIZE, self.tr("Training pixel size in metres (0 = the raster's own)"),
            QgsProcessingParameterNumber.Type.Double, 0.0, minValue=0.0, maxValue=1000.0)
        px.setMetadata({"widget_wrapper": {"decimals": 3}})
        self.addParameter(px)
        lr = QgsProcessingParameterNumber(self.LEARNING_RATE, self.tr("Learning rate"),
                                          QgsProcessingParameterNumber.Type.Double, DEFAULT_LR,
                                          minValue=1e-7, maxValue=1.0)
        lr.setMetadata({"widget_wrapper": {"decimals": 6}})
        lr.setFlags(lr.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        self.addParameter(lr)
        self.addParameter(QgsProcessingParameterNumber(
            self.VALIDATION_FRACTION, self.tr("Validation fraction (a separate strip)"),
            QgsProcessingParameterNumber.Type.Double, 0.2, minValue=0.0, maxValue=0.5))
        self.addParameter(ti.device_parameter())
        prec = QgsProcessingParameterEnum(self.PRECISION, self.tr("Precision"),
                                          options=list(ti.PRECISIONS), defaultValue=0,
                                          optional=True)
        prec.setFlags(prec.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        self.addParameter(prec)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_MODEL, self.tr("Trained model"), self.tr("FCtL model (*.safetensors)")))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.TRAINING_LOG, self.tr("Training log"), self.tr("CSV files (*.csv)"),
            optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.TRAINING_PLOT, self.tr("Loss and validation plot"), self.tr("PNG files (*.png)"),
            optional=True, createByDefault=True))
        self.addOutput(QgsProcessingOutputNumber(self.VALIDATION_MIOU,
                                                 self.tr("Validation mIoU")))

    def prepareAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> bool:
        FineTuneOptions = engine_import("training.finetune", "FineTuneOptions")

        layer, raster = ti.raster_path(self, parameters, context)
        extent, wkt = ti.extent_in_raster_crs(self, parameters, context, layer)
        self._labels = ti.LabelExport(self, parameters, context)
        out = self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)
        log_csv = self.parameterAsFileOutput(parameters, self.TRAINING_LOG, context) or None
        plot = self.parameterAsFileOutput(parameters, self.TRAINING_PLOT, context) or None
        base = self.parameterAsFile(parameters, self.BASE_MODEL, context) or None
        self._options = FineTuneOptions(
            raster=raster, labels=self._labels.source, output=out, base_model=base,
            bands=self.parameterAsInts(parameters, self.BANDS, context) or None,
            extent=extent, extent_wkt=wkt,
            steps=self.parameterAsInt(parameters, self.STEPS, context),
            patch_size=self.parameterAsInt(parameters, self.PATCH_SIZE, context) or None,
            pixel_size=self.parameterAsDouble(parameters, self.PIXEL_SIZE, context) or None,
            learning_rate=self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
            validation_fraction=self.parameterAsDouble(parameters, self.VALIDATION_FRACTION,
                                                       context),
            device=ti.DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            precision=ti.PRECISIONS[self.parameterAsEnum(parameters, self.PRECISION, context)],
            log_csv=log_csv, plot_png=plot)
        return True

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        fine_tune = engine_import("training.finetune", "fine_tune")

        opts = self._options
        feedback.pushInfo(f"Raster: {opts.raster}")
        feedback.pushInfo(f"Labels: {self._labels.layer_name}" +
                          (f", class field {opts.labels.field}" if opts.labels.field else
                           " (one class against the background)"))
        try:
            result = self._engine_call(
                lambda: fine_tune(opts, ti.progress_reporter(feedback), feedback.isCanceled),
                feedback, tr("training"))
        finally:
            self._labels.close()
        feedback.pushInfo(f"Classes: {', '.join(n for _, n, _ in result.classes)} "
                          f"(classifier {result.classifier})")
        if result.validation:
            feedback.pushInfo(f"Validation {result.validation['headline_name']}: "
                              f"{result.validation_miou:.4f}")
        feedback.pushInfo(f"Time: {result.seconds:.1f} s; model written to {result.output}")
        return {self.OUTPUT_MODEL: result.output, self.TRAINING_LOG: result.log_csv,
                self.TRAINING_PLOT: result.plot_png,
                self.VALIDATION_MIOU: None if math.isnan(result.validation_miou)
                else result.validation_miou}


class EvaluateAlgorithm(_Base):
    INPUT, BANDS, LABELS, CLASS_FIELD, EXTENT = (ti.INPUT, ti.BANDS, ti.LABELS, ti.CLASS_FIELD,
                                                 ti.EXTENT)
    MODEL = "MODEL"
    DEVICE = ti.DEVICE
    OUTPUT_TABLE = "OUTPUT_TABLE"
    OUTPUT_JSON = "OUTPUT_JSON"
    MIOU = "MIOU"

    def name(self) -> str:
        return "evaluate"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Evaluate model on labelled areas (FCtL)")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(EVAL_HELP)

    def createInstance(self) -> "EvaluateAlgorithm":  # noqa: N802
        return EvaluateAlgorithm()

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        ti.add_input_parameters(self)
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, self.tr("Model (empty = the bundled default)"),
            behavior=QgsProcessingParameterFile.Behavior.File, extension="safetensors", optional=True))
        self.addParameter(ti.device_parameter())
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT_TABLE, self.tr("Scores per class"), QgsProcessing.SourceType.TypeVector))
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, self.tr("mIoU")))
        self.addOutput(QgsProcessingOutputFile(self.OUTPUT_JSON, self.tr("Scores (JSON)")))

    def prepareAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> bool:
        layer, self._raster = ti.raster_path(self, parameters, context)
        self._extent, self._wkt = ti.extent_in_raster_crs(self, parameters, context, layer)
        self._labels = ti.LabelExport(self, parameters, context)
        self._model = self.parameterAsFile(parameters, self.MODEL, context) or None
        self._bands = self.parameterAsInts(parameters, self.BANDS, context) or None
        self._device = ti.DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]
        return True

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        evaluate_labels = engine_import("training.gis_evaluate", "evaluate_labels")

        try:
            ev = self._engine_call(lambda: evaluate_labels(
                self._raster, self._labels.source, self._model, bands=self._bands,
                extent=self._extent, extent_wkt=self._wkt, device=self._device,
                progress=ti.progress_reporter(feedback), is_cancelled=feedback.isCanceled),
                feedback, tr("evaluation"))
        finally:
            self._labels.close()
        fields = QgsFields()
        for name, kind in (("class_id", QVariant.Type.Int), ("class_name", QVariant.Type.String),
                           ("iou", QVariant.Type.Double), ("f1", QVariant.Type.Double),
                           ("accuracy", QVariant.Type.Double), ("pixels", QVariant.Type.LongLong)):
            fields.append(QgsField(name, kind))
        sink, dest = self.parameterAsSink(parameters, self.OUTPUT_TABLE, context, fields,
                                          QgsWkbTypes.Type.NoGeometry, QgsCoordinateReferenceSystem())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT_TABLE))
        for row in ev.rows():
            f = QgsFeature(fields)
            f.setAttributes([int(row["class_id"]), str(row["class_name"])] +
                            [None if math.isnan(row[k]) else float(row[k])
                             for k in ("iou", "f1", "accuracy")] + [int(row["pixels"])])
            if not sink.addFeature(f, QgsFeatureSink.Flag.FastInsert):
                raise QgsProcessingException(self.writeFeatureError(sink, parameters,
                                                                    self.OUTPUT_TABLE))
        json_path = _json_next_to(self.parameterAsOutputLayer(parameters, self.OUTPUT_TABLE,
                                                              context))
        ev.write_json(json_path)
        s = ev.scores
        for row in ev.rows():
            feedback.pushInfo(f"  {row['class_name']}: IoU {row['iou']:.4f}, F1 {row['f1']:.4f}")
        feedback.pushInfo(f"{s.headline_name}: {s.headline:.4f}; pixel accuracy "
                          f"{s.pixel_accuracy:.4f}; scores written to {json_path}")
        miou = s.miou
        return {self.OUTPUT_TABLE: dest, self.OUTPUT_JSON: json_path,
                self.MIOU: None if math.isnan(miou) else miou}


def _json_next_to(table: str) -> str:
    """The JSON beside a file output; in QGIS's temporary folder for temporary layers."""
    path = table.split("|")[0] if table else ""
    if path and not path.startswith("memory:") and path != "TEMPORARY_OUTPUT" and \
            Path(path).suffix and Path(path).parent.is_dir():
        return str(Path(path).with_suffix(".json"))
    return QgsProcessingUtils.generateTempFilename("fctl_evaluation.json")
