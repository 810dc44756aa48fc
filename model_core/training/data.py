"""Labelled training images: DeepGlobe, Inria and the generic GIS case (raster + labels).

Every loader returns :class:`LabelledImage` objects: the image as uint8/float (C, H, W) in the
raster's raw values and the label as uint8 (H, W) class ids. Decoding a 2448 x 2448 JPEG takes
about a second, so decoded arrays are cached as ``.npy`` in a cache folder outside the repository.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

# DeepGlobe Land Cover colour code (README of the data): RGB thresholded at 128 -> class id.
DEEPGLOBE_CLASSES: list[tuple[int, str, tuple[int, int, int]]] = [
    (0, "unknown", (0, 0, 0)),
    (1, "urban", (0, 255, 255)),
    (2, "agriculture", (255, 255, 0)),
    (3, "rangeland", (255, 0, 255)),
    (4, "forest", (0, 255, 0)),
    (5, "water", (0, 0, 255)),
    (6, "barren", (255, 255, 255)),
]
DEEPGLOBE_IGNORE = 0
INRIA_CLASSES: list[tuple[int, str, tuple[int, int, int]]] = [
    (0, "background", (0, 0, 0)), (1, "building", (255, 0, 0))]

DEFAULT_CACHE = Path(os.environ.get("FCTL_CACHE", Path.home() / ".cache" / "fctl"))


@dataclass
class LabelledImage:
    """One training image and its class-id label of the same size."""

    id: str
    image: np.ndarray   # (C, H, W) raw values
    label: np.ndarray   # (H, W) uint8 class ids

    def __post_init__(self) -> None:
        if self.image.ndim != 3:
            raise ValueError(f"image {self.id}: expected (bands, H, W), got {self.image.shape}")
        if self.label.shape != self.image.shape[1:]:
            raise ValueError(f"image {self.id}: label {self.label.shape} does not match image "
                             f"{self.image.shape[1:]}; labels must be on the image grid")

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[2], self.image.shape[1]


# ------------------------------------------------------------------------------------ reading
def read_raster(path: str | Path, bands: Sequence[int] | None = None) -> np.ndarray:
    """All pixels of a raster as (bands, H, W) in its own dtype (GDAL opens JPEG/PNG/TIFF...)."""
    from osgeo import gdal

    ds = gdal.Open(str(path), gdal.GA_ReadOnly)
    if ds is None:
        raise FileNotFoundError(f"cannot open raster {path}")
    bands = list(bands) if bands else list(range(1, ds.RasterCount + 1))
    bad = [b for b in bands if b < 1 or b > ds.RasterCount]
    if bad:
        raise ValueError(f"{path} has {ds.RasterCount} band(s); band(s) {bad} do not exist")
    arr = np.stack([ds.GetRasterBand(b).ReadAsArray() for b in bands])
    return arr


def deepglobe_mask_to_ids(rgb: np.ndarray) -> np.ndarray:
    """Colour-coded DeepGlobe mask (3, H, W) -> class ids (H, W), thresholding at 128."""
    bits = (rgb[:3] >= 128).astype(np.uint8)
    code = bits[0] * 4 + bits[1] * 2 + bits[2]  # R G B -> 3-bit code
    lut = np.zeros(8, np.uint8)
    for cid, _, (r, g, b) in DEEPGLOBE_CLASSES:
        lut[(r >= 128) * 4 + (g >= 128) * 2 + (b >= 128)] = cid
    return lut[code]


def _cached(cache: Path | None, key: str, make) -> np.ndarray:
    if cache is None:
        return make()
    cache.mkdir(parents=True, exist_ok=True)
    f = cache / (hashlib.sha1(key.encode()).hexdigest()[:16] + ".npy")
    if f.is_file():
        return np.load(f)
    arr = make()
    tmp = f.with_name(f.stem + f".{os.getpid()}.part.npy")
    np.save(tmp, arr)
    tmp.replace(f)
    return arr


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def parse_ids(spec: str | Iterable[str] | None) -> list[str] | None:
    """Split list: comma-separated ids, a text file of ids (one per line), or a list."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        return [str(s) for s in spec]
    p = Path(spec)
    if p.is_file():
        return [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and
                not ln.startswith("#")]
    return [s.strip() for s in spec.split(",") if s.strip()]


