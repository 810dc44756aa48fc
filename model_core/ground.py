"""Measures on the ground: pixel sizes in metres and areas in square metres, whatever the CRS.

* Projected CRS: planar, converted from the CRS's linear unit (metres, US or international feet),
  unless the projection's scale at the raster's centre is more than 1 % off (Web Mercator away
  from the equator: 1.6 at 52 N): then as for geographic CRSs, on the ellipsoid.
* Geographic CRS (degrees): the pixel size in metres at the raster's centre (meridional and
  prime-vertical radii of the CRS's ellipsoid), and polygon areas on the ellipsoid through a
  Lambert azimuthal equal-area projection centred on the raster (equal-area on the ellipsoid:
  within 0.01 % of a geodesic computation such as pyproj's ``Geod``, and QGIS's ``$area``).
* No CRS or no geotransform: nothing is known on the ground (None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

GeoTransform = Sequence[float]


def srs_of(crs: str | None):
    """An OSR spatial reference of ``crs`` (WKT, EPSG:n, PROJ...) in x/y (GIS) axis order, or
    None when it is empty or unreadable."""
    from osgeo import osr

    if not crs:
        return None
    srs = osr.SpatialReference()
    if srs.SetFromUserInput(crs) != 0:
        return None
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


@dataclass(frozen=True)
class Ground:
    """How a raster grid measures on the ground (see the module docstring)."""

    kind: str                      # "projected", "ellipsoidal" or "none"
    unit_m: float = 1.0            # metres per CRS linear unit (projected)
    centre: tuple[float, float] = (0.0, 0.0)   # (lon, lat) of the raster's centre (geographic)
    pixel_m: tuple[float, float] | None = None  # (x, y) pixel size in metres
    crs_wkt: str = ""

    @property
    def known(self) -> bool:
        return self.kind != "none"

    @property
    def pixel_area_m2(self) -> float | None:
        """Area of one pixel in m^2 (at the centre for geographic CRSs)."""
        return None if self.pixel_m is None else self.pixel_m[0] * self.pixel_m[1]

    @property
    def pixel_size_m(self) -> float | None:
        """The mean side of a pixel in metres (the resolution a model's ``gsd`` is compared to)."""
        return None if self.pixel_m is None else math.sqrt(self.pixel_m[0] * self.pixel_m[1])

    def area_transform(self):
        """A function geometry -> area in m^2 for OGR geometries in the raster's CRS."""
        if self.kind == "projected":
            k = self.unit_m ** 2
            return lambda geom: geom.GetArea() * k
        if self.kind != "ellipsoidal":
            raise ValueError("areas on the ground need a georeferenced raster with a CRS")
        from osgeo import osr

        src = srs_of(self.crs_wkt)
        laea = osr.SpatialReference()
        laea.CopyGeogCSFrom(src)
        laea.SetLAEA(self.centre[1], self.centre[0], 0.0, 0.0)
        laea.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        tr = osr.CoordinateTransformation(src, laea)

        def area(geom) -> float:
            g = geom.Clone()
            g.Transform(tr)
            return g.GetArea()
        return area


def _radii(srs, lat: float) -> tuple[float, float]:
    """(prime vertical N, meridional M) radii of curvature of the CRS's ellipsoid at ``lat``."""
    a = srs.GetSemiMajor()
    inv_f = srs.GetInvFlattening()
    e2 = 0.0 if not inv_f else (2 - 1 / inv_f) / inv_f
    w = 1 - e2 * math.sin(math.radians(lat)) ** 2
    return a / math.sqrt(w), a * (1 - e2) / w ** 1.5


def _step_m(srs, lon0: float, lat0: float, lon1: float, lat1: float) -> float:
    """Length in metres of a short step between two geographic points (local radii)."""
    n, m = _radii(srs, (lat0 + lat1) / 2)
    dx = math.radians(lon1 - lon0) * n * math.cos(math.radians((lat0 + lat1) / 2))
    dy = math.radians(lat1 - lat0) * m
    return math.hypot(dx, dy)


def ground_of(geotransform: GeoTransform | None, crs_wkt: str, width: int, height: int
              ) -> Ground:
    """How the grid (``geotransform``, ``crs_wkt``, size) measures on the ground."""
    from osgeo import osr

    srs = srs_of(crs_wkt)
    if geotransform is None or srs is None or not (srs.IsProjected() or srs.IsGeographic()):
        return Ground("none")
    gt = geotransform

    def at(col: float, row: float) -> tuple[float, float]:
        return gt[0] + gt[1] * col + gt[2] * row, gt[3] + gt[4] * col + gt[5] * row

    to_geo = None
    if srs.IsProjected():
        geo = srs.CloneGeogCS()
        geo.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        to_geo = osr.CoordinateTransformation(srs, geo)

    def lonlat(col: float, row: float) -> tuple[float, float]:
        x, y = at(col, row)
        return (x, y) if to_geo is None else tuple(to_geo.TransformPoint(x, y)[:2])

    # true pixel sides at the centre, measured on the ellipsoid over a 1-pixel step
    cx, cy = width / 2, height / 2
    c = lon, lat = lonlat(cx, cy)
    px = (_step_m(srs, *c, *lonlat(cx + 1, cy)), _step_m(srs, *c, *lonlat(cx, cy + 1)))
    if srs.IsProjected():
        unit = float(srs.GetLinearUnits() or 1.0)
        planar = (math.hypot(gt[1], gt[4]) * unit, math.hypot(gt[2], gt[5]) * unit)
        scale = (px[0] * px[1]) / (planar[0] * planar[1])
        if abs(scale - 1) <= 0.01:
            return Ground("projected", unit, (lon, lat), planar, crs_wkt)
    return Ground("ellipsoidal", 1.0, (lon, lat), px, crs_wkt)


def format_area(m2: float) -> str:
    """``12,345 m2 (1.23 ha)``: how the per-class summary prints areas."""
    return f"{m2:,.0f} m2 ({m2 / 1e4:,.2f} ha)"
