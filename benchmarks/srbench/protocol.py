"""Pieces every ground-truth protocol shares (issue 6, 2a-2c): peers, per-gene scores, child processes, figure.

The protocols (``her2st.py``, ``downsampled_visium.py``, ``hd_truth.py``) differ in how they build the coarse
measurement and where they score; the methods that predict from it and the metrics are the same, and live here.
All expression is log-normalised (counts per 10^4, ``log1p``), as :func:`sr_spatial.pp.normalize` writes it.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import numpy as np

__all__ = [
    "PEERS_ENV",
    "data_path",
    "data_root",
    "cubic_at",
    "figure",
    "lognorm",
    "patch_features",
    "peer_python",
    "project",
    "ridge_fit_predict",
    "run_in_child",
    "run_peer",
    "sample_disks",
    "score_per_gene",
]

#: Peers that run in a separate environment: its Python comes from this variable (see ``benchmarks/README.md``).
PEERS_ENV = "SR_SPATIAL_PEERS_PYTHON"
_DEFAULT_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"


def data_root(path: str | os.PathLike | None = None) -> Path:
    """Folder of the real data (argument, else ``$SR_SPATIAL_DATA``, else ``../shared/data`` next to the repo)."""
    if path is not None:
        return Path(path)
    env = os.environ.get("SR_SPATIAL_DATA")
    return Path(env) if env else _DEFAULT_ROOT


def data_path(option: str | os.PathLike | None, env: str, folder: str) -> str | None:
    """A protocol's input: the CLI option, else ``$env``, else ``<data root>/folder`` where it exists, else ``None``."""
    if option:
        return str(option)
    if os.environ.get(env):
        return os.environ[env]
    default = data_root() / folder
    return str(default) if default.is_dir() else None


def lognorm(counts, columns=None, *, target_sum: float = 1e4) -> np.ndarray:
    """:func:`sr_spatial.pp.normalize` of raw ``counts`` (dense or CSR) as a dense float64 array of ``columns``.

    Counts per ``target_sum`` then ``log1p``, computed in float64 (the package's function keeps the input's dtype);
    only the ``columns`` kept (default all) are made dense, so a large CSR table of fine bins stays sparse.
    """
    import warnings

    from anndata import AnnData
    from scipy import sparse

    import sr_spatial as sr

    with warnings.catch_warnings():
        # Items without counts (empty bins, spots off the tissue) stay 0, as wanted; scanpy warns about them.
        warnings.filterwarnings("ignore", "Some cells have zero counts", UserWarning)
        normalised = sr.pp.normalize(AnnData(counts.astype(np.float64)), target_sum=target_sum, copy=True).X
    if columns is not None:
        normalised = normalised[:, columns]
    return normalised.toarray() if sparse.issparse(normalised) else np.asarray(normalised)


