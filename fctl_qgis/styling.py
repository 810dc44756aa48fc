"""Styles of the results: the class raster paletted, the polygons categorized, in the model's
class colours and names (the same legend for both)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from qgis.core import (QgsCategorizedSymbolRenderer, QgsFillSymbol, QgsPalettedRasterRenderer,
                       QgsRasterLayer, QgsRendererCategory, QgsVectorLayer)
from qgis.PyQt.QtGui import QColor

CLASS_FIELD = "class_id"


@dataclass(frozen=True)
class LegendClass:
    id: int
    name: str
    color: tuple[int, int, int]


def legend_from_card(card) -> list[LegendClass]:
    """Legend of a :class:`model_core.checkpoint.ModelCard`."""
    return [LegendClass(int(c.id), str(c.name), tuple(c.color)) for c in card.classes]


def style_raster(layer: QgsRasterLayer, legend: Sequence[LegendClass], band: int = 1) -> None:
    """Paletted renderer with one entry per class, named and coloured like the model's."""
    classes = [QgsPalettedRasterRenderer.Class(c.id, QColor(*c.color), c.name) for c in legend]
    renderer = QgsPalettedRasterRenderer(layer.dataProvider(), band, classes)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def style_polygons(layer: QgsVectorLayer, legend: Sequence[LegendClass],
                   field: str = CLASS_FIELD) -> None:
    """Categorized renderer on ``field`` with the classes' colours and names."""
    categories = []
    for c in legend:
        symbol = QgsFillSymbol.createSimple({"color": ",".join(map(str, c.color)) + ",255",
                                             "outline_color": "35,35,35,255",
                                             "outline_width": "0.1"})
        categories.append(QgsRendererCategory(c.id, symbol, c.name, True))
    layer.setRenderer(QgsCategorizedSymbolRenderer(field, categories))
    layer.triggerRepaint()


def style_layer(layer, legend: Iterable[LegendClass]) -> None:
    """Style a result layer of either kind."""
    legend = list(legend)
    if isinstance(layer, QgsRasterLayer):
        style_raster(layer, legend)
    elif isinstance(layer, QgsVectorLayer):
        style_polygons(layer, legend)
