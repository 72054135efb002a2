"""Preprocessing: gene selection, normalisation, transcript binning and the ST map."""

from sr_spatial.pp._bins import bin_transcripts
from sr_spatial.pp._genes import normalize, select_genes
from sr_spatial.pp._stmap import STMap, build_st_map, coarsen_spots

__all__ = ["STMap", "bin_transcripts", "build_st_map", "coarsen_spots", "normalize", "select_genes"]
