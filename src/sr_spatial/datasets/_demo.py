"""Synthetic Visium-like slide in which histology truly predicts fine-scale expression.

One seeded generator read top to bottom: tissue domains, cells, counts, H&E and truth are each a short function
drawing from the same random stream in a fixed order, which keeps the demo identical for a seed. The tissue's
frame, cells, their look and the painting of the H&E live in ``_tissue``; the order of the draws stays here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import ndimage, sparse
from scipy.spatial import cKDTree
from skimage.transform import downscale_local_mean
from spatialdata import SpatialData
from spatialdata.models import Image2DModel, ShapesModel, TableModel
from spatialdata.transformations import Identity, Scale

from sr_spatial.datasets._tissue import CELL_TYPES, COARSE_UM, Cells, Frame, render_he, sample_grid

__all__ = ["demo"]

DATASET_ID = "demo"
DOMAINS = ("tumour", "stroma", "immune")

SPOT_DIAMETER_UM = 55.0
SPOT_SPACING_UM = 100.0
MARGIN_UM = 150.0
TRUTH_UM_PER_PX = 5.0
TRUTH_SIGMA_UM = 4.0
TARGET_MEDIAN_LIBRARY = 3000.0
NB_THETA = 10.0

# Fields that only vary on >= 150 µm scales are generated on a coarse grid; the within-spot fields need a finer one.
_FINE_UM = 5.0
_TISSUE_FRACTION = 0.65
_CELL_PITCH_UM = 11.5
_CELL_JITTER_UM = 3.0

# P(type | domain); rows follow DOMAINS, columns CELL_TYPES.
_TYPE_GIVEN_DOMAIN = np.array(
    [
        [0.72, 0.12, 0.08, 0.08],
        [0.10, 0.62, 0.16, 0.12],
        [0.05, 0.15, 0.62, 0.18],
    ]
)
# Stroma is mostly extracellular matrix, so fewer cells survive thinning there.
_DENSITY_GIVEN_DOMAIN = np.array([0.95, 0.45, 0.95])
# Strength of the fine (~20 µm) fields; large enough that nests and clusters appear inside a single spot.
_FINE_FIELD_WEIGHT = 1.6


def demo(
    *,
    seed: int = 0,
    n_genes: int = 30,
    n_rows: int = 22,
    n_cols: int = 20,
    microns_per_pixel: float = 1.0,
    include_truth: bool = True,
) -> SpatialData:
    """Synthetic Visium-like slide whose H&E image predicts within-spot expression.

    Cells of four types (tumour, fibroblast, lymphocyte, macrophage) with distinct nuclear and cytoplasmic
    morphology are placed in an irregular tissue blob with three coarse domains. Cell-type composition also
    varies on a ~20 µm scale, i.e. within a 55 µm spot, so a super-resolution model can recover sub-spot
    expression from the histology. Spot counts are Negative Binomial draws around the summed rates of the cells
    under each spot. A few "gradient" genes follow a smooth spatial field that the histology cannot predict.

    Parameters
    ----------
    seed
        Seed for :func:`numpy.random.default_rng`; the output is fully determined by the arguments.
    n_genes
        Number of genes (at least 8). About ``n_genes // 6`` markers per cell type, ``n_genes // 6`` gradient
        genes, the rest housekeeping.
    n_rows
        Number of rows of the hexagonal spot lattice (at least 3).
    n_cols
        Number of spots per lattice row (at least 3).
    microns_per_pixel
        Resolution of the full-resolution H&E image.
    include_truth
        Whether to add the hidden ground-truth expression map ``"demo_truth"``.

    Returns
    -------
    Laid out like :func:`spatialdata_io.visium` output, every element in the coordinate system ``"demo"``
    (full-resolution image pixels):

    - ``images["demo_full_image"]``: multiscale RGB ``uint8`` H&E image at ``microns_per_pixel``.
    - ``images["demo_hires_image"]``: the same image downscaled 4x, with a ``Scale`` transformation.
    - ``images["demo_truth"]``: only if ``include_truth``; ``float32`` map with one channel per gene of
      ``log1p(1e4 * rate / total rate)`` on 5 µm pixels (0 outside tissue), i.e. in the units of scanpy's
      ``normalize_total(target_sum=1e4)`` followed by ``log1p``.
    - ``shapes["demo"]``: spot circles (radius 27.5 µm in pixels) indexed by barcode-like spot ids.
    - ``tables["table"]``: raw counts (CSR) annotating ``shapes["demo"]`` through ``obs["region"]`` and
      ``obs["spot_id"]``, with ``obs`` columns ``in_tissue``, ``array_row``, ``array_col``,
      ``var["gene_ids"]``, ``obsm["spatial"]`` (spot centres in pixels, x then y) and ``uns["demo"]`` holding
      the simulation parameters, ``cell_types`` and ``gene_kind`` (``"marker:<type>"``, ``"gradient"`` or
      ``"housekeeping"`` per gene).
    """
    _validate(n_genes=n_genes, n_rows=n_rows, n_cols=n_cols, microns_per_pixel=microns_per_pixel)
    rng = np.random.default_rng(seed)

    lattice_xy, array_row, array_col = _spot_lattice(n_rows, n_cols)
    frame = Frame(
        width_um=float(lattice_xy[:, 0].max() + MARGIN_UM),
        height_um=float(lattice_xy[:, 1].max() + MARGIN_UM),
        microns_per_pixel=float(microns_per_pixel),
    )

    tissue = _tissue_field(rng, frame, lattice_xy)
    domain_fields = np.stack([_smooth_field(rng, frame.grid_shape(COARSE_UM), 150.0 / COARSE_UM) for _ in DOMAINS])
    fine_fields = np.stack([_smooth_field(rng, frame.grid_shape(_FINE_UM), 20.0 / _FINE_UM) for _ in CELL_TYPES])
    programmes, gene_kind = _gene_programmes(rng, n_genes)
    gradient_idx = np.flatnonzero(np.array(gene_kind) == "gradient")
    gradient_fields = np.stack(
        [_smooth_field(rng, frame.grid_shape(COARSE_UM), 300.0 / COARSE_UM) for _ in gradient_idx]
    )

    cells = _place_cells(rng, frame, tissue, domain_fields, fine_fields, programmes, gradient_idx, gradient_fields)

    keep = sample_grid(tissue, lattice_xy, COARSE_UM) > 0
    spot_xy = lattice_xy[keep]
    counts = _spot_counts(rng, spot_xy, cells)

    image = render_he(rng, frame, tissue, cells)
    truth = _truth_map(frame, tissue, cells) if include_truth else None

    genes = [f"gene_{i:02d}" for i in range(n_genes)]
    spot_ids = [f"AAAC{r:03d}{c:03d}-1" for r, c in zip(array_row[keep], array_col[keep], strict=True)]
    metadata = {
        "seed": int(seed),
        "microns_per_pixel": float(microns_per_pixel),
        "spot_diameter_um": SPOT_DIAMETER_UM,
        "spot_spacing_um": SPOT_SPACING_UM,
        "truth_microns_per_pixel": TRUTH_UM_PER_PX,
        "cell_types": list(CELL_TYPES),
        "gene_kind": list(gene_kind),
    }
    return _assemble(
        image=image,
        truth=truth,
        spot_px=spot_xy / frame.microns_per_pixel,
        spot_ids=spot_ids,
        array_row=array_row[keep],
        array_col=array_col[keep],
        counts=counts,
        genes=genes,
        microns_per_pixel=frame.microns_per_pixel,
        metadata=metadata,
    )


def _validate(*, n_genes: int, n_rows: int, n_cols: int, microns_per_pixel: float) -> None:
    if n_genes < 8:
        raise ValueError(f"`n_genes` must be at least 8 to hold markers for 4 cell types, got {n_genes}.")
    if n_rows < 3 or n_cols < 3:
        raise ValueError(f"`n_rows` and `n_cols` must both be at least 3, got {n_rows} and {n_cols}.")
    if not np.isfinite(microns_per_pixel) or microns_per_pixel <= 0:
        raise ValueError(f"`microns_per_pixel` must be a positive finite number, got {microns_per_pixel}.")


def _spot_lattice(n_rows: int, n_cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visium hexagonal lattice: centres in µm (x, y, margin included), array rows and doubled array columns."""
    r, c = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    r, c = r.ravel(), c.ravel()
    x = MARGIN_UM + SPOT_SPACING_UM * c + 0.5 * SPOT_SPACING_UM * (r % 2)
    y = MARGIN_UM + SPOT_SPACING_UM * np.sqrt(3.0) / 2.0 * r
    return np.column_stack([x, y]), r, 2 * c + (r % 2)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Standardised Gaussian random field; padded before filtering so edges keep full variance."""
    pad = int(np.ceil(3 * sigma_px))
    noise = rng.standard_normal((shape[0] + 2 * pad, shape[1] + 2 * pad))
    field = ndimage.gaussian_filter(noise, sigma_px, mode="wrap")[pad : pad + shape[0], pad : pad + shape[1]]
    return (field - field.mean()) / field.std()


def _tissue_field(rng: np.random.Generator, frame: Frame, lattice_xy: np.ndarray) -> np.ndarray:
    """Coarse field that is positive inside the tissue blob."""
    shape = frame.grid_shape(COARSE_UM)
    field = _smooth_field(rng, shape, 250.0 / COARSE_UM)
    yy, xx = (np.indices(shape) + 0.5) * COARSE_UM
    centre = lattice_xy.mean(axis=0)
    half = np.ptp(lattice_xy, axis=0) / 2.0
    # The centre bias keeps the blob on the capture area instead of fragmenting into islands.
    radial = ((xx - centre[0]) / half[0]) ** 2 + ((yy - centre[1]) / half[1]) ** 2
    field = field - 1.5 * radial
    # Calibrate on the lattice footprint so the tissue fraction is stable across seeds.
    inside = (np.abs(xx - centre[0]) <= half[0]) & (np.abs(yy - centre[1]) <= half[1])
    threshold = np.quantile(field[inside], 1.0 - _TISSUE_FRACTION)
    # Tiny lattices could otherwise miss the blob entirely and yield a slide without spots.
    best_spot = sample_grid(field, lattice_xy, COARSE_UM).max()
    return field - min(threshold, best_spot - 1e-6)


def _gene_programmes(rng: np.random.Generator, n_genes: int) -> tuple[np.ndarray, list[str]]:
    """Log-mean rate per cell type and gene, and each gene's kind."""
    n_block = n_genes // 6
    kind = [f"marker:{t}" for t in CELL_TYPES for _ in range(n_block)]
    kind += ["gradient"] * n_block
    kind += ["housekeeping"] * (n_genes - len(kind))
    baseline = rng.normal(1.0, 0.6, size=n_genes)
    programmes = np.tile(baseline, (len(CELL_TYPES), 1)) + rng.normal(0.0, 0.1, size=(len(CELL_TYPES), n_genes))
    for t, name in enumerate(CELL_TYPES):
        idx = [g for g, k in enumerate(kind) if k == f"marker:{name}"]
        programmes[t, idx] += rng.uniform(2.0, 3.0, size=len(idx))
    # Gradient genes must carry no cell-type signal, otherwise histology would partly predict them.
    grad = [g for g, k in enumerate(kind) if k == "gradient"]
    programmes[:, grad] = baseline[grad]
    return programmes, kind


