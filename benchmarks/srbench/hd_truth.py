"""Protocol 2b, high-resolution truth: aggregate fine bins into Visium-like spots, super-resolve, score at the bins.

Usage::

    python benchmarks/hd_truth.py [--visium-hd PATH | --xenium PATH] [--scale 4] [--seeds 0] [--config base]
        [--methods nearest cubic ...] [--n-genes 50] [--out benchmarks/results/hd_truth.md]

The true bins come from, in this order: a Visium HD output folder (``--visium-hd``, else
``$SR_SPATIAL_VISIUM_HD``, else ``$SR_SPATIAL_DATA/visium_hd`` where it exists, default data root
``../shared/data``; read with :func:`spatialdata_io.visium_hd`, table ``square_008um``), a Xenium output folder
with a registered H&E (``--xenium``, else ``$SR_SPATIAL_XENIUM``, else ``$SR_SPATIAL_DATA/xenium``;
:func:`spatialdata_io.xenium`, its
transcripts counted in ``--bin-um`` squares by :func:`sr_spatial.pp.bin_transcripts`), else a synthetic slide:
Poisson counts in 5 µm squares drawn from the demo's hidden truth (:func:`sr_spatial.datasets.demo`,
0.5 UMIs/µm², as ``benchmarks/reference_training.py`` draws them).

Aggregation: Visium-like spots (55 µm disks on a 100 µm hexagonal lattice, :func:`sr_spatial.pp.
visium_lattice`) each count the bins whose centre lies in their disk (raw counts summed); spots holding less
than half a disk's worth of bins (tissue edge) are dropped. The spot slide is super-resolved ``--scale``-fold
(default 4, 25 µm bins, for the demo-sized synthetic slide, whose ~300 spots are too few for scale-transfer
training at 6x; 6, i.e. 16.7 µm bins, for real slides) and every method is scored on the output grid of
:func:`sr_spatial.tl.superresolve`, against the true bins' counts summed over each output bin (output bins at
least half covered by true bins, in the tissue).

Each (seed, method family) runs in a fresh child process (wall time and max RSS its own). Prints a Markdown
table and writes it, with the command, data, seeds and machine, to ``--out`` (per-gene ``.csv``, figure ``.png``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srbench import protocol as _protocol
from srbench.protocol import LABELS

VISIUM_HD_ENV = "SR_SPATIAL_VISIUM_HD"
XENIUM_ENV = "SR_SPATIAL_XENIUM"
SPOT_PITCH_UM = 100.0
SPOT_DIAMETER_UM = 55.0


@dataclass(frozen=True)
class BinnedSlide:
    """Fine bins: raw ``counts`` (CSR, bins x genes; a Visium HD slide has ~10^5-10^6 bins), positions in pixels of
    ``image`` (RGB ``(3, y, x)`` uint8)."""

    name: str
    counts: np.ndarray
    genes: np.ndarray
    centres: np.ndarray
    bin_um: float
    um_per_px: float
    image: np.ndarray


def read_bins(sdata, *, table_key: str, image_key: str, bin_um: float, name: str) -> BinnedSlide:
    """Bins of ``sdata.tables[table_key]`` (squares annotated by the table) placed in ``image_key``'s pixels.

    Positions go through both elements' transformations to a shared coordinate system and back into the
    image's pixels, so an H&E registered with an affine (Xenium) works as well as a scaled one (Visium HD).
    """
    from scipy import sparse
    from spatialdata.transformations import get_transformation

    table = sdata.tables[table_key]
    attrs = table.uns["spatialdata_attrs"]
    region = attrs["region"] if isinstance(attrs["region"], str) else attrs["region"][0]
    shapes, image = sdata.shapes[region], sdata.images[image_key]
    image_cs = get_transformation(image, get_all=True)
    cs = next(c for c in get_transformation(shapes, get_all=True) if c in image_cs)

    def affine(element):
        tf = get_transformation(element, to_coordinate_system=cs)
        return np.asarray(tf.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)

    to_image = np.linalg.inv(affine(image)) @ affine(shapes)
    geometry = shapes.loc[table.obs[attrs["instance_key"]].to_numpy()].geometry
    xy = np.column_stack([geometry.centroid.x, geometry.centroid.y, np.ones(len(geometry))]) @ to_image.T
    side_px = float(np.sqrt(np.median(geometry.area)) * np.sqrt(abs(np.linalg.det(to_image[:2, :2]))))
    counts = sparse.csr_matrix(table.X, dtype=np.float32)
    keep = np.asarray(counts.sum(axis=1)).ravel() > 0
    level, factor = _pyramid_level(image, bin_px=side_px)
    rgb = np.asarray(level.values)[:3]
    return BinnedSlide(
        name=name,
        counts=counts[keep],
        genes=table.var_names.astype(str).to_numpy(),
        centres=xy[keep, :2] / factor,
        bin_um=bin_um,
        um_per_px=bin_um / side_px * factor,
        image=rgb if rgb.dtype == np.uint8 else np.clip(rgb, 0, 255).astype(np.uint8),
    )


def _pyramid_level(image, *, bin_px: float, min_bin_px: float = 4.0):
    """The coarsest level of a multiscale image on which a bin is still ``min_bin_px`` pixels wide, and its factor.

    A registered full-resolution H&E (Xenium: ~0.2 µm pixels, tens of thousands wide) would not fit in memory;
    a few pixels per 8 µm bin is finer than the model's histology pixels.
    """
    from sr_spatial.tl import full_resolution as single_scale

    if not hasattr(image, "children") or not image.children:
        return single_scale(image), 1.0
    levels = [image[name]["image"] for name in sorted(image.children, key=lambda k: int(k.removeprefix("scale")))]
    width = levels[0].sizes["x"]
    best, factor = levels[0], 1.0
    for level in levels[1:]:
        f = width / level.sizes["x"]
        if bin_px / f >= min_bin_px:
            best, factor = level, f
    return best, factor


def load_bins(*, visium_hd=None, xenium=None, bin_um: float = 8.0, seed: int = 0) -> BinnedSlide:
    """The true bins: Visium HD, else binned Xenium, else the synthetic slide (see the module docstring)."""
    visium_hd = _protocol.data_path(visium_hd, VISIUM_HD_ENV, "visium_hd")
    xenium = None if visium_hd else _protocol.data_path(xenium, XENIUM_ENV, "xenium")
    if visium_hd:
        import spatialdata_io

        sdata = spatialdata_io.visium_hd(visium_hd, bin_size=[8], load_segmentations_only=False)
        hires = next(k for k in sdata.images if k.endswith("_hires_image"))
        return read_bins(sdata, table_key="square_008um", image_key=hires, bin_um=8.0, name=Path(visium_hd).name)
    if xenium:
        import spatialdata_io

        import sr_spatial as sr

        sdata = spatialdata_io.xenium(xenium)
        if "he_image" not in sdata.images:
            msg = f"Xenium folder {xenium!r} has no registered H&E ('he_image'); put the H&E and its alignment in it."
            raise FileNotFoundError(msg)
        sr.pp.bin_transcripts(sdata, bin_size=bin_um, key_added="bins")
        return read_bins(sdata, table_key="bins_table", image_key="he_image", bin_um=bin_um, name=Path(xenium).name)
    return synthetic_bins(seed=seed)


def synthetic_bins(*, seed: int = 0) -> BinnedSlide:
    """Poisson counts (0.5 UMIs/µm²) in 5 µm squares drawn from the hidden truth of the demo slide ``seed``."""
    import sr_spatial as sr
    from srbench.reference import reference_slide

    demo = sr.datasets.demo(seed=seed)
    bins = reference_slide(demo, bin_um=5.0, split_px=np.inf, umis_per_um2=0.5, seed=seed)
    bins.images["demo_hires_image"] = demo.images["demo_hires_image"]
    name = f"synthetic (demo seed {seed})"
    return read_bins(bins, table_key="t", image_key="demo_hires_image", bin_um=5.0, name=name)


@dataclass(frozen=True)
class VisiumLike:
    """Spots measuring the bins: summed ``counts``, ``centres`` (image pixels), each bin's spot (``-1``: none)."""

    counts: np.ndarray
    centres: np.ndarray
    bin_spot: np.ndarray
    radius_px: float
    pitch_px: float


