"""Cells, polygons and connected regions on the gate's signature grid (pure numpy/OpenCV).

The gate works on a small grid of cells (its *signature*); masks and zones are
polygons in relative coordinates (0..1), rasterised once per grid size onto
that grid; changed cells are grouped into 8-connected regions.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from daemon.config.cameras import Polygon
from daemon.types import Region

_SHIFT = 4  # fillPoly's fractional bits: polygon corners land within 1/16 cell


@lru_cache(maxsize=64)
def polygon_cells(polygons: tuple[Polygon, ...], shape: tuple[int, int]) -> np.ndarray:
    """[h, w] bool: the cells (by their centres) inside any of the polygons. Cached per grid size;
    the array is shared, so never write into it."""
    import cv2

    height, width = shape
    raster = np.zeros(shape, np.uint8)
    scale = float(1 << _SHIFT)
    for polygon in polygons:
        # Cell i covers [i, i + 1) of the grid; fillPoly's pixel centres are integers: shift by half a cell.
        points = np.array([[(x * width - 0.5) * scale, (y * height - 0.5) * scale] for x, y in polygon])
        cv2.fillPoly(raster, [np.round(points).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    out = raster.astype(bool)
    out.flags.writeable = False
    return out


def components(changed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a [h, w] bool map: (labels [h, w] int32, stats [n, 5] as x, y, w, h, cells).
    Label 0 (the background) is left out of `stats`, so row i describes label i + 1."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(changed.view(np.uint8), connectivity=8)
    return labels, stats[1:count]


def to_regions(stats: np.ndarray, shape: tuple[int, int]) -> tuple[Region, ...]:
    """Component statistics as Regions relative to the picture, largest first."""
    height, width = shape
    cells = float(height * width)
    order = np.argsort(-stats[:, 4], kind="stable")
    return tuple(Region(float(x) / width, float(y) / height, float(w) / width, float(h) / height, float(n) / cells)
                 for x, y, w, h, n in stats[order])


def zones_touched(changed: np.ndarray, zones: tuple[tuple[str, Polygon], ...]) -> frozenset[str]:
    """Names of the zones (name, polygon) with at least one changed cell."""
    return frozenset(name for name, polygon in zones if (changed & polygon_cells((polygon,), changed.shape)).any())