# ------------------------------------------------------------------------------------ layouts
def deepglobe_ids(root: str | Path) -> list[str]:
    """Ids of the ``<id>_sat.jpg`` images in a DeepGlobe folder that have a ``<id>_mask.png``."""
    root = Path(root)
    return sorted((p.name[:-8] for p in root.glob("*_sat.jpg")
                   if (root / (p.name[:-8] + "_mask.png")).is_file()), key=_natural)


def load_deepglobe(root: str | Path, ids: Sequence[str] | None = None,
                   cache: Path | None = DEFAULT_CACHE) -> list[LabelledImage]:
    """DeepGlobe Land Cover layout: ``<id>_sat.jpg`` + colour-coded ``<id>_mask.png``."""
    root = Path(root)
    ids = list(ids) if ids else deepglobe_ids(root)
    out = []
    for i in ids:
        sat, mask = root / f"{i}_sat.jpg", root / f"{i}_mask.png"
        for f in (sat, mask):
            if not f.is_file():
                raise FileNotFoundError(f"DeepGlobe id {i}: {f} is missing")
        img = _cached(cache, "img:" + _file_key(sat), lambda: read_raster(sat, [1, 2, 3]))
        lab = _cached(cache, "dglab:" + _file_key(mask),
                      lambda: deepglobe_mask_to_ids(read_raster(mask, [1, 2, 3])))
        out.append(LabelledImage(str(i), img, lab))
    return out


def load_inria(root: str | Path, ids: Sequence[str] | None = None,
               cache: Path | None = DEFAULT_CACHE) -> list[LabelledImage]:
    """Inria Aerial layout: ``images/<id>.tif`` + ``gt/<id>.tif`` (0/255 -> 0/1 buildings)."""
    root = Path(root)
    if ids is None:
        ids = sorted(p.stem for p in (root / "images").glob("*.tif")
                     if (root / "gt" / p.name).is_file())
    out = []
    for i in ids:
        img_f, gt_f = root / "images" / f"{i}.tif", root / "gt" / f"{i}.tif"
        for f in (img_f, gt_f):
            if not f.is_file():
                raise FileNotFoundError(f"Inria id {i}: {f} is missing")
        img = _cached(cache, "img:" + _file_key(img_f), lambda: read_raster(img_f, [1, 2, 3]))
        lab = _cached(cache, "inria:" + _file_key(gt_f),
                      lambda: (read_raster(gt_f, [1])[0] > 127).astype(np.uint8))
        out.append(LabelledImage(str(i), img, lab))
    return out


def load_raster_pair(image: str | Path, labels: str | Path, *, bands: Sequence[int] | None = None,
                     field: str | None = None, id: str | None = None,
                     cache: Path | None = None) -> LabelledImage:
    """The generic GIS case: a raster plus a label raster on the same grid, or a polygon layer
    (GeoPackage, Shapefile, ...) whose integer ``field`` holds the class id."""
    image, labels = Path(image), Path(labels)
    if not image.is_file():
        raise FileNotFoundError(f"image raster {image} does not exist")
    if not labels.exists():
        raise FileNotFoundError(f"labels {labels} do not exist")
    img = read_raster(image, bands)
    if _is_vector(labels):
        if not field:   # building footprints and the like: one class, as fctl:train reads them
            log.info("%s: no --field, so its polygons are class 1 and everything else class 0 "
                     "(name a class-id field with --field for more classes)", labels)
        lab = rasterize_polygons(labels, image, field)
    else:
        lab = _label_raster_on_grid(labels, image)
    return LabelledImage(id or image.stem, img, lab)