def aggregate_visium(slide: BinnedSlide, *, min_fill: float = 0.5) -> VisiumLike:
    """Visium-like spots over the bins: 55 µm disks on a 100 µm hexagonal lattice, counts of the bins inside summed.

    A spot keeps only if it holds at least ``min_fill`` of the bins a disk fully on tissue would hold.
    """
    from scipy.spatial import cKDTree

    from sr_spatial.pp import visium_lattice

    pitch = SPOT_PITCH_UM / slide.um_per_px
    radius = SPOT_DIAMETER_UM / 2.0 / slide.um_per_px
    lo, hi = slide.centres.min(axis=0), slide.centres.max(axis=0)
    lattice = visium_lattice(lo, hi, pitch=pitch, offset=lo)
    distance, owner = cKDTree(lattice).query(slide.centres)
    inside = distance <= radius
    full = np.pi * radius**2 / (slide.bin_um / slide.um_per_px) ** 2
    held = np.bincount(owner[inside], minlength=len(lattice))
    used = np.flatnonzero(held >= min_fill * full)
    index = np.full(len(lattice), -1)
    index[used] = np.arange(len(used))
    bin_spot = np.where(inside, index[owner], -1)
    return VisiumLike(
        counts=_sum_rows(slide.counts, bin_spot, len(used)),
        centres=lattice[used],
        bin_spot=bin_spot,
        radius_px=radius,
        pitch_px=pitch,
    )