def _place_cells(
    rng: np.random.Generator,
    frame: Frame,
    tissue: np.ndarray,
    domain_fields: np.ndarray,
    fine_fields: np.ndarray,
    programmes: np.ndarray,
    gradient_idx: np.ndarray,
    gradient_fields: np.ndarray,
) -> Cells:
    """Jittered-lattice cells inside tissue, typed by coarse domain plus fine-scale composition fields."""
    gx = np.arange(_CELL_PITCH_UM / 2, frame.width_um, _CELL_PITCH_UM)
    gy = np.arange(_CELL_PITCH_UM / 2, frame.height_um, _CELL_PITCH_UM)
    xy = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    xy = xy + rng.uniform(-_CELL_JITTER_UM, _CELL_JITTER_UM, size=xy.shape)
    xy = xy[sample_grid(tissue, xy, COARSE_UM) > 0]

    domain = np.argmax(sample_grid(domain_fields, xy, COARSE_UM), axis=0)
    kept = rng.random(len(xy)) < _DENSITY_GIVEN_DOMAIN[domain]
    xy, domain = xy[kept], domain[kept]

    logits = np.log(_TYPE_GIVEN_DOMAIN[domain]) + _FINE_FIELD_WEIGHT * sample_grid(fine_fields, xy, _FINE_UM).T
    cell_type = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    xy, cell_type = _pair_lymphocytes(rng, xy, cell_type, tissue)

    rates = np.exp(programmes[cell_type])
    if len(gradient_idx):
        modulation = 1.0 + 0.9 * np.tanh(sample_grid(gradient_fields, xy, COARSE_UM).T)
        rates[:, gradient_idx] *= modulation
    rates *= rng.lognormal(0.0, 0.2, size=(len(xy), 1))

    return Cells(
        xy=xy,
        cell_type=cell_type,
        angle=rng.uniform(0.0, np.pi, size=len(xy)),
        shade=rng.normal(0.0, 1.0, size=len(xy)),
        rates=rates,
    )


