"""The Diff-ST diffusion model (``method="diffusion"``), all of it in one package.

``_model`` holds :class:`~sr_spatial.model.DiffST`, ``_config`` its configuration, ``_schedule`` the noise
schedule and samplers, ``_io`` its save and load, ``_fit`` its training data (scale transfer on the slide's own
spots, or reference slides), ``_method`` the method :func:`~sr_spatial.tl.superresolve` runs; the network's parts
live in ``nn``, its fitted state and sampler in ``module``, training in ``train``. The public face is
:mod:`sr_spatial.model`.
"""
