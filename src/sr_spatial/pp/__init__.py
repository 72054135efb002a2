"""Preprocessing: gene selection, normalisation, transcript binning, the ST map and spot geometry."""

from sr_spatial.core._groups import group_means
from sr_spatial.pp._bins import bin_transcripts
from sr_spatial.pp._genes import normalize, select_genes
from sr_spatial.pp._interpolate import interpolate_at
from sr_spatial.pp._lattice import visium_lattice
from sr_spatial.pp._stmap import STMap, build_st_map, coarsen_spots

__all__ = [
    "STMap",
    "bin_transcripts",
    "build_st_map",
    "coarsen_spots",
    "group_means",
    "interpolate_at",
    "normalize",
    "select_genes",
    "visium_lattice",
]
