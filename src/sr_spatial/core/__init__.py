"""What both methods share: grid and spot data, groups, consistency, uncertainty, the scene, tiling, encoders.

The core imports neither :mod:`sr_spatial.tl` nor a method's package (:mod:`sr_spatial.histology`,
:mod:`sr_spatial.diffusion`); both methods and the tools build on it.
"""