def project(pred: np.ndarray, group: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """Rescale each group's items (linear space) so they average to the pooled value; flat where all zero.

    Items with ``group < 0`` (measured by no pooled spot) are left as they are.

    The rule of :func:`sr_spatial.tl.project_to_spots`, for scattered items instead of bins on a grid. Not that
    function itself (``tests/benchmarks`` checks they agree): it returns float32 and clips items outside every spot
    at 0, which would change the benchmarks' numbers in their last digits.
    """
    from sr_spatial.pp import group_means

    linear = np.expm1(np.clip(pred.astype(np.float64), 0, None))
    member = group >= 0
    g = np.where(member, group, 0)
    means, _ = group_means(linear[member].T, group[member], len(pooled))
    target = np.expm1(pooled.astype(np.float64)).T
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(means[:, g] > 0, linear.T * target[:, g] / means[:, g], target[:, g])
    return np.where(member[:, None], np.log1p(scaled.T), pred)


def cubic_at(points_from: np.ndarray, values: np.ndarray, points_to: np.ndarray) -> np.ndarray:
    """Clough-Tocher interpolation clipped at 0, nearest where undefined: the package's own ``smooth`` rendering.

    No public function interpolates at arbitrary points, so this reuses the package's one implementation
    (:func:`sr_spatial.pp.interpolate_at`) rather than a copy.
    """
    from sr_spatial.pp import interpolate_at as smooth_at

    return smooth_at(points_from, values, points_to)


def patch_features(image: np.ndarray, centres: np.ndarray, *, radius_px: float, downscale: float) -> np.ndarray:
    """Colour and texture features of the H&E inside each disk (what "predict from H&E" baselines use).

    ``image`` is RGB ``(3, y, x)`` uint8, ``downscale`` times coarser than the coordinates of ``centres`` and
    ``radius_px``. Per disk: mean and standard deviation of RGB and of the haematoxylin/eosin/DAB
    deconvolution, the fraction of strongly haematoxylin-stained (nuclear) pixels, the mean gradient magnitude,
    and the mean of two difference-of-Gaussians bands of the haematoxylin channel (nuclear size texture).
    """
    from scipy import ndimage
    from skimage.color import rgb2hed

    rgb = image.transpose(1, 2, 0).astype(np.float32) / 255.0
    hed = rgb2hed(rgb)
    grey = rgb.mean(axis=2)
    grad = np.hypot(ndimage.sobel(grey, axis=0), ndimage.sobel(grey, axis=1))
    h = hed[..., 0]
    dog1 = ndimage.gaussian_filter(h, 1.0) - ndimage.gaussian_filter(h, 2.0)
    dog2 = ndimage.gaussian_filter(h, 2.0) - ndimage.gaussian_filter(h, 4.0)
    nuclear = h > np.quantile(h, 0.8)
    planes = [*np.moveaxis(rgb, 2, 0), *np.moveaxis(hed, 2, 0)]
    r = max(radius_px / downscale, 0.5)
    ry, rx = np.mgrid[-int(np.ceil(r)) : int(np.ceil(r)) + 1, -int(np.ceil(r)) : int(np.ceil(r)) + 1]
    disk = ry**2 + rx**2 <= r**2
    dy, dx = ry[disk], rx[disk]
    feats = []
    for cx, cy in centres / downscale:
        yy = np.clip(np.round(cy).astype(int) + dy, 0, grey.shape[0] - 1)
        xx = np.clip(np.round(cx).astype(int) + dx, 0, grey.shape[1] - 1)
        row = [p[yy, xx].mean() for p in planes] + [p[yy, xx].std() for p in planes]
        row += [nuclear[yy, xx].mean(), grad[yy, xx].mean(), np.abs(dog1[yy, xx]).mean(), np.abs(dog2[yy, xx]).mean()]
        feats.append(row)
    return np.asarray(feats, dtype=np.float64)


def ridge_fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, *, clip: bool = True) -> np.ndarray:
    """Ridge regression (standardised features, intercept) with the penalty picked by leave-one-out error.

    Closed form through the SVD; one penalty shared by all genes, chosen from a log grid. The prediction is clipped
    at 0 (log-normalised expression) unless ``clip=False`` (targets that may be negative, such as deviations).
    """
    mu, sd = x_train.mean(axis=0), x_train.std(axis=0) + 1e-9
    xt, xs = (x_train - mu) / sd, (x_test - mu) / sd
    ym = y_train.mean(axis=0)
    yc = y_train - ym
    u, s, vt = np.linalg.svd(xt, full_matrices=False)
    uty = u.T @ yc
    best, best_err = None, np.inf
    for alpha in np.logspace(-2, 4, 25) * len(xt) / 100:
        d = s / (s**2 + alpha)
        fitted = u @ ((s * d)[:, None] * uty)
        hat = (u**2) @ (s * d)
        # Leave-one-out residuals of a linear smoother; the intercept's leverage is 1/n.
        loo = (yc - fitted) / (1.0 - hat - 1.0 / len(xt))[:, None]
        err = float(np.mean(loo**2))
        if err < best_err:
            best, best_err = alpha, err
    d = s / (s**2 + best)
    coef = vt.T @ (d[:, None] * uty)
    pred = xs @ coef + ym
    return np.clip(pred, 0.0, None) if clip else pred


