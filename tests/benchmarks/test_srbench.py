"""The benchmarks' own library agrees with the package's public functions where it stands in for them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from srbench import protocol


@pytest.fixture
def counts():
    rng = np.random.default_rng(0)
    raw = rng.poisson(rng.gamma(0.5, 4.0, size=(40, 12))).astype(np.float32)
    raw[3] = 0  # a spot without counts
    return raw


def test_lognorm_is_the_packages_normalize(counts):
    import anndata as ad

    import sr_spatial as sr

    expected = sr.pp.normalize(ad.AnnData(counts.astype(np.float64)), copy=True).X
    np.testing.assert_allclose(protocol.lognorm(counts), expected, rtol=1e-12, atol=0)
    # Counts per 10^4, then log1p.
    library = counts.sum(axis=1, keepdims=True)
    by_hand = np.log1p(counts / np.maximum(library, 1) * 1e4)
    np.testing.assert_allclose(protocol.lognorm(counts), by_hand, rtol=1e-6)
    # A CSR table gives the same values, dense only for the columns asked for.
    columns = np.array([5, 0, 7])
    np.testing.assert_allclose(protocol.lognorm(sparse.csr_matrix(counts), columns), expected[:, columns], rtol=1e-12)


def test_projection_is_the_packages_project_to_spots():
    import sr_spatial as sr

    rng = np.random.default_rng(1)
    n_items, n_genes, n_spots = 60, 5, 9
    pred = rng.gamma(1.0, 1.0, size=(n_items, n_genes))
    group = rng.integers(-1, n_spots, size=n_items)
    group[group == 8] = 7  # spot 8 measures no item
    pred[group == 2] = 0.0  # a spot whose items are all zero: they take its value
    pooled = rng.gamma(1.0, 1.0, size=(n_spots, n_genes))

    ours = protocol.project(pred, group, pooled)
    # The package's projection on a one-row "grid" of the items.
    theirs = sr.tl.project_to_spots(pred.T[:, None, :], group[None, :], pooled)[:, 0, :].T
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    member = group >= 0
    np.testing.assert_array_equal(ours[~member], pred[~member])


def test_cubic_interpolates_the_spots_and_clips_at_zero():
    rng = np.random.default_rng(2)
    points = rng.uniform(0, 10, size=(30, 2))
    values = rng.normal(1.0, 1.0, size=(30, 3))
    at_spots = protocol.cubic_at(points, values, points)
    np.testing.assert_allclose(at_spots, np.clip(values, 0, None), atol=1e-9)
    # Outside the convex hull the interpolation is undefined: the nearest spot's value.
    far = protocol.cubic_at(points, values, np.array([[100.0, 100.0]]))
    nearest = np.argmin(np.linalg.norm(points - 100.0, axis=1))
    np.testing.assert_array_equal(far[0], values[nearest])


def test_reference_spots_at_the_output_scale_read_as_a_slide():
    from srbench.reference import reference_slide

    import sr_spatial as sr

    demo = sr.datasets.demo(seed=1, n_rows=6, n_cols=6, n_genes=8)
    ref = reference_slide(demo, bin_um=25.0, split_px=None, umis_per_um2=0.5, seed=1, footprint="disk")
    circles = ref.shapes["spots"]
    np.testing.assert_allclose(circles["radius"], 12.5)  # the spots' true radius in 1 µm pixels
    table = ref.tables["table"]
    assert table.n_obs == len(circles)
    st_map = sr.pp.build_st_map(ref, "he", genes=table.var_names[:2].tolist(), scale=1)
    assert st_map.pitch == pytest.approx(25.0)
    # The square footprint is what reference_training.py always used: same bins, at least as many counts.
    squares = reference_slide(demo, bin_um=25.0, split_px=None, umis_per_um2=0.5, seed=1)
    assert squares.tables["t"].X.sum() > table.X.sum()
