"""The hd_scale page (issue 35) rendered from saved rows, with its hand-written notes: no model is run."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import hd_scale

RESULTS = Path(hd_scale.__file__).parent / "results"


def test_the_page_is_rendered_from_the_saved_rows_with_its_notes_appended(tmp_path, capsys):
    out = tmp_path / "scale.md"
    shutil.copy(RESULTS / "hd_scale.json", out.with_suffix(".json"))
    out.with_name("scale_notes.md").write_text("## Notes (hand-written)\n\nWritten by hand.\n")
    run = json.loads(out.with_suffix(".json").read_text())
    # Arguments other than the run's: the page names the command, cluster size and date the rows were measured with.
    args = argparse.Namespace(sizes=["10x8"], workers=[1], cluster_size="10x8", out=str(out))
    hd_scale.render(args, run)
    capsys.readouterr()
    page = out.read_text()
    assert page.startswith("# Learning from a whole Visium HD slide")
    assert f"Command: `{run['command']}`" in page and f"Date: {run['date']}" in page
    assert f"({run['cluster_size']} pair)" in page
    assert len([line for line in page.splitlines() if line.startswith(f"| {run['rows'][0]['shape']} |")]) == 1
    assert page.endswith("\n\n## Notes (hand-written)\n\nWritten by hand.\n")
    # The notes are appended once, however often the page is rendered again.
    hd_scale.render(args, run)
    assert out.read_text() == page
