"""Shared pieces of the benchmark reports: the Markdown table and the machine line."""

from __future__ import annotations

import multiprocessing as mp
import platform


def markdown_table(frame, *, index_name: str) -> str:
    """A Markdown table of ``frame`` (rows named by its index); residuals in scientific notation, blanks for NaN."""
    lines = [f"| {index_name} | " + " | ".join(frame.columns) + " |", "|---|" + "---:|" * len(frame.columns)]
    for name, row in frame.iterrows():
        cells = ["" if v != v else (f"{v:.2e}" if col == "spot_residual" else f"{v:.3f}") for col, v in row.items()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    """Processor, cores, torch build and whether CUDA is there, for the results header."""
    import torch

    return (
        f"{platform.machine()}, {mp.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"CUDA {'yes' if torch.cuda.is_available() else 'no'}; Python {platform.python_version()}"
    )
