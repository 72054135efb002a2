"""her2st across sections (issue 25): noise ceiling, the cross-section ridge peer, reference slides.

Everything here works on the harness's pseudo-spot protocol (:mod:`srbench.her2st`): the measured spots pooled 2x2
on the array lattice, the genes :func:`srbench.her2st.select_genes` picks, scores at the measured spots.

- :func:`noise_ceiling`: how much of the within-pseudo-spot detail the measured spots carry at all. Each spot's
  counts are split in two by binomial thinning; the per-gene correlation of the two halves' deviations from
  their 2x2 block mean is the split-half reliability, and Spearman-Brown (``2r / (1 + r)``) the share of the
  full-depth within-block variance that is signal rather than counting noise.
- :func:`ridge_peer`: a ridge regression on the package's public morphology features, fitted on the within-block
  deviations of *other* sections' measured spots and added to each target spot's own pseudo-spot value.
- :func:`reference_sdata`: a section as a reference slide (its H&E, circles of the spots' true radius, raw counts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from srbench.her2st import Her2stSection, PseudoSpots, to_spatialdata
from srbench.protocol import lognorm, ridge_fit_predict

if TYPE_CHECKING:
    from collections.abc import Sequence

    from spatialdata import SpatialData

__all__ = [
    "block_deviation",
    "morphology_spot_features",
    "noise_ceiling",
    "reference_sdata",
    "ridge_peer",
]

#: Pixels per bin the morphology features are read at (the package's cap, :meth:`HistologyFeatures.px_per_bin`).
PX_PER_BIN = 32


def _block_mean(values: np.ndarray, group: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``values`` (items x columns) over each group's items, ``(n, columns)``."""
    sums = np.zeros((n, values.shape[1]))
    np.add.at(sums, group, values)
    return sums / np.maximum(np.bincount(group, minlength=n), 1)[:, None]


def noise_ceiling(
    section: Her2stSection, pseudo: PseudoSpots, genes: Sequence[str], *, seed: int = 0, p: float = 0.5
) -> dict:
    """Split-half reliability of the within-block detail of ``genes`` at the measured spots.

    Each spot's raw counts are thinned binomially (``p``, seeded) into two halves, each normalised as
    :func:`sr_spatial.pp.normalize` does (counts per 10^4, ``log1p``). A half's deviation is a spot's value minus
    the mean of that half's values over the spots of its 2x2 block (blocks of 2-4 spots, as ``pearson_within``).

    Returns
    -------
    ``r_half``: per-gene Pearson r of the two halves' deviations, averaged over genes; ``signal_fraction``:
    Spearman-Brown of ``r_half``, the share of the within-block variance at full depth that is signal;
    ``within_ceiling``: its square root, the highest ``pearson_within`` a perfect predictor of the signal could
    score against the (noisy) measured spots; ``per_gene``: the per-gene r; ``n_spots``: spots in blocks of 2-4.
    """
    rng = np.random.default_rng(seed)
    counts = np.rint(section.counts).astype(np.int64)
    first = rng.binomial(counts, p)
    idx = section.genes.get_indexer(list(genes))
    n = len(pseudo.counts)
    size = np.bincount(pseudo.group, minlength=n)
    multi = size[pseudo.group] >= 2
    deviations = []
    for half in (first, counts - first):
        values = lognorm(half.astype(np.float64), idx)
        deviations.append((values - _block_mean(values, pseudo.group, n)[pseudo.group])[multi])
    a, b = deviations
    per_gene = np.array([np.corrcoef(a[:, g], b[:, g])[0, 1] for g in range(len(idx))])
    r = float(np.nanmean(per_gene))
    fraction = 2 * r / (1 + r)
    return {
        "r_half": r,
        "signal_fraction": fraction,
        "within_ceiling": float(np.sqrt(max(fraction, 0.0))),
        "per_gene": per_gene,
        "n_spots": int(multi.sum()),
    }


def _lattice_grid(section: Her2stSection, margin: int) -> tuple[float, float, float, int, int]:
    """An axis-aligned grid of square bins one lattice step wide, a bin centred on each lattice position.

    Returns ``(x0, y0, size, height, width)`` in full-resolution pixels: the package's output grid at scale 2 of
    the pseudo-spots (one bin per measured spot) with ``margin`` bins around the spots for the features' context.
    """
    design = np.column_stack([section.array, np.ones(len(section.array))])
    coef, *_ = np.linalg.lstsq(design, section.centres, rcond=None)
    size = float(np.mean(np.linalg.norm(coef[:2], axis=1)))
    lo, hi = section.array.min(axis=0) - margin, section.array.max(axis=0) + margin
    x0, y0 = coef[2] + lo * size - size / 2  # corner of the bin centred on array position ``lo``
    width, height = (hi - lo + 1).astype(int)
    return float(x0), float(y0), size, int(height), int(width)


