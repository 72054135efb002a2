"""The demo's synthetic tissue: its frame, its cells and their look, and the H&E image painted from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = ["CELL_TYPES", "COARSE_UM", "MORPHOLOGY", "Cells", "Frame", "Morphology", "render_he", "sample_grid"]

CELL_TYPES = ("tumour", "fibroblast", "lymphocyte", "macrophage")
#: Pitch of the coarse fields (tissue, domains, gradients), µm.
COARSE_UM = 20.0

_GLASS_RGB = np.array([243.0, 242.0, 246.0])
_STROMA_RGB = np.array([238.0, 176.0, 205.0])


@dataclass(frozen=True)
class Morphology:
    """Nuclear and cytoplasmic appearance of one cell type (radii in µm, colours RGB 0-255)."""

    nucleus_major: float
    nucleus_minor: float
    cytoplasm_radius: float
    nucleus_rgb: tuple[float, float, float]
    cytoplasm_rgb: tuple[float, float, float]
    texture: float  # amplitude of within-cell speckle (chromatin / foam)


MORPHOLOGY = {
    "tumour": Morphology(4.0, 4.0, 7.0, (150.0, 108.0, 178.0), (214.0, 150.0, 198.0), 18.0),
    "fibroblast": Morphology(5.0, 1.8, 0.0, (72.0, 40.0, 112.0), (0.0, 0.0, 0.0), 6.0),
    "lymphocyte": Morphology(2.5, 2.5, 3.3, (48.0, 24.0, 92.0), (196.0, 150.0, 200.0), 6.0),
    "macrophage": Morphology(3.5, 3.5, 8.0, (118.0, 80.0, 152.0), (236.0, 204.0, 226.0), 14.0),
}


@dataclass(frozen=True)
class Frame:
    """Physical extent of the slide; all lengths in µm."""

    width_um: float
    height_um: float
    microns_per_pixel: float

    @property
    def shape_px(self) -> tuple[int, int]:
        """Image shape (y, x) in pixels."""
        return (
            int(np.ceil(self.height_um / self.microns_per_pixel)),
            int(np.ceil(self.width_um / self.microns_per_pixel)),
        )

    def grid_shape(self, pitch_um: float) -> tuple[int, int]:
        """Shape (y, x) of a field grid with the given pitch, one cell larger so bilinear lookups never clamp."""
        return int(np.ceil(self.height_um / pitch_um)) + 1, int(np.ceil(self.width_um / pitch_um)) + 1


@dataclass(frozen=True)
class Cells:
    """Cell centres (µm, x then y) with their type, orientation and per-gene rate vectors."""

    xy: np.ndarray
    cell_type: np.ndarray
    angle: np.ndarray
    shade: np.ndarray
    rates: np.ndarray


def sample_grid(grid: np.ndarray, xy_um: np.ndarray, pitch_um: float) -> np.ndarray:
    """Bilinear lookup of a grid whose cell k is centred at (k + 0.5) * pitch µm; ``grid`` may carry leading axes."""
    coords = np.stack([xy_um[:, 1] / pitch_um - 0.5, xy_um[:, 0] / pitch_um - 0.5])
    flat = grid.reshape(-1, *grid.shape[-2:])
    out = np.stack([ndimage.map_coordinates(g, coords, order=1, mode="nearest") for g in flat])
    return out.reshape(*grid.shape[:-2], len(xy_um))


def render_he(rng: np.random.Generator, frame: Frame, tissue: np.ndarray, cells: Cells) -> np.ndarray:
    """H&E-like RGB image (c, y, x) uint8: each pixel takes the look of its nearest cell, else stroma or glass."""
    height, width = frame.shape_px
    mpp = frame.microns_per_pixel
    morph = [MORPHOLOGY[t] for t in CELL_TYPES]
    nuc_a = np.array([m.nucleus_major for m in morph])[cells.cell_type]
    nuc_b = np.array([m.nucleus_minor for m in morph])[cells.cell_type]
    cyto_r = np.array([m.cytoplasm_radius for m in morph])[cells.cell_type]
    texture = np.array([m.texture for m in morph])[cells.cell_type]
    # Per-cell shade variation so that nuclei of one type are not identical.
    nuc_rgb = np.array([m.nucleus_rgb for m in morph])[cells.cell_type] + 8.0 * cells.shade[:, None]
    cyto_rgb = np.array([m.cytoplasm_rgb for m in morph])[cells.cell_type] + 5.0 * cells.shade[:, None]
    cos, sin = np.cos(cells.angle), np.sin(cells.angle)
    reach = max(float(cyto_r.max(initial=0.0)), float(nuc_a.max(initial=0.0)))
    tree = cKDTree(cells.xy) if len(cells.xy) else None

    image = np.empty((height, width, 3), dtype=np.float32)
    x_um = (np.arange(width) + 0.5) * mpp
    rows_per_chunk = max(1, 2**20 // width)
    for start in range(0, height, rows_per_chunk):
        stop = min(height, start + rows_per_chunk)
        y_um = (np.arange(start, stop) + 0.5) * mpp
        px = np.stack(np.meshgrid(x_um, y_um), axis=-1).reshape(-1, 2)
        chunk = np.tile(_GLASS_RGB.astype(np.float32), (len(px), 1))
        in_tissue = sample_grid(tissue, px, COARSE_UM) > 0
        chunk[in_tissue] = _STROMA_RGB
        if tree is not None and in_tissue.any():
            _paint_cells(chunk, px, in_tissue, tree, reach, nuc_a, nuc_b, cyto_r, cos, sin, nuc_rgb, cyto_rgb, texture)
        image[start:stop] = chunk.reshape(stop - start, width, 3)

    # Stroma fibres and stain unevenness are mimicked by pixel noise softened by a sub-pixel blur.
    image += rng.standard_normal(image.shape, dtype=np.float32) * 6.0
    for ch in range(3):
        ndimage.gaussian_filter(image[..., ch], 0.6, output=image[..., ch])
    return np.clip(image, 0, 255).astype(np.uint8).transpose(2, 0, 1)


def _paint_cells(
    chunk: np.ndarray,
    px: np.ndarray,
    in_tissue: np.ndarray,
    tree: cKDTree,
    reach: float,
    nuc_a: np.ndarray,
    nuc_b: np.ndarray,
    cyto_r: np.ndarray,
    cos: np.ndarray,
    sin: np.ndarray,
    nuc_rgb: np.ndarray,
    cyto_rgb: np.ndarray,
    texture: np.ndarray,
) -> None:
    """Overwrite tissue pixels of ``chunk`` that fall in the nucleus or cytoplasm of their nearest cell."""
    where = np.flatnonzero(in_tissue)
    # Pixels farther than any cell's reach are stroma anyway; the bound makes the query much cheaper.
    dist, nearest = tree.query(px[where], distance_upper_bound=reach + 1e-6, workers=-1)
    hit = np.isfinite(dist)
    where, nearest = where[hit], nearest[hit]
    d = px[where] - tree.data[nearest]
    # Rotate into the cell frame so elongated (fibroblast) nuclei get a random orientation.
    u = d[:, 0] * cos[nearest] + d[:, 1] * sin[nearest]
    v = -d[:, 0] * sin[nearest] + d[:, 1] * cos[nearest]
    rho = (u / nuc_a[nearest]) ** 2 + (v / nuc_b[nearest]) ** 2
    in_nucleus = rho <= 1.0
    in_cyto = ~in_nucleus & (dist[hit] <= cyto_r[nearest])

    cyto = where[in_cyto]
    chunk[cyto] = cyto_rgb[nearest[in_cyto]]
    # Foamy/granular cytoplasm: deterministic speckle from position so the pattern is stable across chunks.
    chunk[cyto] += (texture[nearest[in_cyto]] * _speckle(px[cyto]))[:, None]

    nuc = where[in_nucleus]
    n_idx = nearest[in_nucleus]
    # Vesicular nuclei show a darker membrane rim and chromatin speckles on a pale background.
    rim = np.clip((rho[in_nucleus] - 0.55) / 0.45, 0.0, 1.0)
    chunk[nuc] = nuc_rgb[n_idx] - (35.0 * rim)[:, None] + (texture[n_idx] * _speckle(px[nuc]))[:, None]


def _speckle(xy_um: np.ndarray) -> np.ndarray:
    """Cheap deterministic high-frequency texture in [-1, 1]."""
    return np.sin(2.3 * xy_um[:, 0] + 1.7 * np.sin(1.9 * xy_um[:, 1])) * np.cos(2.9 * xy_um[:, 1] - 0.7 * xy_um[:, 0])
