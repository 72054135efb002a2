"""her2st (legacy Spatial Transcriptomics + H&E): reader and the pseudo-spot ground-truth protocol.

Data layout (``../shared/data/her2st/<section>/``, see its README): ``counts.tsv.gz`` (spots x genes, raw UMI,
first column ``"{x}x{y}"``), ``spots.tsv`` (``x y new_x new_y pixel_x pixel_y selected``) and ``he.jpg``. Spots
are 100 µm disks on a 200 µm square lattice.

Protocol (issue 6, 2c): the measured spots are pooled 2x2 on the array lattice into pseudo-spots (raw counts
summed, as a 400 µm-pitch measurement would count them), the pseudo-spot slide is super-resolved 2x with
:func:`sr_spatial.tl.superresolve`, and every method is scored at the measured spots.

Use from Python (the lead's ablations)::

    import sys; sys.path.insert(0, "benchmarks")
    from srbench.her2st import run_her2st
    per_gene = run_her2st("B4", methods=("nearest", "cubic", "sr_spatial"), config="base", seed=0)
    per_gene.groupby("method").mean(numeric_only=True)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from srbench import protocol as _protocol
from srbench.protocol import (
    METHODS,
    PEERS_ENV,
    data_root,
    histology_base_config,
    own_plus_ridge_detail,
    peer_python,
    ridge_fit_predict,
    sample_disks,
    score_per_gene,
)
from srbench.protocol import cubic_at as _cubic_at
from srbench.protocol import lognorm as _lognorm
from srbench.protocol import project as _project
from srbench.protocol import run_peer as run_peer_at

if TYPE_CHECKING:
    from collections.abc import Sequence

    from spatialdata import SpatialData

__all__ = [
    "METHODS",
    "PEERS_ENV",
    "Her2stSection",
    "data_root",
    "load_section",
    "patch_features",
    "peer_python",
    "pool_2x2",
    "pseudo_spot_sdata",
    "ridge_fit_predict",
    "run_her2st",
    "run_peer",
    "select_genes",
    "to_spatialdata",
]

SPOT_DIAMETER_UM = 100.0
SPOT_PITCH_UM = 200.0
SECTIONS = ("B4", "C2")


@dataclass(frozen=True)
class Her2stSection:
    """One section as plain arrays.

    ``counts`` is raw UMI ``(n_spots, n_genes)``; ``array`` the integer lattice ``(x, y)``; ``centres`` spot
    centres in full-resolution ``he.jpg`` pixels ``(x, y)``; ``image`` RGB ``(c, y, x)`` uint8 downscaled by
    ``downscale``; ``um_per_px`` the full-resolution pixel size estimated from the lattice pitch.
    """

    name: str
    counts: np.ndarray
    genes: pd.Index
    spot_ids: pd.Index
    array: np.ndarray
    centres: np.ndarray
    image: np.ndarray
    downscale: int
    um_per_px: float

    @property
    def radius_px(self) -> float:
        """Spot radius in full-resolution pixels."""
        return SPOT_DIAMETER_UM / 2.0 / self.um_per_px


def load_section(section: str, *, root: str | os.PathLike | None = None, downscale: int = 4) -> Her2stSection:
    """Read one her2st section (spots under tissue only).

    Parameters
    ----------
    section
        ``"B4"`` or ``"C2"`` (any folder under ``<root>/her2st``).
    root
        Folder holding ``her2st/``; see :func:`data_root`.
    downscale
        Integer factor by which the H&E is block-averaged on reading (the full image is ~9,300 x 9,900 px,
        ~0.69 µm/px; 4 gives ~2.8 µm/px, fine enough for 25 µm histology pixels and far cheaper).

    Returns
    -------
    The :class:`Her2stSection`.
    """
    from PIL import Image

    folder = data_root(root) / "her2st" / section
    if not folder.is_dir():
        msg = f"her2st section folder {str(folder)!r} not found; pass `root=` or set $SR_SPATIAL_DATA."
        raise FileNotFoundError(msg)
    counts = pd.read_csv(folder / "counts.tsv.gz", sep="\t", index_col=0)
    spots = pd.read_csv(folder / "spots.tsv", sep="\t")
    spots = spots[spots["selected"] == 1]
    spots.index = pd.Index([f"{x}x{y}" for x, y in zip(spots["x"], spots["y"], strict=True)])
    common = spots.index.intersection(counts.index)
    spots, counts = spots.loc[common], counts.loc[common]
    # Some genes appear twice in the published matrices; sum them so gene names are unique.
    counts = counts.T.groupby(level=0, sort=False).sum().T

    array = spots[["x", "y"]].to_numpy(dtype=np.int64)
    centres = spots[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    # Least-squares lattice -> pixel affine: its column norms are the pixel pitch along each array axis.
    design = np.column_stack([array, np.ones(len(array))])
    coef, *_ = np.linalg.lstsq(design, centres, rcond=None)
    pitch_px = float(np.mean(np.linalg.norm(coef[:2], axis=1)))

    Image.MAX_IMAGE_PIXELS = None  # the H&E is ~92 Mpx, above PIL's decompression-bomb warning
    with Image.open(folder / "he.jpg") as im:
        im = im.convert("RGB")
        # PIL's reduce is a box average, like skimage's downscale_local_mean, at a fraction of the memory.
        rgb = np.asarray(im.reduce(downscale) if downscale > 1 else im)
    return Her2stSection(
        name=section,
        counts=counts.to_numpy(dtype=np.float32),
        genes=pd.Index(counts.columns.astype(str)),
        spot_ids=pd.Index(spots.index),
        array=array,
        centres=centres,
        image=np.ascontiguousarray(rgb.transpose(2, 0, 1)),
        downscale=int(downscale),
        um_per_px=SPOT_PITCH_UM / pitch_px,
    )


def to_spatialdata(
    section: Her2stSection,
    *,
    counts: np.ndarray | None = None,
    centres: np.ndarray | None = None,
    radius_px: float | np.ndarray | None = None,
    spot_ids: Sequence[str] | None = None,
    array: np.ndarray | None = None,
) -> SpatialData:
    """A SpatialData laid out like :func:`spatialdata_io.visium` output for a her2st section.

    Coordinate system ``f"her2st_{name}"`` is the full-resolution ``he.jpg`` pixel space. Elements: image
    ``"he"`` (the downscaled H&E, multiscale, with a ``Scale`` to full-resolution pixels), shapes ``"spots"``
    (circles of radius 50 µm in full-resolution pixels) and table ``"table"`` (raw counts, ``obs`` columns
    ``spot_id``, ``region``, ``in_tissue``, ``array_row``, ``array_col``; ``obsm["spatial"]``). The optional
    arguments replace the spots (e.g. with pseudo-spots) while keeping the image.
    """
    counts = section.counts if counts is None else counts
    return _protocol.spots_sdata(
        image=section.image,
        downscale=section.downscale,
        cs=f"her2st_{section.name}",
        counts=counts,
        genes=section.genes,
        centres=section.centres if centres is None else centres,
        radius_px=section.radius_px if radius_px is None else radius_px,
        spot_ids=section.spot_ids if spot_ids is None else spot_ids,
        array=section.array if array is None else array,
    )


@dataclass(frozen=True)
class PseudoSpots:
    """2x2 pooling of a section: ``group[i]`` is the pseudo-spot of measured spot ``i``."""

    group: np.ndarray
    counts: np.ndarray
    centres: np.ndarray
    array: np.ndarray
    radius_px: float


def pool_2x2(section: Her2stSection, *, offset: tuple[int, int] = (0, 0)) -> PseudoSpots:
    """Pool the measured spots in 2x2 array neighbourhoods (raw counts summed).

    A pseudo-spot sits at the centre of its 2x2 block on the lattice (also where only some of the four spots
    lie under the tissue: that is where a 400 µm-pitch measurement would have put it). Its radius encloses the
    four 100 µm disks it pools.
    """
    block = (section.array + np.asarray(offset)) // 2
    keys, group = np.unique(block, axis=0, return_inverse=True)
    group = group.ravel()
    n = len(keys)
    counts = np.zeros((n, section.counts.shape[1]), dtype=np.float64)
    np.add.at(counts, group, section.counts)
    design = np.column_stack([section.array, np.ones(len(section.array))])
    coef, *_ = np.linalg.lstsq(design, section.centres, rcond=None)
    # Block (bx, by) holds array positions 2b - offset and 2b - offset + 1; its centre is their midpoint.
    block_centre_array = 2 * keys - np.asarray(offset) + 0.5
    centres = np.column_stack([block_centre_array, np.ones(n)]) @ coef
    pitch_px = SPOT_PITCH_UM / section.um_per_px
    radius = np.sqrt(2.0) * pitch_px / 2.0 + section.radius_px
    return PseudoSpots(group=group, counts=counts.astype(np.float32), centres=centres, array=keys, radius_px=radius)


def pseudo_spot_sdata(section: Her2stSection, pseudo: PseudoSpots) -> SpatialData:
    """The pseudo-spot slide: same H&E and coordinate system, pooled counts on the pseudo-spots."""
    ids = [f"P{x}x{y}" for x, y in pseudo.array]
    return to_spatialdata(
        section,
        counts=pseudo.counts,
        centres=pseudo.centres,
        radius_px=pseudo.radius_px,
        spot_ids=ids,
        array=pseudo.array,
    )


def patch_features(section: Her2stSection, centres: np.ndarray) -> np.ndarray:
    """H&E colour and texture features inside each spot disk of a section (:func:`srbench.protocol.patch_features`)."""
    return _protocol.patch_features(section.image, centres, radius_px=section.radius_px, downscale=section.downscale)


def _sample_map_at(sdata: SpatialData, key: str, genes: list[str], points_cs: np.ndarray, cs: str) -> np.ndarray:
    """The super-resolved value of the bin holding each point (``points_cs`` in coordinate system ``cs``).

    At scale 2 the output grid has one bin per measured spot, centred on the lattice position; the spots' own
    centres jitter by well under half a bin around it, so the bin holding a spot's centre is that spot's bin.
    Interpolating between bins would instead mix in the neighbouring pseudo-spots.
    """
    return sample_disks(sdata, key, genes, points_cs, 0.0, cs)


def run_peer(method: str, section: Her2stSection, pseudo: PseudoSpots, pooled: np.ndarray, genes) -> np.ndarray:
    """Predict the measured spots with a peer method in the peers environment (:func:`srbench.protocol.run_peer`)."""
    return run_peer_at(
        method,
        image=section.image,
        downscale=section.downscale,
        known_xy=pseudo.centres,
        known_values=pooled,
        query_xy=section.centres,
        radius_px=section.radius_px,
        genes=genes,
    )


def _scores(pred, truth, section: Her2stSection, pseudo: PseudoSpots, pooled, genes, std=None):
    """Per-gene metrics at the measured spots (SSIM on the array lattice; coverage where ``std`` is given)."""
    return score_per_gene(pred, truth, lattice=section.array, group=pseudo.group, pooled=pooled, genes=genes, std=std)


def select_genes(
    section: Her2stSection, pseudo: PseudoSpots, *, n_genes: int = 50, gene_selection: str = "mean"
) -> list[str]:
    """The genes :func:`run_her2st` scores, chosen from the pooled measurement alone.

    ``"mean"``: highest mean log-normalised expression over the pseudo-spots; ``"hvg"``:
    :func:`sr_spatial.pp.select_genes` on the pseudo-spots.
    """
    if gene_selection == "mean":
        pooled = _lognorm(pseudo.counts.astype(np.float64))
        return section.genes[np.argsort(-pooled.mean(axis=0), kind="stable")[:n_genes]].tolist()
    if gene_selection == "hvg":
        import anndata as ad

        import sr_spatial as sr

        view = ad.AnnData(X=pseudo.counts)
        view.var_names = section.genes
        return sr.pp.select_genes(view, n_top_genes=n_genes)
    msg = f"`gene_selection` must be 'mean' or 'hvg', got {gene_selection!r}."
    raise ValueError(msg)


def run_her2st(
    section: str | Her2stSection,
    *,
    methods: Sequence[str] = ("nearest", "cubic", "ridge", "ridge_proj", "sr_spatial", "sr_spatial_proj"),
    config: str | object = "base",
    seed: int = 0,
    n_genes: int = 50,
    gene_selection: str = "mean",
    root: str | os.PathLike | None = None,
    superresolve_kwargs: dict | None = None,
    show_progress_bar: bool = False,
) -> pd.DataFrame:
    """Run protocol 2c on one her2st section and score every method at the measured spots.

    Parameters
    ----------
    section
        Section name (``"B4"``, ``"C2"``) or an already loaded :class:`Her2stSection` (saves re-reading the JPEG).
    methods
        Any of :data:`METHODS`. ``sr_spatial`` trains the diffusion model on the pseudo-spot slide (scale
        transfer, scale 2) and samples it at the measured spots; ``sr_spatial_grid_nearest`` is the package's
        own ``method="nearest"`` read the same way, to show the cost of the output grid's placement.
    config
        Model configuration for ``sr_spatial`` (preset name, ``ModelConfig`` or dict), passed to
        :func:`sr_spatial.tl.superresolve`.
    seed
        Seeds the model; the data and pooling are deterministic.
    n_genes
        Genes scored.
    gene_selection
        ``"mean"`` (highest mean log-normalised expression over the pseudo-spots) or ``"hvg"``
        (:func:`sr_spatial.pp.select_genes` on the pseudo-spots). Only the pooled measurement is used.
    root
        Folder holding ``her2st/`` (default ``$SR_SPATIAL_DATA`` or ``../shared/data``).
    superresolve_kwargs
        Extra keyword arguments for :func:`sr_spatial.tl.superresolve` (``train_steps``, ``n_samples``, ...).
    show_progress_bar
        Show the model's progress bars.

    Returns
    -------
    One row per method and gene: ``method``, ``gene``, ``pearson`` (across measured spots), ``pearson_within``
    (of deviations from the pseudo-spot mean, i.e. the detail the measurement does not fix; NaN for flat
    predictions), ``ssim`` (on the array lattice), ``rmse``, ``spot_residual`` (relative disagreement of the
    spots' mean with their pseudo-spot, linear units), ``wall_s`` (the method's time), ``section`` and ``seed``.
    """
    import sr_spatial as sr

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        msg = f"Unknown methods {unknown}; choose from {list(METHODS)}."
        raise ValueError(msg)
    data = section if isinstance(section, Her2stSection) else load_section(section, root=root)
    pseudo = pool_2x2(data)
    pooled_all = _lognorm(pseudo.counts.astype(np.float64))
    genes = select_genes(data, pseudo, n_genes=n_genes, gene_selection=gene_selection)
    idx = data.genes.get_indexer(genes)
    truth = _lognorm(data.counts.astype(np.float64))[:, idx]
    pooled = pooled_all[:, idx]
    cs = f"her2st_{data.name}"

    results, cache = [], {}

    def sr_map(method, **extra_kwargs):
        key = method + "".join(f":{k}={v}" for k, v in extra_kwargs.items())
        model_config = extra_kwargs.pop("config", config)
        if key not in cache:
            sdata = pseudo_spot_sdata(data, pseudo)
            start = time.perf_counter()
            kwargs = dict(superresolve_kwargs or {}) | extra_kwargs
            sr.tl.superresolve(
                sdata,
                "he",
                genes=genes,
                scale=2,
                method=method,
                config=model_config,
                seed=seed,
                key_added="sr",
                show_progress_bar=show_progress_bar,
                **kwargs,
            )
            cache[key] = (_sample_map_at(sdata, "sr", genes, data.centres, cs), time.perf_counter() - start)
            cache[f"{key}:std"] = _sample_map_at(sdata, "sr_std", genes, data.centres, cs)
        return cache[key]

    for method in methods:
        start = time.perf_counter()
        extra = 0.0
        std = None
        if method == "nearest":
            pred = pooled[pseudo.group]
        elif method.startswith("cubic"):
            pred = _cubic_at(pseudo.centres, pooled, data.centres)
        elif method.startswith("ridge"):
            if "ridge" not in cache:
                from sr_spatial.pp import group_means

                feats = patch_features(data, data.centres)
                # A pseudo-spot measures its member disks, so its features are their mean.
                pseudo_feats, _ = group_means(feats.T, pseudo.group, len(pooled))
                cache["ridge"] = (ridge_fit_predict(pseudo_feats.T, pooled, feats), time.perf_counter() - start)
            pred, extra = cache["ridge"]
            start = time.perf_counter()
        elif method.startswith("sr_spatial_grid_nearest"):
            pred, extra = sr_map("nearest")
            start = time.perf_counter()
        elif method.startswith("sr_spatial_histology_base"):
            base_config = histology_base_config(config)
            pred, extra = sr_map("diffusion", config=base_config)
            std = cache[f"diffusion:config={base_config}:std"]
        elif method.startswith("sr_spatial_histology_learned"):
            pred, extra = sr_map("histology", learned_encoder=True)
            std = cache["histology:learned_encoder=True:std"]
        elif method.startswith("sr_spatial_histology"):
            # The morphology predictor alone, whatever the default decides for the slide's number of spots.
            pred, extra = sr_map("histology", learned_encoder=False)
            std = cache["histology:learned_encoder=False:std"]
            start = time.perf_counter()
        elif method == "nearest_ridge_detail":
            pred = own_plus_ridge_detail(patch_features(data, data.centres), pseudo.group, pooled)
        elif method.startswith("tesla"):
            if "tesla" not in cache:
                cache["tesla"] = (run_peer("tesla", data, pseudo, pooled, genes), time.perf_counter() - start)
            pred, extra = cache["tesla"]
            start = time.perf_counter()
        else:
            pred, extra = sr_map("diffusion")
            std = cache["diffusion:std"]
            start = time.perf_counter()
        if method.endswith("_proj"):
            pred = _project(pred, pseudo.group, pooled)
        # Projected variants share their base method's map; they report its time plus the projection's.
        wall = time.perf_counter() - start + extra
        for row in _scores(pred, truth, data, pseudo, pooled, genes, std=None if method.endswith("_proj") else std):
            row.update(method=method, section=data.name, seed=seed, wall_s=wall)
            results.append(row)
    return pd.DataFrame(results)[
        [
            "section",
            "seed",
            "method",
            "gene",
            "pearson",
            "pearson_within",
            "ssim",
            "rmse",
            "spot_residual",
            "coverage_90",
            "sd_error_spearman",
            "wall_s",
        ]  # fmt: skip
    ]