def own_plus_ridge_detail(item_features: np.ndarray, group: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """The peer "own coarse spot + ridge": each item takes its coarse spot's value plus the deviation of a ridge
    prediction (fitted on the coarse spots, whose features are their items' mean) from its coarse spot's mean.

    Items outside every coarse spot (``group < 0``) take the ridge prediction itself.
    """
    from sr_spatial.pp import group_means

    member = group >= 0
    g = np.where(member, group, 0)
    coarse, _ = group_means(item_features[member].T, group[member], len(pooled))
    pred = ridge_fit_predict(coarse.T, pooled, item_features)
    pred_means, _ = group_means(pred[member].T, group[member], len(pooled))
    detail = pooled[g] + pred - pred_means.T[g]
    return np.where(member[:, None], np.clip(detail, 0.0, None), pred)


def sample_disks(sdata, key: str, genes: list[str], centres: np.ndarray, radius: float, cs: str) -> np.ndarray:
    """Mean (linear expression) of the super-resolved map ``key`` over disks, as a spot of that size measures it.

    ``centres`` and ``radius`` are in coordinate system ``cs``. Each disk is sampled on a 9 x 9 raster of points
    (those inside the disk), each taking the value of the bin that holds it, so a disk straddling bins weighs
    each by the area it covers. ``radius=0`` reads the bin under each centre.
    """
    from scipy import ndimage
    from spatialdata.transformations import get_transformation

    from sr_spatial.tl import full_resolution as single_scale

    image = sdata.images[key]
    tf = get_transformation(image, to_coordinate_system=cs)
    affine = np.asarray(tf.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")))
    grid = np.linspace(-1.0, 1.0, 9)
    ox, oy = np.meshgrid(grid, grid)
    inside = ox**2 + oy**2 <= 1.0 + 1e-9
    offsets = np.column_stack([ox[inside], oy[inside]]) * radius if radius > 0 else np.zeros((1, 2))
    points = (centres[:, None, :] + offsets[None]).reshape(-1, 2)
    uv = np.column_stack([points, np.ones(len(points))]) @ np.linalg.inv(affine).T
    data = np.asarray(single_scale(image).sel(c=genes).values, dtype=np.float64)
    # The map is NaN outside the tissue; a disk reaching past the tissue reads 0 there, as it did when the map was 0.
    linear = np.expm1(np.clip(np.nan_to_num(data), 0, None))
    coords = np.stack([uv[:, 1] - 0.5, uv[:, 0] - 0.5])
    out = np.stack([ndimage.map_coordinates(g, coords, order=0, mode="nearest") for g in linear], axis=1)
    return np.log1p(out.reshape(len(centres), len(offsets), len(genes)).mean(axis=1))


def peer_python() -> str | None:
    """The peers environment's Python (``$SR_SPATIAL_PEERS_PYTHON``), or ``None`` when it is not set up."""
    exe = os.environ.get(PEERS_ENV)
    return exe if exe and Path(exe).exists() else None


def run_peer(
    method: str,
    *,
    image: np.ndarray,
    downscale: float,
    known_xy: np.ndarray,
    known_values: np.ndarray,
    query_xy: np.ndarray,
    radius_px: float,
    genes,
) -> np.ndarray:
    """Predict ``query_xy`` with a peer method in the peers environment (subprocess, files in a temp dir).

    ``image`` is RGB ``(3, y, x)``, ``downscale`` times coarser than the coordinates; ``radius_px`` is the
    radius over which the peer averages its output around each query point.
    """
    import subprocess
    import tempfile

    exe = peer_python()
    if exe is None:
        msg = f"Peer {method!r} needs its own environment: set ${PEERS_ENV} to its Python (see benchmarks/README.md)."
        raise RuntimeError(msg)
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(
            source,
            image=np.ascontiguousarray(image.transpose(1, 2, 0)),
            known_xy=known_xy / downscale,
            known_values=known_values,
            query_xy=query_xy / downscale,
            radius=radius_px / downscale,
            genes=np.asarray(genes, dtype=str),
        )
        worker = Path(__file__).resolve().parent / "peer_worker.py"
        done = subprocess.run([exe, str(worker), method, str(source), str(target)], capture_output=True, text=True)
        if done.returncode != 0:
            msg = f"Peer {method!r} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
            raise RuntimeError(msg)
        return np.load(target)["prediction"]


def score_per_gene(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    lattice: np.ndarray,
    group: np.ndarray,
    pooled: np.ndarray,
    genes,
    measured: np.ndarray | None = None,
    std: np.ndarray | None = None,
) -> list[dict]:
    """Per-gene metrics of ``pred`` against ``truth`` (items x genes, log-normalised).

    ``lattice`` holds each item's integer ``(column, row)`` on the image SSIM is computed on; ``group`` the
    pooled spot each item falls to (``-1``: none). ``pearson_within`` correlates deviations from the group
    mean over groups with >= 2 items (the detail the pooled measurement does not fix). ``spot_residual`` is the
    relative disagreement (linear units) of each pooled spot with the mean of the items it measured
    (``measured``: boolean mask, default every item with a group).
    """
    from sr_spatial.pp import group_means
    from sr_spatial.tl import masked_ssim

    x, y = lattice[:, 0] - lattice[:, 0].min(), lattice[:, 1] - lattice[:, 1].min()
    mask = np.zeros((y.max() + 1, x.max() + 1), dtype=bool)
    mask[y, x] = True
    member = group >= 0
    counted = member if measured is None else (measured & member)
    n = len(pooled)
    means, _ = group_means(np.expm1(pred[counted].astype(np.float64)).T, group[counted], n)
    hit = np.bincount(group[counted], minlength=n) > 0
    target = np.expm1(pooled.astype(np.float64)).T
    size = np.bincount(group[member], minlength=n)
    multi = member & (size[np.where(member, group, 0)] >= 2)
    pm, _ = group_means(pred[member].T.astype(np.float64), group[member], n)
    tm, _ = group_means(truth[member].T.astype(np.float64), group[member], n)
    g_multi = group[multi]
    rows = []
    for g, gene in enumerate(genes):
        p, t = pred[:, g].astype(np.float64), truth[:, g].astype(np.float64)
        r = np.corrcoef(p, t)[0, 1] if p.std() > 0 and t.std() > 0 else np.nan
        dp, dt = p[multi] - pm[g, g_multi], t[multi] - tm[g, g_multi]
        rw = np.corrcoef(dp, dt)[0, 1] if dp.std() > 1e-9 and dt.std() > 0 else np.nan
        pimg, timg = np.zeros(mask.shape), np.zeros(mask.shape)
        pimg[y, x], timg[y, x] = p, t
        residual = np.abs(means[g, hit] - target[g, hit]).sum() / max(np.abs(target[g, hit]).sum(), 1e-12)
        rows.append(
            {
                "gene": gene,
                "pearson": float(r),
                "pearson_within": float(rw),
                "ssim": masked_ssim(pimg, timg, mask),
                "rmse": float(np.sqrt(np.mean((p - t) ** 2))),
                "spot_residual": float(residual),
                **_uncertainty_scores(p, t, None if std is None else std[:, g]),
            }
        )
    return rows


def _uncertainty_scores(pred: np.ndarray, truth: np.ndarray, std: np.ndarray | None) -> dict:
    """Coverage of the central 90 % normal interval and Spearman(sd, |error|) of one gene (NaN without a spread)."""
    from scipy import stats

    if std is None or not np.any(std > 0):
        return {"coverage_90": np.nan, "sd_error_spearman": np.nan}
    error = np.abs(truth - pred)
    rho = stats.spearmanr(std, error).statistic if np.ptp(std) > 0 and np.ptp(error) > 0 else np.nan
    return {"coverage_90": float(np.mean(error <= 1.645 * std)), "sd_error_spearman": float(rho)}


def _child(fn, kwargs, queue) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    frame = fn(**kwargs)
    # Peers run in a subprocess of their own: count the larger of this process and its children.
    peak_kib = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    frame["peak_mib"] = peak_kib / 1024
    queue.put(frame.to_json(orient="records"))


def run_in_child(fn, **kwargs):
    """``fn(**kwargs)`` (a DataFrame) in a fresh spawned process, with its peak memory as column ``peak_mib``.

    Peak memory is the child's max RSS (that of the peer subprocess where larger), reading the data included;
    a fresh process per call keeps one method's memory and imports out of the next one's numbers.
    """
    import io
    import multiprocessing as mp

    import pandas as pd

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, kwargs, queue))
    proc.start()
    frame = pd.read_json(io.StringIO(queue.get()), orient="records")
    proc.join()
    return frame


