"""The histology predictor (``method="histology"``, the default), all of it in one package.

``_model`` holds :class:`~sr_spatial.model.HistologyModel` and its fits on the slide and on references,
``_apply`` applies a fitted predictor to one slide, ``_regression`` and ``_learned`` are its two predictors of the
within-spot detail (ridge on features, a learned convolutional encoder), ``_reference`` its fit on reference slides
and its guard, ``_config`` its configuration, ``_io`` its save and load, ``_method`` the method
:func:`~sr_spatial.tl.superresolve` runs. The public face is :mod:`sr_spatial.model`.
"""
