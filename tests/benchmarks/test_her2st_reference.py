"""Issue 25's benchmark pieces on her2st that need no model: noise ceiling, cross-section ridge peer, references."""

from __future__ import annotations

import numpy as np
import pytest
from srbench import her2st as _her2st
from srbench import her2st_reference as _ref

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def sections():
    root = _her2st.data_root() / "her2st"
    if not all((root / s).is_dir() for s in ("C2", "C3")):
        pytest.skip("her2st data not found (../shared/data or $SR_SPATIAL_DATA)")
    return {s: (d, _her2st.pool_2x2(d)) for s in ("C2", "C3") for d in [_her2st.load_section(s)]}


def test_noise_ceiling_is_a_reliability(sections):
    data, pseudo = sections["C2"]
    genes = _her2st.select_genes(data, pseudo)
    ceiling = _ref.noise_ceiling(data, pseudo, genes, seed=0)
    r = ceiling["r_half"]
    assert 0.0 < r < 1.0
    assert ceiling["signal_fraction"] == pytest.approx(2 * r / (1 + r))
    assert ceiling["per_gene"].shape == (len(genes),)
    # Seeded: the same split twice.
    assert _ref.noise_ceiling(data, pseudo, genes, seed=0)["r_half"] == r


def test_morphology_features_and_ridge_peer(sections):
    (c2, p2), (c3, p3) = sections["C2"], sections["C3"]
    features = _ref.morphology_spot_features(c2)
    assert features.shape == (len(c2.spot_ids), 78)
    assert np.isfinite(features).all()
    genes = _her2st.select_genes(c2, p2)[:10]
    truth, own, deviation = _ref.block_deviation(c2, p2, genes)
    np.testing.assert_allclose(truth - own, deviation)
    pred = _ref.ridge_peer((c2, p2), [(c3, p3)], genes, features={"C2": features})
    assert pred.shape == truth.shape
    assert (pred >= 0).all()
    # Block-centred features: spots alone in their block get their own value plus the same offset (the intercept).
    alone = np.bincount(p2.group)[p2.group] == 1
    kept = alone & (pred > 0).all(axis=1)
    offset = pred[kept] - own[kept]
    np.testing.assert_allclose(offset, np.broadcast_to(offset[0], offset.shape), atol=1e-9)
