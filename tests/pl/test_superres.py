from __future__ import annotations

import copy

import matplotlib

matplotlib.use("Agg")

import dask.array as da
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.testing.compare import compare_images

import sr_spatial as sr

from ._compare import DPI, assert_matches


@pytest.fixture(scope="module")
def baseline_sdata(demo_sdata):
    """Deterministic, fast outputs: the plotting is under test, not the model."""
    sdata = copy.deepcopy(demo_sdata)
    sr.tl.superresolve(sdata, "demo_full_image", method="nearest", key_added="near", show_progress_bar=False)
    sr.tl.superresolve(sdata, "demo_full_image", method="bicubic", key_added="cubic", show_progress_bar=False)
    return sdata


def test_superres_draws_three_panels_per_gene(baseline_sdata, tmp_path):
    path = tmp_path / "panels.png"
    axes = sr.pl.superres(baseline_sdata, ["gene_00", "gene_10"], key="near", show=False, save=path)
    # Axes, as scanpy's plots return with show=False: one per panel, gene by gene.
    assert isinstance(axes, list) and len(axes) == 6
    assert all(isinstance(ax, matplotlib.axes.Axes) for ax in axes)
    fig = axes[0].figure
    assert fig.axes[: len(axes)] == axes
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [
        "gene_00: measured spots",
        "gene_00: super-resolved",
        "gene_00: uncertainty (sd)",
        "gene_10: measured spots",
        "gene_10: super-resolved",
        "gene_10: uncertainty (sd)",
    ]
    # Measured and super-resolved panels share the colour scale.
    scatter = fig.axes[0].collections[0]
    image = fig.axes[1].images[-1]
    assert scatter.get_clim() == image.get_clim()
    assert path.stat().st_size > 10_000
    assert np.asarray(mpimg.imread(path)).std() > 0.05  # not a blank canvas
    plt.close(fig)


def test_superres_draws_the_he_behind_every_panel(baseline_sdata):
    axes = sr.pl.superres(baseline_sdata, ["gene_00", "gene_10"], key="cubic", truth_key="demo_truth", show=False)
    hires = baseline_sdata.tables["cubic_table"].uns["spatial"]["cubic"]["images"]["hires"]
    for ax in axes:
        np.testing.assert_array_equal(ax.images[0].get_array(), hires)
        # The data over it lets the tissue show through.
        data = ax.collections[0] if not ax.images[1:] else ax.images[-1]
        assert data.get_alpha() < 1
    plt.close(axes[0].figure)


def test_superres_image(baseline_sdata, tmp_path):
    axes = sr.pl.superres(baseline_sdata, ["gene_00", "gene_10"], key="cubic", panel_size=2.5, show=False)
    assert_matches(axes[0].figure, "superres_cubic", tmp_path)


def test_superres_image_differs_for_another_gene(baseline_sdata, tmp_path):
    # The tolerance must not hide a change of content: another gene's panels fail the comparison.
    fig = sr.pl.superres(baseline_sdata, ["gene_05", "gene_10"], key="cubic", panel_size=2.5, show=False)[0].figure
    actual = tmp_path / "other.png"
    fig.savefig(actual, dpi=DPI)
    plt.close(fig)
    from ._compare import EXPECTED, TOLERANCE

    assert compare_images(str(EXPECTED / "superres_cubic.png"), str(actual), tol=TOLERANCE) is not None


def test_superres_into_given_axes(baseline_sdata):
    fig, axes = plt.subplots(1, 3)
    out = sr.pl.superres(baseline_sdata, "gene_10", key="near", ax=axes, show=False)
    assert out == list(axes)
    assert out[0].figure is fig
    assert [ax.get_title() for ax in axes] == [
        "gene_10: measured spots",
        "gene_10: super-resolved",
        "gene_10: uncertainty (sd)",
    ]
    with pytest.raises(ValueError, match="3 axes per gene"):
        sr.pl.superres(baseline_sdata, ["gene_00", "gene_10"], key="near", ax=axes, show=False)
    plt.close(fig)


def test_superres_errors_name_what_to_do(baseline_sdata):
    with pytest.raises(KeyError, match="run `sr_spatial.tl.superresolve"):
        sr.pl.superres(baseline_sdata, "gene_00", key="missing", show=False)
    with pytest.raises(KeyError, match="were not super-resolved"):
        sr.pl.superres(baseline_sdata, "not_a_gene", key="near", show=False)


def test_superres_with_truth_shares_the_colour_scale(baseline_sdata):
    fig = sr.pl.superres(baseline_sdata, "gene_10", key="cubic", truth_key="demo_truth", show=False)[0].figure
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [
        "gene_10: measured spots",
        "gene_10: super-resolved",
        "gene_10: truth",
        "gene_10: uncertainty (sd)",
    ]
    clim = panels[0].collections[0].get_clim()
    assert panels[1].images[-1].get_clim() == clim == panels[2].images[-1].get_clim()
    truth = panels[2].images[-1].get_array()
    # The truth varies within spots: it is finer than the measurement.
    assert truth.std() > 0.1
    assert panels[3].images[-1].get_clim()[0] == 0.0
    plt.close(fig)
    with pytest.raises(KeyError, match="available images"):
        sr.pl.superres(baseline_sdata, "gene_10", key="cubic", truth_key="nope", show=False)


