from __future__ import annotations

import spatialdata as sd

from sr_spatial._cli import main


def test_demo_command_writes_the_store_and_reports_it(tmp_path, capsys):
    out = tmp_path / "demo.zarr"
    assert main(["demo", "--out", str(out), "--config", "tiny", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert str(out.resolve()) in printed
    for method in ("nearest", "bicubic", "histology", "diffusion"):
        assert method in printed
    sdata = sd.read_zarr(out)
    for method in ("nearest", "bicubic", "histology", "diffusion"):
        assert f"superres_{method}" in sdata.images
        assert f"superres_{method}_table" in sdata.tables
    assert "demo_truth" in sdata.images
    # A second run refuses to overwrite without --overwrite.
    assert main(["demo", "--out", str(out), "--config", "tiny", "--quiet"]) == 2
