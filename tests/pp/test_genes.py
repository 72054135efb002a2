"""Gene selection and normalisation."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from scipy import sparse

from sr_spatial.pp import normalize, select_genes


@pytest.fixture
def counts(demo_sdata) -> ad.AnnData:
    """The demo's raw counts as a plain AnnData (a private copy)."""
    table = demo_sdata.tables["table"]
    return ad.AnnData(X=table.X.copy(), obs=table.obs[[]].copy(), var=table.var[[]].copy())


def _dense(x) -> np.ndarray:
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def test_explicit_genes_kept_in_order(counts):
    genes = ["gene_07", "gene_02", "gene_19"]
    assert select_genes(counts, genes=genes) == genes
    assert select_genes(counts, genes="gene_05") == ["gene_05"]


def test_missing_genes_named(counts):
    with pytest.raises(KeyError) as info:
        select_genes(counts, genes=["gene_01", "NOPE1", "gene_02", "NOPE2"])
    message = str(info.value)
    assert "NOPE1" in message
    assert "NOPE2" in message
    assert "2 of 4" in message


def test_repeated_and_empty_gene_lists(counts):
    with pytest.raises(ValueError, match="more than once"):
        select_genes(counts, genes=["gene_01", "gene_01"])
    with pytest.raises(ValueError, match="empty"):
        select_genes(counts, genes=[])


def test_duplicated_var_names(counts):
    names = counts.var_names.tolist()
    names[5] = names[2]
    counts.var_names = names
    with pytest.raises(ValueError, match="duplicated"):
        select_genes(counts, genes=["gene_00"])
    with pytest.raises(ValueError, match="gene_02"):
        select_genes(counts)


@pytest.mark.parametrize(
    "n",
    [
        1,
        12,
        5,
    ],
)
def test_n_top_genes(counts, n):
    before = _dense(counts.X).copy()
    genes = select_genes(counts, n_top_genes=n)
    assert len(genes) == n
    assert len(set(genes)) == n
    assert set(genes) <= set(counts.var_names)
    np.testing.assert_array_equal(_dense(counts.X), before)  # the input is not changed
    assert "highly_variable" not in counts.var


def test_n_top_genes_matches_scanpy_pearson_residuals(counts):
    # Every demo gene is detected in most spots: the ranking alone decides, and it is scanpy's.
    expected = counts.copy()
    sc.experimental.pp.highly_variable_genes(expected, flavor="pearson_residuals", n_top_genes=12)
    top = expected.var.sort_values("residual_variances", ascending=False).index[:12]
    assert select_genes(counts, n_top_genes=12) == top.tolist()


def test_default_genes_are_detected_in_most_spots():
    """A gene counted in a few spots (however variable) loses to one detected in most spots that varies."""
    rng = np.random.default_rng(0)
    n_spots = 200
    depth = rng.integers(2_000, 6_000, n_spots)
    region = np.arange(n_spots) < n_spots // 2
    profile = {
        "HOUSEKEEPING": np.full(n_spots, 2e-3),
        "MARKER": np.where(region, 4e-3, 5e-4),  # detected nearly everywhere, twice as variable as depth explains
        "RARE": np.where(np.arange(n_spots) < 20, 5e-3, 0.0),  # bursts in 10 % of spots: dispersion ranks it first
        "NOISE": np.full(n_spots, 2e-5),  # a count here and there
    }
    x = np.column_stack([rng.poisson(depth * p) for p in profile.values()]).astype(np.float32)
    filler = rng.poisson(depth[:, None] * np.full((1, 20), 1e-3)).astype(np.float32)
    table = ad.AnnData(X=np.hstack([x, filler]))
    table.var_names = [*profile, *(f"filler_{i}" for i in range(20))]
    genes = select_genes(table, n_top_genes=2)
    assert genes[0] == "MARKER"
    assert "RARE" not in genes and "NOISE" not in genes


def test_floor_lowered_when_too_few_genes_pass(counts):
    """On a shallow slide fewer genes than asked pass the floor: the most detected fill in."""
    x = _dense(counts.X).copy()
    rng = np.random.default_rng(1)
    x[rng.random(x.shape) < 0.6] = 0  # every gene now detected in about a third of the spots
    shallow = ad.AnnData(X=x)
    shallow.var_names = counts.var_names
    genes = select_genes(shallow, n_top_genes=10)
    detected = (x > 0).mean(axis=0)
    assert len(genes) == 10
    assert set(genes) <= set(shallow.var_names[detected >= np.sort(detected)[::-1][9]])


def test_spot_without_counts_among_candidates(counts):
    """A 1-UMI spot (no count among the genes that pass the floor) does not break the ranking."""
    x = _dense(counts.X).copy()
    x[0] = 0
    x[0, 0] = 1
    single = ad.AnnData(X=x)
    single.var_names = counts.var_names
    assert len(select_genes(single, n_top_genes=5)) == 5


def test_n_top_genes_beyond_table_takes_expressed_genes(counts):
    x = sparse.csr_matrix(counts.X, copy=True).tolil()
    x[:, 3] = 0  # one gene never detected
    counts.X = x.tocsr()
    genes = select_genes(counts, n_top_genes=1000)
    assert genes == [g for g in counts.var_names if g != "gene_03"]
    with pytest.raises(ValueError, match="n_top_genes"):
        select_genes(counts, n_top_genes=0)


def test_normalize_matches_scanpy(counts):
    expected = counts.copy()
    sc.pp.normalize_total(expected, target_sum=1e4)
    sc.pp.log1p(expected)

    before = _dense(counts.X).copy()
    out = normalize(counts, copy=True)
    assert out is not counts
    np.testing.assert_allclose(_dense(out.X), _dense(expected.X), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(_dense(counts.X), before)  # copy=True leaves the input as it was

    # And by the definition: log1p(1e4 * x / library size).
    manual = np.log1p(1e4 * before / before.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(_dense(out.X), manual, rtol=1e-5, atol=1e-5)


def test_normalize_in_place(counts):
    expected = normalize(counts, copy=True)
    assert normalize(counts) is None
    np.testing.assert_allclose(_dense(counts.X), _dense(expected.X))


def test_normalize_target_sum(counts):
    out = normalize(counts, target_sum=100.0, copy=True)
    np.testing.assert_allclose(np.expm1(_dense(out.X)).sum(axis=1), 100.0, rtol=1e-4)