def _pair_lymphocytes(
    rng: np.random.Generator, xy: np.ndarray, cell_type: np.ndarray, tissue: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Give every lymphocyte a neighbour lymphocyte ~6.5 µm away.

    Lymphocytes are half the size of the lattice pitch; packing two per site makes lymphoid aggregates the densest,
    darkest regions of the H&E, as in real tissue, instead of carrying the same haematoxylin per area as tumour.
    """
    code = CELL_TYPES.index("lymphocyte")
    lymph = np.flatnonzero(cell_type == code)
    theta = rng.uniform(0.0, 2.0 * np.pi, size=len(lymph))
    sibling = xy[lymph] + 6.5 * np.column_stack([np.cos(theta), np.sin(theta)])
    sibling = sibling[sample_grid(tissue, sibling, COARSE_UM) > 0]
    return np.concatenate([xy, sibling]), np.concatenate([cell_type, np.full(len(sibling), code)])


def _spot_counts(rng: np.random.Generator, spot_xy: np.ndarray, cells: Cells) -> sparse.csr_matrix:
    """Negative Binomial counts around the summed rates of cells whose centre lies under each spot."""
    members = cKDTree(cells.xy).query_ball_point(spot_xy, r=SPOT_DIAMETER_UM / 2.0)
    summed = np.stack([cells.rates[m].sum(axis=0) for m in members]) if len(spot_xy) else cells.rates[:0]
    library = summed.sum(axis=1)
    median = np.median(library[library > 0]) if np.any(library > 0) else 1.0
    mu = summed * (TARGET_MEDIAN_LIBRARY / median)
    counts = rng.negative_binomial(NB_THETA, NB_THETA / (NB_THETA + mu))
    return sparse.csr_matrix(counts.astype(np.int32))


def _truth_map(frame: Frame, tissue: np.ndarray, cells: Cells) -> np.ndarray:
    """Expected normalised log-expression (genes, y, x) on 5 µm pixels; 0 outside tissue or far from cells."""
    n_y = int(np.ceil(frame.height_um / TRUTH_UM_PER_PX))
    n_x = int(np.ceil(frame.width_um / TRUTH_UM_PER_PX))
    n_genes = cells.rates.shape[1]
    iy = np.clip((cells.xy[:, 1] // TRUTH_UM_PER_PX).astype(int), 0, n_y - 1)
    ix = np.clip((cells.xy[:, 0] // TRUTH_UM_PER_PX).astype(int), 0, n_x - 1)
    flat = iy * n_x + ix
    density = np.stack([np.bincount(flat, weights=cells.rates[:, g], minlength=n_y * n_x) for g in range(n_genes)])
    sigma = TRUTH_SIGMA_UM / TRUTH_UM_PER_PX
    density = ndimage.gaussian_filter(density.reshape(n_genes, n_y, n_x), (0, sigma, sigma))
    total = density.sum(axis=0)

    yy, xx = (np.indices((n_y, n_x)) + 0.5) * TRUTH_UM_PER_PX
    centres = np.column_stack([xx.ravel(), yy.ravel()])
    in_tissue = (sample_grid(tissue, centres, COARSE_UM) > 0).reshape(n_y, n_x)
    # Relative threshold: the Gaussian tails are tiny but non-zero, and their composition is still meaningful.
    valid = in_tissue & (total > 1e-6 * total.max(initial=0.0))
    truth = np.zeros_like(density, dtype=np.float32)
    truth[:, valid] = np.log1p(1e4 * density[:, valid] / total[valid])
    return truth


def _assemble(
    *,
    image: np.ndarray,
    truth: np.ndarray | None,
    spot_px: np.ndarray,
    spot_ids: list[str],
    array_row: np.ndarray,
    array_col: np.ndarray,
    counts: sparse.csr_matrix,
    genes: list[str],
    microns_per_pixel: float,
    metadata: dict,
) -> SpatialData:
    """Wrap everything in the element layout produced by :func:`spatialdata_io.visium`."""
    cs = DATASET_ID
    images = {
        f"{cs}_full_image": Image2DModel.parse(
            image,
            dims=("c", "y", "x"),
            c_coords=["r", "g", "b"],
            scale_factors=[2, 2],
            transformations={cs: Identity()},
        ),
    }
    # Edge padding to a multiple of 4 avoids the dark border that zero padding would leave in the hires image.
    _, h, w = image.shape
    padded = np.pad(image, ((0, 0), (0, -h % 4), (0, -w % 4)), mode="edge")
    hires = np.round(downscale_local_mean(padded, (1, 4, 4))).astype(np.uint8)
    images[f"{cs}_hires_image"] = Image2DModel.parse(
        hires, dims=("c", "y", "x"), c_coords=["r", "g", "b"], transformations={cs: Scale([4.0, 4.0], axes=("x", "y"))}
    )
    if truth is not None:
        s = TRUTH_UM_PER_PX / microns_per_pixel
        images[f"{cs}_truth"] = Image2DModel.parse(
            truth, dims=("c", "y", "x"), c_coords=genes, transformations={cs: Scale([s, s], axes=("x", "y"))}
        )

    index = pd.Index(spot_ids, dtype=object)
    shapes = ShapesModel.parse(
        spot_px,
        geometry=0,
        radius=np.full(len(spot_ids), SPOT_DIAMETER_UM / 2.0 / microns_per_pixel),
        index=index,
        transformations={cs: Identity()},
    )

    obs = pd.DataFrame(
        {
            "spot_id": np.asarray(shapes.index, dtype=object),
            "region": pd.Categorical([cs] * len(spot_ids)),
            "in_tissue": np.ones(len(spot_ids), dtype=np.int64),
            "array_row": np.asarray(array_row, dtype=np.int64),
            "array_col": np.asarray(array_col, dtype=np.int64),
        },
        index=index,
    )
    var = pd.DataFrame({"gene_ids": genes}, index=pd.Index(genes))
    adata = AnnData(X=counts, obs=obs, var=var, obsm={"spatial": np.asarray(spot_px, dtype=np.float64)})
    adata.uns[cs] = metadata
    table = TableModel.parse(adata, region=cs, region_key="region", instance_key="spot_id")
    return SpatialData(images=images, shapes={cs: shapes}, tables={"table": table})