def test_superres_draws_nothing_outside_the_tissue(baseline_sdata):
    # The images are NaN outside the tissue; the panels mask them, so the H&E shows there and no NaN is drawn.
    axes = sr.pl.superres(baseline_sdata, "gene_10", key="cubic", show=False)
    outside = np.isnan(np.asarray(baseline_sdata.images["cubic"].sel(c="gene_10").values))
    assert outside.any()
    for ax in axes[1:]:
        drawn = ax.images[-1].get_array()
        np.testing.assert_array_equal(np.ma.getmaskarray(drawn), outside)
        assert np.isfinite(drawn.compressed()).all()
    plt.close(axes[0].figure)


@pytest.fixture(scope="module")
def spread_sdata(baseline_sdata):
    """``cubic`` with a standard deviation rising from 0 to 1 left to right (a baseline's own sd is 0)."""
    sdata = copy.deepcopy(baseline_sdata)
    std = sdata.images["cubic_std"]
    ramp = np.broadcast_to(np.linspace(0.0, 1.0, std.sizes["x"], dtype=np.float32), std.shape)
    sdata.images["cubic_std"] = std.copy(data=da.from_array(np.where(np.isnan(std.values), np.nan, ramp)))
    return sdata


def test_superres_max_std_hides_uncertain_bins(spread_sdata):
    axes = sr.pl.superres(spread_sdata, "gene_10", key="cubic", max_std=0.5, show=False)
    mean = np.asarray(spread_sdata.images["cubic"].sel(c="gene_10").values)
    std = np.asarray(spread_sdata.images["cubic_std"].sel(c="gene_10").values)
    outside = np.isnan(mean)
    uncertain = ~outside & (std > 0.5)
    assert uncertain.any() and (~outside & ~uncertain).any()
    drawn = axes[1].images[-1].get_array()
    # Bins with sd above the threshold are masked (transparent) like the glass; the others show the map.
    np.testing.assert_array_equal(np.ma.getmaskarray(drawn), outside | uncertain)
    np.testing.assert_array_equal(drawn.compressed(), mean[~(outside | uncertain)])
    hidden = f"({int(uncertain.sum())} of {int((~outside).sum())} bins hidden)"
    assert axes[1].get_title() == f"gene_10: super-resolved, sd ≤ 0.5 {hidden}"
    # The colour scale spans what is drawn (and the measured spots), not the hidden bins.
    assert axes[1].images[-1].get_clim() == axes[0].collections[0].get_clim()
    # The uncertainty panel still shows every tissue bin.
    np.testing.assert_array_equal(np.ma.getmaskarray(axes[2].images[-1].get_array()), outside)
    plt.close(axes[0].figure)


def test_superres_max_std_none_and_above_every_sd_hide_nothing(spread_sdata):
    for max_std in (None, 1.0):
        axes = sr.pl.superres(spread_sdata, "gene_10", key="cubic", max_std=max_std, show=False)
        outside = np.isnan(np.asarray(spread_sdata.images["cubic"].sel(c="gene_10").values))
        np.testing.assert_array_equal(np.ma.getmaskarray(axes[1].images[-1].get_array()), outside)
        plt.close(axes[0].figure)


def test_superres_max_std_errors_name_what_to_do(spread_sdata):
    with pytest.raises(ValueError, match="`max_std` must be a non-negative number"):
        sr.pl.superres(spread_sdata, "gene_10", key="cubic", max_std=-1.0, show=False)
    sdata = copy.deepcopy(spread_sdata)
    del sdata.images["cubic_std"]
    with pytest.raises(KeyError, match="'cubic_std'.*not found.*`max_std`"):
        sr.pl.superres(sdata, "gene_10", key="cubic", max_std=0.5, show=False)


def test_colour_bars_carry_the_units_and_max_std_says_what_it_hid(spread_sdata, caplog):
    """Issue 34: every colour bar names the units; `max_std` reports how many bins it hid (title: see above)."""
    params = spread_sdata.tables["cubic_table"].uns["cubic"]["params"]
    assert params["units"] == "log1p(counts per 10,000)" == sr.pp.units()
    with caplog.at_level("INFO", logger="sr_spatial"):
        axes = sr.pl.superres(spread_sdata, "gene_10", key="cubic", max_std=0.5, show=False)
    fig = axes[0].figure
    labels = [ax.get_ylabel() for ax in fig.axes if ax not in axes]  # the colour bars' axes
    assert labels == ["log1p(counts per 10,000)", "log1p(counts per 10,000)", "sd of log1p(counts per 10,000)"]
    assert "gene_10: `max_std=0.5` hides" in caplog.text and "the median sd is" in caplog.text
    plt.close(fig)