def _label_raster_on_grid(labels: Path, image: Path) -> np.ndarray:
    from osgeo import gdal

    src, ref = gdal.Open(str(labels)), gdal.Open(str(image))
    if src is None:
        raise FileNotFoundError(f"cannot open label raster {labels}")
    if (src.RasterXSize, src.RasterYSize) != (ref.RasterXSize, ref.RasterYSize):
        raise ValueError(f"label raster {labels} is {src.RasterXSize}x{src.RasterYSize} but the "
                         f"image is {ref.RasterXSize}x{ref.RasterYSize}; resample the labels "
                         "onto the image grid (gdalwarp -tr/-te) first")
    arr = src.GetRasterBand(1).ReadAsArray()
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError(f"label raster {labels} holds values outside 0-255; class ids must be "
                         "small non-negative integers")
    return arr.astype(np.uint8)


def _is_vector(path: Path) -> bool:
    from osgeo import gdal

    ds = gdal.OpenEx(str(path), gdal.OF_VECTOR)
    return ds is not None and ds.GetLayerCount() > 0


def rasterize_polygons(vector: str | Path, image: str | Path, field: str | None,
                       layer: str | None = None, fill: int = 0) -> np.ndarray:
    """Burn the integer ``field`` of a polygon layer onto the grid of ``image`` (H, W) uint8;
    without a field, 1 inside every polygon.

    The layer is reprojected to the image's CRS by GDAL when they differ; pixels outside every
    polygon get ``fill`` (use it as the ignore class).
    """
    from osgeo import gdal, ogr

    ref = gdal.Open(str(image))
    if ref is None:
        raise FileNotFoundError(f"cannot open image raster {image}")
    src = gdal.OpenEx(str(vector), gdal.OF_VECTOR)
    if src is None:
        raise FileNotFoundError(f"cannot open polygon layer {vector}")
    lyr = src.GetLayerByName(layer) if layer else src.GetLayer(0)
    if lyr is None:
        raise ValueError(f"{vector} has no layer {layer!r}")
    defn = lyr.GetLayerDefn()
    idx = defn.GetFieldIndex(field) if field else 0
    if idx < 0:
        names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
        raise ValueError(f"{vector} has no field {field!r}; its fields are {names}")
    if field and defn.GetFieldDefn(idx).GetType() not in (ogr.OFTInteger, ogr.OFTInteger64):
        raise ValueError(f"field {field!r} of {vector} is not an integer class id")
    srs = lyr.GetSpatialRef()
    wkt = ref.GetProjection()
    if srs is not None and wkt:
        from osgeo import osr
        target = osr.SpatialReference(wkt=wkt)
        if not srs.IsSame(target):  # reproject the polygons onto the image's CRS in memory
            src = gdal.VectorTranslate("/vsimem/fctl_rasterize.gpkg", src, dstSRS=wkt,
                                       layers=[lyr.GetName()], format="GPKG")
            lyr = src.GetLayer(0)
    w, h = ref.RasterXSize, ref.RasterYSize
    mem = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal.GDT_Byte)
    mem.SetGeoTransform(ref.GetGeoTransform())
    mem.SetProjection(ref.GetProjection())
    mem.GetRasterBand(1).Fill(fill)
    opts = gdal.RasterizeOptions(layers=[lyr.GetName()], **(
        {"attribute": field} if field else {"burnValues": [1]}))
    if gdal.Rasterize(mem, src, options=opts) is None:
        raise ValueError(f"rasterising {vector} onto {image} failed: {gdal.GetLastErrorMsg()}")
    out = mem.GetRasterBand(1).ReadAsArray().astype(np.uint8)
    src = lyr = None
    gdal.Unlink("/vsimem/fctl_rasterize.gpkg")
    return out


def _natural(s: str) -> tuple:
    return (0, int(s)) if s.isdigit() else (1, s)