def figure(per_gene, path: Path, *, by: str, labels: dict, titles: dict) -> None:
    """Box plots of per-gene ``pearson`` and ``pearson_within``, one row of panels per value of column ``by``.

    ``titles`` maps each metric to a title template with ``{name}`` for the panel's value of ``by``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(per_gene[by]))
    order = {m: i for i, m in enumerate(labels)}
    methods = sorted(dict.fromkeys(per_gene["method"]), key=lambda m: order.get(m, len(order)))
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 0.32 * len(methods) * len(names) + 1.5), squeeze=False)
    for s, name in enumerate(names):
        sub = per_gene[per_gene[by] == name]
        for k, metric in enumerate(("pearson", "pearson_within")):
            ax = axes[s, k]
            # Per gene, averaged over seeds; methods without a value (nearest has no within-spot detail) stay empty.
            data = [sub[sub["method"] == m].groupby("gene")[metric].mean().dropna().to_numpy() for m in methods]
            keep = [i for i, d in enumerate(data) if len(d)]
            if keep:
                ax.boxplot([data[i] for i in keep], positions=[i + 1 for i in keep], orientation="horizontal")
            ax.set_yticks(range(1, len(methods) + 1), [labels.get(m, m) for m in methods] if k == 0 else [])
            ax.set_ylim(0.5, len(methods) + 0.5)
            ax.axvline(0, color="grey", lw=0.5)
            ax.set_xlabel(f"per-gene {metric.replace('_', ' ')}", fontsize=8)
            ax.set_title(titles[metric].format(name=name), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def spots_sdata(
    *,
    image: np.ndarray,
    downscale: float,
    cs: str,
    counts: np.ndarray,
    genes,
    centres: np.ndarray,
    radius_px,
    spot_ids,
    array: np.ndarray,
):
    """A SpatialData laid out like :func:`spatialdata_io.visium` output: what :func:`sr_spatial.tl.superresolve` reads.

    Coordinate system ``cs`` is the full-resolution pixel space of the spots. Elements: image ``"he"`` (RGB
    ``(3, y, x)``, ``downscale`` times coarser, multiscale, with a ``Scale`` to ``cs``), shapes ``"spots"``
    (circles of ``radius_px``) and table ``"table"`` (raw ``counts``; ``obs`` columns ``spot_id``, ``region``,
    ``in_tissue``, ``array_row``, ``array_col`` from ``array`` = ``(col, row)``; ``obsm["spatial"]``).
    """
    import pandas as pd
    from anndata import AnnData
    from scipy import sparse
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    index = pd.Index(np.asarray(spot_ids, dtype=object))
    radius = np.broadcast_to(np.asarray(radius_px, float), len(index))
    s = float(downscale)
    he = Image2DModel.parse(
        image,
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        scale_factors=[2, 2],
        transformations={cs: Scale([s, s], axes=("x", "y"))},
    )
    shapes = ShapesModel.parse(
        np.asarray(centres, float), geometry=0, radius=radius.copy(), index=index, transformations={cs: Identity()}
    )
    obs = pd.DataFrame(
        {
            "spot_id": np.asarray(index, dtype=object),
            "region": pd.Categorical(["spots"] * len(index)),
            "in_tissue": np.ones(len(index), dtype=np.int64),
            "array_row": np.asarray(array[:, 1], dtype=np.int64),
            "array_col": np.asarray(array[:, 0], dtype=np.int64),
        },
        index=index,
    )
    adata = AnnData(
        X=sparse.csr_matrix(counts, dtype=np.float32),
        obs=obs,
        var=pd.DataFrame(index=pd.Index(np.asarray(genes).astype(str))),
        obsm={"spatial": np.asarray(centres, float)},
    )
    table = TableModel.parse(adata, region="spots", region_key="region", instance_key="spot_id")
    return SpatialData(images={"he": he}, shapes={"spots": shapes}, tables={"table": table})


#: Every method :func:`run_methods` knows. ``*_proj`` variants rescale each coarse spot's items so that their mean
#: (linear normalised expression) equals the pooled measurement, which ``nearest`` satisfies by construction.
#: ``sr_spatial_grid_nearest`` is the package's own ``method="nearest"`` read like sr_spatial's map, to show the
#: cost of the output grid's placement.
METHODS = (
    "nearest",
    "cubic",
    "cubic_proj",
    "ridge",
    "ridge_proj",
    "sr_spatial",
    "sr_spatial_proj",
    "sr_spatial_grid_nearest",
    "sr_spatial_histology",
    "sr_spatial_histology_learned",
    "sr_spatial_histology_base",
    "nearest_ridge_detail",
    "tesla",
    "tesla_proj",
)
LABELS = {
    "nearest": "nearest (own coarse spot)",
    "cubic": "cubic (Clough-Tocher)",
    "cubic_proj": "cubic + projection",
    "ridge": "ridge on H&E patch features",
    "ridge_proj": "ridge on H&E + projection",
    "sr_spatial": "sr_spatial",
    "sr_spatial_proj": "sr_spatial + projection",
    "sr_spatial_grid_nearest": "sr_spatial grid, method='nearest'",
    "sr_spatial_histology": "sr_spatial method='histology' (predictor alone)",
    "sr_spatial_histology_learned": "sr_spatial method='histology', learned_encoder=True",
    "sr_spatial_histology_base": "sr_spatial diffusion around the histology predictor (histology_base=True)",
    "nearest_ridge_detail": "own coarse spot + ridge detail (peer)",
    "tesla": "TESLA (teslaforst 1.2.2)",
    "tesla_proj": "TESLA + projection",
}


def histology_base_config(config):
    """``config`` (a preset name, a ModelConfig or a dict) with the diffusion generating around the predictor."""
    from dataclasses import replace

    from sr_spatial.model import resolve_config

    return replace(resolve_config(config), histology_base=True)


def run_methods(
    task: dict,
    *,
    methods,
    config="base",
    seed: int = 0,
    superresolve_kwargs: dict | None = None,
    show_progress_bar: bool = False,
):
    """Predict the truth's items from the coarse measurement with each method and score them per gene.

    ``task`` keys: ``sdata`` (callable returning the coarse slide, :func:`spots_sdata`), ``image``,
    ``downscale``, ``cs``, ``genes``, ``scale`` (for ``sr_spatial``), ``known_xy`` / ``known_values`` /
    ``known_radius`` (coarse spots, log-normalised, in ``cs`` pixels), ``query_xy`` / ``query_radius``
    (where the truth is), ``read_radius`` (disk over which the super-resolved map is averaged at each query,
    :func:`sample_disks`), ``truth``, ``lattice``, ``group`` and optionally ``measured`` (see
    :func:`score_per_gene`).

    Returns
    -------
    One row per method and gene (:func:`score_per_gene` columns) with ``method``, ``seed`` and ``wall_s``
    (the method's time; projected variants add the projection to their base method's time).
    """
    import time

    import pandas as pd

    import sr_spatial as sr

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        msg = f"Unknown methods {unknown}; choose from {list(METHODS)}."
        raise ValueError(msg)
    genes, group, known_values = task["genes"], task["group"], task["known_values"]
    cache: dict = {}

    def sr_map(method, **extra_kwargs):
        # Keyed apart from the baselines: the package's method "nearest" is not the "nearest" family.
        key = f"superresolve:{method}" + "".join(f":{k}={v}" for k, v in extra_kwargs.items())
        model_config = extra_kwargs.pop("config", config)
        if key not in cache:
            sdata = task["sdata"]()
            start = time.perf_counter()
            sr.tl.superresolve(
                sdata,
                "he",
                genes=genes,
                scale=task["scale"],
                method=method,
                config=model_config,
                seed=seed,
                key_added="sr",
                show_progress_bar=show_progress_bar,
                **(superresolve_kwargs or {}),
                **extra_kwargs,
            )
            pred = sample_disks(sdata, "sr", genes, task["query_xy"], task["read_radius"], task["cs"])
            spread = sample_disks(sdata, "sr_std", genes, task["query_xy"], task["read_radius"], task["cs"])
            cache[key] = (pred, time.perf_counter() - start)
            cache[f"{key}:std"] = spread
        return cache[key]

    def compute(family):
        if family == "nearest":
            from scipy.spatial import cKDTree

            return known_values[cKDTree(task["known_xy"]).query(task["query_xy"])[1]]
        if family == "cubic":
            return cubic_at(task["known_xy"], known_values, task["query_xy"])
        if family == "ridge":
            kw = {"image": task["image"], "downscale": task["downscale"]}
            known = patch_features(centres=task["known_xy"], radius_px=task["known_radius"], **kw)
            query = patch_features(centres=task["query_xy"], radius_px=task["query_radius"], **kw)
            return ridge_fit_predict(known, known_values, query)
        if family == "nearest_ridge_detail":
            kw = {"image": task["image"], "downscale": task["downscale"]}
            query = patch_features(centres=task["query_xy"], radius_px=task["query_radius"], **kw)
            return own_plus_ridge_detail(query, group, known_values)
        return run_peer(
            family,
            image=task["image"],
            downscale=task["downscale"],
            known_xy=task["known_xy"],
            known_values=known_values,
            query_xy=task["query_xy"],
            radius_px=task["query_radius"],
            genes=genes,
        )

    rows = []
    for method in methods:
        family = method.removesuffix("_proj")
        std = None
        if family == "sr_spatial":
            pred, extra = sr_map("diffusion")
            std = cache["superresolve:diffusion:std"]
        elif family == "sr_spatial_grid_nearest":
            pred, extra = sr_map("nearest")
        elif family == "sr_spatial_histology":
            # The morphology predictor alone, whatever the default decides for the slide's number of spots.
            pred, extra = sr_map("histology", learned_encoder=False)
            std = cache["superresolve:histology:learned_encoder=False:std"]
        elif family == "sr_spatial_histology_learned":
            pred, extra = sr_map("histology", learned_encoder=True)
            std = cache["superresolve:histology:learned_encoder=True:std"]
        elif family == "sr_spatial_histology_base":
            base_config = histology_base_config(config)
            pred, extra = sr_map("diffusion", config=base_config)
            std = cache[f"superresolve:diffusion:config={base_config}:std"]
        else:
            if family not in cache:
                start = time.perf_counter()
                cache[family] = (compute(family), time.perf_counter() - start)
            pred, extra = cache[family]
        start = time.perf_counter()
        if method.endswith("_proj"):
            pred = project(pred, group, known_values)
        wall = time.perf_counter() - start + extra
        scored = score_per_gene(
            pred,
            task["truth"],
            lattice=task["lattice"],
            group=group,
            pooled=known_values,
            genes=genes,
            measured=task.get("measured"),
            std=std if not method.endswith("_proj") else None,
        )
        rows += [{**row, "method": method, "seed": seed, "wall_s": wall} for row in scored]
    return pd.DataFrame(rows)


#: Per-gene scores, averaged over genes and then over seeds on every page.
SCORES = ("pearson", "pearson_within", "ssim", "rmse", "spot_residual", "coverage_90", "sd_error_spearman")
#: Scores of a method's spread: absent for methods without one, and in results written before they existed.
UNCERTAINTY_SCORES = ("coverage_90", "sd_error_spearman")


def with_uncertainty_scores(frame):
    """``frame`` with :data:`UNCERTAINTY_SCORES` columns, NaN where it has none."""
    return frame.assign(**{c: frame.get(c, np.nan) for c in UNCERTAINTY_SCORES})


def summarise(per_gene, *, by: str):
    """Mean over genes per run, then over seeds; ``pearson_sd`` is the spread of the gene mean across seeds."""
    order = {m: i for i, m in enumerate(LABELS)}
    means = {c: (c, "mean") for c in SCORES}
    per_run = (
        with_uncertainty_scores(per_gene)
        .groupby([by, "method", "seed"])
        .agg(**means, wall_s=("wall_s", "first"), peak_mib=("peak_mib", "first"))
    )
    summary = per_run.groupby([by, "method"]).agg(
        pearson=means["pearson"],
        pearson_sd=("pearson", "std"),
        **{c: means[c] for c in SCORES[1:]},
        wall_s=("wall_s", "mean"),
        peak_mib=("peak_mib", "max"),
    )
    return summary.sort_index(key=lambda idx: idx.map(lambda v: order.get(v, v)))


def machine_line() -> str:
    """The machine, torch threads and the load average now (timings on a shared machine are inflated)."""
    from srbench.report import machine

    load = os.getloadavg()
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    return (
        f"{machine()}; OMP_NUM_THREADS={threads}; load average at the end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} "
        "(the machine is shared with other jobs, so times are inflated)"
    )


def runnable(methods) -> tuple[list[str], dict]:
    """``methods`` without the peers whose environment is missing, and why each left out was left out."""
    import sys

    skipped = {}
    if peer_python() is None:
        for method in [m for m in methods if m.startswith("tesla")]:
            skipped[method] = f"${PEERS_ENV} not set to the peers environment's Python"
        if skipped:
            print(f"Skipping {sorted(skipped)}: {next(iter(skipped.values()))}.", file=sys.stderr)
    return [m for m in methods if m not in skipped], skipped


def run_families(fn, *, methods, seeds, **kwargs):
    """``fn(methods=..., seed=..., **kwargs)`` per seed and method family, each in a fresh child process.

    A family is a method and its ``_proj`` variant (they share one computation). Only sr_spatial depends on the
    seed; the other methods run once, under the first seed.
    """
    import json
    import sys

    import pandas as pd

    families: dict = {}
    for method in methods:
        families.setdefault(method.removesuffix("_proj"), []).append(method)
    frames = []
    for seed in seeds:
        for family, members in families.items():
            if seed != seeds[0] and family != "sr_spatial":
                continue
            frame = run_in_child(fn, methods=members, seed=seed, **kwargs)
            frames.append(frame)
            summary = frame.groupby("method")[["pearson", "wall_s"]].mean().round(3).to_dict()
            print(json.dumps(summary), file=sys.stderr)
    return pd.concat(frames, ignore_index=True)


def write_page(
    per_gene, meta: dict, out: Path, *, title: str, intro: str, labels: dict, figure_titles: dict, genes_from: str
) -> str:
    """Write the results page ``out`` (table, metadata, figure, hand-written ``*_notes.md``), the CSV and figure.

    ``per_gene`` has one row per method, gene and seed, and a ``data`` column naming the slide.
    """
    import datetime
    import json

    from srbench.report import markdown_table

    csv, png = out.with_suffix(".csv"), out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    per_gene.to_csv(csv, index=False, float_format="%.5g")
    figure(per_gene, png, by="data", labels=labels, titles=figure_titles)
    summary = summarise(per_gene, by="data").droplevel(0)
    summary.index = [labels.get(m, m) for m in summary.index]
    meta = {"machine": machine_line(), **meta}  # a re-rendered page keeps the machine it was measured on
    meta.setdefault("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    notes = out.with_name(out.stem + "_notes.md")
    text = (
        f"# {title}\n\n{intro}\n\n"
        f"Command: `{meta['command']}`  \nData: {meta['data']}  \n"
        f"Seeds: {meta['seeds']} (sr_spatial model; the other methods are deterministic and run once)  \n"
        f"Model config: `{meta['config']}`; genes: the {per_gene['gene'].nunique()} highest by mean "
        f"log-normalised expression of {genes_from}  \nMachine: {meta['machine']}  \nDate: {meta['date']}\n\n"
        f"{markdown_table(summary, index_name='method')}\n\n"
        + "".join(f"Not run: {m} ({why}).\n\n" for m, why in meta.get("skipped", {}).items())
        + f"Per-gene scores: `{csv.name}`.\n\n![Per-gene Pearson r by method, {per_gene['data'].iloc[0]}]({png.name})\n"
    )
    if notes.exists():
        text += "\n" + notes.read_text()
    out.write_text(text)
    out.with_suffix(".run.json").write_text(json.dumps(meta, indent=1) + "\n")
    return text


def add_common_arguments(parser, *, out: Path) -> None:
    """The options every protocol script takes: seeds, model config, methods, output page, re-rendering."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--config", default="base")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the page and figure from the saved CSV, running nothing"
    )


