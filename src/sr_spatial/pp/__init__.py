"""Preprocessing: gene selection, normalisation and the ST map."""

from sr_spatial.pp._genes import normalize, select_genes
from sr_spatial.pp._stmap import STMap, build_st_map, coarsen_spots

__all__ = ["STMap", "build_st_map", "coarsen_spots", "normalize", "select_genes"]
