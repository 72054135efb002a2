"""Transcripts counted in square bins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from spatialdata import deepcopy
from spatialdata.models import get_table_keys
from spatialdata.transformations import get_transformation

import sr_spatial as sr

BIN_UM = 25.0


@pytest.fixture(scope="module")
def transcripts(reader_dirs):
    return pd.read_parquet(reader_dirs["xenium"] / "transcripts.parquet")


def test_counts_are_the_transcripts_in_each_bin(xenium_sdata, transcripts, reader_tissue):
    sdata = deepcopy(xenium_sdata)
    sr.pp.bin_transcripts(sdata, bin_size=BIN_UM)
    table = sdata.tables["transcripts_bins_table"]
    # Control probes are not genes; the genes are the tissue's.
    assert sorted(table.var_names) == sorted(reader_tissue.genes)
    kept = transcripts[(transcripts["qv"] >= 20) & transcripts["feature_name"].isin(reader_tissue.genes)]
    assert table.X.sum() == len(kept)
    # Every bin's counts are the kept transcripts whose position falls in its square.
    col = np.floor(kept["x_location"].to_numpy() / BIN_UM).astype(int)
    row = np.floor(kept["y_location"].to_numpy() / BIN_UM).astype(int)
    expected = pd.crosstab(
        pd.Index([f"bin_{i}_{j}" for i, j in zip(row, col, strict=True)], name="bin"), kept["feature_name"].to_numpy()
    )
    got = pd.DataFrame(table.X.toarray(), index=table.obs_names, columns=table.var_names)
    pd.testing.assert_frame_equal(
        got.loc[expected.index, expected.columns], expected.astype(np.float32), check_names=False
    )
    # Squares of the bin size around obsm["spatial"], registered like the transcripts, annotated by the table.
    shapes = sdata.shapes["transcripts_bins"].loc[table.obs["bin_id"]]
    np.testing.assert_allclose(shapes.area, BIN_UM**2)
    np.testing.assert_allclose(np.column_stack([shapes.centroid.x, shapes.centroid.y]), table.obsm["spatial"])
    assert get_transformation(shapes, get_all=True).keys() == {"global"}
    region, _, instance_key = get_table_keys(table)
    assert region == "transcripts_bins"
    assert instance_key == "bin_id"


def test_quality_filter_and_copy(xenium_sdata, transcripts, reader_tissue):
    names = set(xenium_sdata.tables)
    out = sr.pp.bin_transcripts(xenium_sdata, bin_size=BIN_UM, min_qv=None, key_added="all_qv", inplace=False)
    assert set(xenium_sdata.tables) == names  # the input is left alone
    genes = transcripts["feature_name"].isin(reader_tissue.genes)
    assert out.tables["all_qv_table"].X.sum() == genes.sum()


def test_bad_calls(xenium_sdata):
    sdata = deepcopy(xenium_sdata)
    with pytest.raises(KeyError, match=r"Points 'nope' not found\. Available points: \['transcripts'\]"):
        sr.pp.bin_transcripts(sdata, "nope", bin_size=BIN_UM)
    with pytest.raises(ValueError, match="`bin_size` must be a positive number"):
        sr.pp.bin_transcripts(sdata, bin_size=0)
    with pytest.raises(ValueError, match="output names are taken"):
        sr.pp.bin_transcripts(sdata, bin_size=BIN_UM, key_added="he_image")
    assert set(sdata.shapes) == set(xenium_sdata.shapes)


def test_overwrite_replaces_only_bins_it_wrote(xenium_sdata):
    sdata = deepcopy(xenium_sdata)
    sr.pp.bin_transcripts(sdata, bin_size=BIN_UM, key_added="bins")
    sdata.shapes["mine"] = deepcopy(sdata.shapes["bins"])  # the user's own shapes under a name bins could take
    with pytest.raises(ValueError, match=r"shapes\['mine'\] not written by sr_spatial; `overwrite=True` replaces only"):
        sr.pp.bin_transcripts(sdata, bin_size=BIN_UM, key_added="mine", overwrite=True)
    assert "mine_table" not in sdata.tables
    sr.pp.bin_transcripts(sdata, bin_size=2 * BIN_UM, key_added="bins", overwrite=True)
    assert sdata.tables["bins_table"].uns["bins"]["params"]["bin_size"] == 2 * BIN_UM