def render_only(out: Path, page: dict) -> str:
    """Rewrite a results page from its saved per-gene CSV and run metadata (``.run.json``)."""
    import json

    import pandas as pd

    meta = json.loads(out.with_suffix(".run.json").read_text())
    return write_page(pd.read_csv(out.with_suffix(".csv")), meta, out, **page)


def run_protocol(args, *, script: str, fn, page: dict, describe, **kwargs) -> str:
    """A protocol script's main: re-render the page (``--render-only``), or run every method family and write it.

    ``fn(methods=, seed=, config=, **kwargs)`` scores one family (:func:`run_families`); ``describe(per_gene)``
    returns the page's data line, its model-config line and the bookkeeping columns to drop from the CSV.
    """
    import sys

    if args.render_only:
        return render_only(args.out, page)
    methods, skipped = runnable(args.methods)
    per_gene = run_families(fn, methods=methods, seeds=args.seeds, config=args.config, **kwargs)
    data, config, extra = describe(per_gene)
    meta = {
        "command": (f"python benchmarks/{script} " + " ".join(sys.argv[1:])).strip(),
        "data": data,
        "seeds": args.seeds,
        "config": config,
        "skipped": skipped,
    }
    return write_page(per_gene.drop(columns=extra), meta, args.out, **page)
