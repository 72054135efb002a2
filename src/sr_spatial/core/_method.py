"""The method interface: fit or load a method for a slide, then compute its maps block by block.

A method (:class:`Method`) is chosen by name in :mod:`sr_spatial.tl._methods._registry`; the interface lives in the
core, so that the method packages build on it without importing the tools. Before the slide is read
it checks what it can of the call (:meth:`Method.check`); then :meth:`Method.fit` fits or loads it on the slide and
returns a :class:`Fitted`: a small picklable :class:`BlockMethod` that computes one block's mean and spread (sent to
dask workers), the model the blocks read, and what ``uns`` records of the fit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np
    from spatialdata import SpatialData

    from sr_spatial.pp._stmap import SpotRenderer, STMap

__all__ = ["BlockMethod", "Call", "Fitted", "Method", "TrainRequest"]


@dataclass(frozen=True)
class Call:
    """What a method reads of a :func:`~sr_spatial.tl.superresolve` call.

    ``slide`` is the call's :class:`~sr_spatial.tl.SlideKeys` and ``options`` its
    :class:`~sr_spatial.tl.MethodOptions`. ``model`` is the model passed (loaded if a path was given), or ``None`` to
    fit one on the slide.
    """

    sdata: SpatialData
    image_key: str
    slide: Any
    options: Any
    scale: int
    seed: int
    device: Any
    config: Any
    model: Any = None
    show_progress_bar: bool = True


@dataclass(frozen=True)
class TrainRequest:
    """What a method reads of a :func:`~sr_spatial.tl.train` call, its arguments checked.

    ``slides`` and ``image_keys`` are one slide (scale transfer) or, with ``reference``, the reference slides and
    one image key each; ``target`` is the slide the model will be applied to, whose geometry reference training
    imitates (or ``None``), and ``target_image_key`` its H&E (default: found, see
    :func:`~sr_spatial.core._reference.target_image_candidates`). ``aggregate``: the references' bins pooled per unit
    along each axis (:func:`~sr_spatial.core._aggregate.aggregate_units`). ``target_spots``: the target's spots where
    the caller has read them already (``superresolve(..., reference=...)``), so the target is read once.
    """

    slides: tuple
    image_keys: tuple[str, ...]
    slide: Any
    genes: list[str] | None
    n_top_genes: int
    scale: int
    config: Any
    train_steps: int | None
    device: Any
    reference: bool
    features: Any
    image_um_per_px: float | None
    seed: int
    checkpoint_dir: Any
    show_progress_bar: bool
    target: Any = None
    target_image_key: str | None = None
    aggregate: int = 1
    target_spots: Any = None

    def where(self) -> dict[str, Any]:
        """Where the data is and which genes, as :func:`~sr_spatial.pp.build_st_map` takes them."""
        return {**asdict(self.slide), "genes": self.genes, "n_top_genes": self.n_top_genes}


class BlockMethod(ABC):
    """A fitted method's computation of one block; small and picklable, so it can be sent to dask workers."""

    #: Maps held per gene while a block is computed (diffusion: its draws), which sizes the blocks.
    n_draws: int = 1

    @abstractmethod
    def describe(self) -> str:
        """What the blocks compute, for the log (e.g. ``"Sampling 8 draws"``)."""

    @abstractmethod
    def maps(
        self, view, model, *, show_progress_bar: bool
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """The block's mean and standard deviation ``(n_genes, h, w)``, and the residual sums before projection.

        The residual sums (:func:`~sr_spatial.core._consistency.residual_sums`) are ``None`` for a map that is not
        projected onto the spots. ``view`` is the block as the tools render it (``sr_spatial.tl._blocks.BlockView``);
        ``model`` is :attr:`Fitted.model`.
        """


@dataclass
class Fitted:
    """A method fitted or loaded for one slide.

    Attributes
    ----------
    blocks
        Computes each block.
    model
        The model the blocks read, sent to dask workers once (``None`` where the blocks need none).
    context
        Bins of context the blocks need beyond the spots' reach (the denoiser's tile overlap).
    uns
        Entries of ``uns[key]`` that describe the fit (e.g. ``"histology"``).
    params
        Entries of ``uns[key]["params"]`` decided by the fit (e.g. whether learned encoders were used).
    """

    blocks: BlockMethod
    model: Any = None
    context: int = 0
    uns: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)


class Method(ABC):
    """A way to super-resolve a slide: fitted (or loaded) for it, then computed block by block."""

    #: The name ``superresolve(method=...)`` takes.
    name: ClassVar[str]
    #: The model class ``superresolve(model=...)`` may pass, or ``None`` if the method takes no model.
    model_class: ClassVar[type | None] = None
    #: Whether ``learned_encoder`` applies to this method.
    takes_learned_encoder: ClassVar[bool] = False
    #: Whether the method draws samples (``n_samples``, ``sampling_steps`` apply).
    samples: ClassVar[bool] = False

    def check(self, call: Call) -> None:
        """Refuse what can be refused before the slide is read (configuration, features, scale)."""
        learned = call.options.learned_encoder
        valid = learned == "auto" if isinstance(learned, str) else isinstance(learned, bool)
        if learned is not None and not valid:
            msg = f"`learned_encoder` must be True, False or 'auto', got {learned!r}."
            raise TypeError(msg)
        if call.options.sampling_steps is not None and not self.samples:
            msg = (
                f"`sampling_steps` sets the diffusion model's DDIM steps; method={self.name!r} draws nothing. Drop "
                "`sampling_steps`, or use method='diffusion'."
            )
            raise ValueError(msg)
        if learned is True and not self.takes_learned_encoder:
            msg = (
                f"`learned_encoder=True` adds a predictor to method='histology'; method={self.name!r} does not use "
                "it (the diffusion model learns its own encoder). Drop `learned_encoder`, or use method='histology'."
            )
            raise ValueError(msg)

    @abstractmethod
    def fit(self, st_map: STMap, renderer: SpotRenderer, call: Call) -> Fitted:
        """Fit or load the method for the slide of ``st_map``; ``renderer`` renders its grid.

        ``st_map`` is read, not rendered (the blocks render their own bins); a method that needs the whole slide
        rendered renders it once with ``renderer`` (:func:`~sr_spatial.pp._stmap.render_whole`).
        """

    def train(self, request: TrainRequest):
        """The method's model fitted as ``request`` says (:func:`sr_spatial.tl.train`)."""
        msg = (
            f"method={self.name!r} has no model to train; it is computed directly by `sr.tl.superresolve`. Train "
            "method='histology' or method='diffusion'."
        )
        raise ValueError(msg)