def _sum_rows(counts, target: np.ndarray, n: int):
    """Sum of the rows of ``counts`` (CSR) into ``n`` groups by ``target`` (``-1``: none), as CSR."""
    from scipy import sparse

    rows = np.flatnonzero(target >= 0)
    indicator = sparse.csr_matrix((np.ones(len(rows), np.float32), (target[rows], rows)), shape=(n, counts.shape[0]))
    return (indicator @ counts).tocsr()


def build_task(slide: BinnedSlide, *, scale: int, n_genes: int) -> dict:
    """The inputs of :func:`_protocol.run_methods`: Visium-like spots as the measurement, output bins as truth."""
    from scipy import sparse

    import sr_spatial as sr

    spots = aggregate_visium(slide)
    # Mean log-normalised expression of every gene over the spots, from the sparse counts (log1p(0) = 0).
    library = np.asarray(spots.counts.sum(axis=1), dtype=np.float64).ravel()
    scaled = sparse.diags(1e4 / np.maximum(library, 1e-12)) @ spots.counts
    scaled.data = np.log1p(scaled.data)
    order = np.argsort(-np.asarray(scaled.mean(axis=0)).ravel(), kind="stable")[:n_genes]
    genes = slide.genes[order].tolist()
    cs = "he_pixels"

    def sdata():
        return _protocol.spots_sdata(
            image=slide.image,
            downscale=1.0,
            cs=cs,
            counts=spots.counts,
            genes=slide.genes,
            centres=spots.centres,
            radius_px=spots.radius_px,
            spot_ids=[f"s{i}" for i in range(len(spots.centres))],
            array=np.zeros((len(spots.centres), 2), dtype=np.int64),
        )

    # The grid superresolve writes (same call as inside it), so the truth is summed onto exactly its bins.
    st_map = sr.pp.build_st_map(sdata(), "he", genes=genes, scale=scale)
    grid = st_map.grid
    ij = grid.index_of(slide.centres)
    on = (ij[:, 0] >= 0) & (ij[:, 0] < grid.height) & (ij[:, 1] >= 0) & (ij[:, 1] < grid.width)
    flat = np.where(on, ij[:, 0] * grid.width + ij[:, 1], -1)
    summed = _sum_rows(slide.counts, flat, grid.height * grid.width)
    n_bins = np.bincount(flat[on], minlength=grid.height * grid.width)
    full = (grid.size * slide.um_per_px / slide.bin_um) ** 2
    item = np.flatnonzero((n_bins >= 0.5 * full) & st_map.mask.ravel())
    query_xy = grid.centres().reshape(-1, 2)[item]
    # An output bin belongs to the spot whose disk holds its centre (what that spot measured), else to none.
    from scipy.spatial import cKDTree

    distance, owner = cKDTree(spots.centres).query(query_xy)
    group = np.where(distance <= spots.radius_px, owner, -1)
    return {
        "sdata": sdata,
        "image": slide.image,
        "downscale": 1.0,
        "cs": cs,
        "genes": genes,
        "scale": scale,
        "known_xy": spots.centres,
        "known_values": _protocol.lognorm(spots.counts, order),
        "known_radius": spots.radius_px,
        "query_xy": query_xy,
        "query_radius": grid.size / 2.0,
        "read_radius": 0.0,
        "truth": _protocol.lognorm(summed[item], order),
        "lattice": np.column_stack([item % grid.width, item // grid.width]),
        "group": group,
        "n_spots": len(spots.centres),
        "n_items": len(item),
        "out_um": grid.size * slide.um_per_px,
        "n_true_bins": len(slide.centres),
    }


def run_hd_truth(
    *, visium_hd=None, xenium=None, bin_um=8.0, data_seed=0, scale=None, methods=("nearest",), config="base", seed=0
):
    """Load the bins, aggregate them and score ``methods`` (per method and gene; ``data`` names the slide)."""
    slide = load_bins(visium_hd=visium_hd, xenium=xenium, bin_um=bin_um, seed=data_seed)
    synthetic = slide.name.startswith("synthetic")
    task = build_task(slide, scale=scale or (4 if synthetic else 6), n_genes=50)
    frame = _protocol.run_methods(task, methods=methods, config=config, seed=seed)
    frame["data"] = slide.name
    for key in ("n_spots", "n_items", "out_um", "n_true_bins", "scale"):
        frame[key] = task[key]
    frame["bin_um"] = slide.bin_um
    return frame


LABELS_HD = {**LABELS, "nearest": "nearest spot"}
INTRO = (
    "Protocol 2b: fine bins (Visium HD 8 µm bins, binned Xenium transcripts, or a synthetic slide) are aggregated "
    "into Visium-like spots (55 µm disks on a 100 µm hexagonal lattice, raw counts of the bins whose centre lies "
    "in the disk summed); every method predicts the output grid of `sr_spatial.tl.superresolve` from the spots "
    "and the H&E, and is scored against the true bins' counts summed over each output bin. Scores are in "
    "log-normalised units (counts per 10^4, log1p), per gene and then averaged over genes (and seeds; "
    "`pearson_sd` is the spread across seeds). `pearson`: across the output bins; `pearson_within`: of "
    "deviations from the mean over each spot's disk (only the detail the spot does not fix; bins between spots "
    "are left out); `ssim`: on the output grid; `rmse`; `spot_residual`: relative disagreement of each spot with "
    "the mean of the output bins in its disk (linear units); `wall_s`: the method's time (sr_spatial: training "
    "by scale transfer on the spots, and sampling); `peak_mib`: max RSS of the method's child process, loading "
    "the data included. `nearest spot`: each bin takes the spot nearest to it. `+ projection` rescales the bins "
    "in each spot's disk so that they average exactly to it."
)
PAGE = {
    "title": "High-resolution truth: fine bins aggregated into Visium-like spots, super-resolved back",
    "intro": INTRO,
    "labels": LABELS_HD,
    "figure_titles": {
        "pearson": "{name}: at the true bins",
        "pearson_within": "{name}: within the spots",
    },
    "genes_from": "the spots",
}


#: ``benchmarks/results``, where the page goes by default.
RESULTS = Path(__file__).resolve().parents[1] / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visium-hd", default=None, help=f"Visium HD outs/ folder (default ${VISIUM_HD_ENV})")
    parser.add_argument("--xenium", default=None, help=f"Xenium output folder with H&E (default ${XENIUM_ENV})")
    parser.add_argument("--bin-um", type=float, default=8.0, help="Xenium bin size in µm")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic slide")
    parser.add_argument("--scale", type=int, default=None, help="default 4 (synthetic) or 6 (real bins)")
    _protocol.add_common_arguments(parser, out=RESULTS / "hd_truth.md")
    args = parser.parse_args()

    where = _protocol.data_path(args.visium_hd, VISIUM_HD_ENV, "visium_hd") or _protocol.data_path(
        args.xenium, XENIUM_ENV, "xenium"
    )
    source = (
        f"`{where}`"
        if where
        else f"synthetic slide: Poisson counts (0.5 UMIs/µm²) in 5 µm squares drawn from the hidden truth of "
        f"`sr_spatial.datasets.demo(seed={args.data_seed})` (no Visium HD or Xenium folder given)"
    )

    def describe(per_gene):
        first = per_gene.iloc[0]
        data = (
            f"{source}; {int(first['n_true_bins'])} true bins of {first['bin_um']:g} µm aggregated into "
            f"{int(first['n_spots'])} Visium-like spots; scored on {int(first['n_items'])} output bins of "
            f"{first['out_um']:.1f} µm"
        )
        extra = ["n_spots", "n_items", "out_um", "n_true_bins", "scale", "bin_um"]
        return data, f"{args.config}, scale {int(first['scale'])}", extra

    page = _protocol.run_protocol(
        args,
        script="hd_truth.py",
        fn=run_hd_truth,
        page=PAGE,
        describe=describe,
        visium_hd=args.visium_hd,
        xenium=args.xenium,
        bin_um=args.bin_um,
        data_seed=args.data_seed,
        scale=args.scale,
    )
    print(page)


if __name__ == "__main__":
    main()
