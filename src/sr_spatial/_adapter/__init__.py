"""Reading spots and H&E from a :class:`~spatialdata.SpatialData`, writing results back, binning transcripts.

``_read`` places spots on the image and reads the H&E under a grid, ``_write`` adds the super-resolved images,
bins and table, ``_bins`` counts transcripts in square bins, and ``_elements`` holds what they share. Positions
are mapped between elements through their own transformations; no coordinate-system or element name is assumed
beyond what the caller passes or the elements' metadata state. Everything downstream works on plain arrays in
the pixel space of the chosen image's full-resolution level.
"""