def morphology_spot_features(section: Her2stSection, *, margin: int = 4) -> np.ndarray:
    """The package's morphology features (:class:`sr_spatial.features.MorphologyFeatures`) at each measured spot.

    The H&E is read on a grid of bins one lattice step (200 µm) wide, a bin centred on each lattice position, at
    :data:`PX_PER_BIN` pixels per bin (box-resampled from the harness's downscaled image, white outside it), the
    grid ``superresolve(scale=2)`` puts on the pseudo-spots; each spot takes the features of the bin holding its
    centre (78 features: 26 per-pixel planes averaged per bin and over 3x3 and 7x7 bins).
    """
    from PIL import Image

    import sr_spatial as sr

    x0, y0, size, height, width = _lattice_grid(section, margin)
    ds = section.downscale
    rgb = section.image.transpose(1, 2, 0)
    # Pad with white so the grid's box lies inside the image; PIL's BOX filter averages the area of each output px.
    pad = int(np.ceil(margin * size / ds)) + 2
    padded = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), constant_values=255)
    box = (x0 / ds + pad, y0 / ds + pad, (x0 + width * size) / ds + pad, (y0 + height * size) / ds + pad)
    raster = Image.fromarray(padded).resize((width * PX_PER_BIN, height * PX_PER_BIN), Image.Resampling.BOX, box=box)
    raster = np.asarray(raster, dtype=np.float32).transpose(2, 0, 1) / 255.0
    extractor = sr.features.MorphologyFeatures()
    extractor.fit([raster])
    features = extractor.bin_features(raster, px_per_bin=PX_PER_BIN)
    cols = np.clip(((section.centres[:, 0] - x0) // size).astype(int), 0, width - 1)
    rows = np.clip(((section.centres[:, 1] - y0) // size).astype(int), 0, height - 1)
    return features[:, rows, cols].T.astype(np.float64)


def block_deviation(section: Her2stSection, pseudo: PseudoSpots, genes: Sequence[str]) -> tuple[np.ndarray, ...]:
    """``(truth, own, deviation)`` at the measured spots, log-normalised.

    ``truth``: each spot's value; ``own``: its pseudo-spot's value (pooled counts normalised); ``deviation``:
    their difference, the detail the pooled measurement does not fix.
    """
    idx = section.genes.get_indexer(list(genes))
    truth = lognorm(section.counts.astype(np.float64), idx)
    own = lognorm(pseudo.counts.astype(np.float64), idx)[pseudo.group]
    return truth, own, truth - own


def _standardise(features: np.ndarray) -> np.ndarray:
    return (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-9)


def _centre_in_blocks(features: np.ndarray, pseudo: PseudoSpots) -> np.ndarray:
    return features - _block_mean(features, pseudo.group, len(pseudo.counts))[pseudo.group]


def ridge_peer(
    target: tuple[Her2stSection, PseudoSpots],
    references: Sequence[tuple[Her2stSection, PseudoSpots]],
    genes: Sequence[str],
    *,
    features: dict | None = None,
    block_centred: bool = True,
) -> np.ndarray:
    """Own pseudo-spot value plus a ridge prediction of the within-block deviation learnt on other sections.

    Features are :func:`morphology_spot_features` (or ``features[name]`` where given), standardised within each
    section (stain and scanner differ between sections) and, with ``block_centred``, taken relative to their
    2x2 block's mean, so the regression sees only how a spot differs from its block. The ridge
    (:func:`srbench.protocol.ridge_fit_predict`, penalty by leave-one-out error) is fitted on the spots of the
    references' blocks of 2-4 spots, their ``deviation`` of :func:`block_deviation` as response, and predicts
    each target spot's deviation; the prediction is its own pseudo-spot value plus that, clipped at 0.

    Returns
    -------
    ``(n_target_spots, n_genes)`` log-normalised prediction.
    """

    def design(section, pseudo):
        x = features[section.name] if features and section.name in features else morphology_spot_features(section)
        x = _standardise(x)
        return _centre_in_blocks(x, pseudo) if block_centred else x

    xs, ys = [], []
    for section, pseudo in references:
        size = np.bincount(pseudo.group)
        multi = size[pseudo.group] >= 2
        xs.append(design(section, pseudo)[multi])
        ys.append(block_deviation(section, pseudo, genes)[2][multi])
    section, pseudo = target
    _, own, _ = block_deviation(section, pseudo, genes)
    detail = ridge_fit_predict(np.vstack(xs), np.vstack(ys), design(section, pseudo), clip=False)
    return np.clip(own + detail, 0.0, None)


def reference_sdata(section: Her2stSection) -> SpatialData:
    """A measured section as a reference slide: image ``"he"`` (RGB), shapes ``"spots"`` (circles of the spots'
    true 50 µm radius) and table ``"table"`` (raw counts); :func:`srbench.her2st.to_spatialdata` unchanged."""
    return to_spatialdata(section)
