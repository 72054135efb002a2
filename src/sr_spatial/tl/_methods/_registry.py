"""The one place a method is picked: by name, or by the kind of model passed."""

from __future__ import annotations

from pathlib import Path

from sr_spatial.core._method import Method
from sr_spatial.diffusion._method import DiffusionMethod
from sr_spatial.histology._method import HistologyMethod
from sr_spatial.histology._model import fit_base
from sr_spatial.model import DiffST, HistologyModel, load
from sr_spatial.tl._methods._bicubic import BicubicMethod
from sr_spatial.tl._methods._nearest import NearestMethod

__all__ = ["DEFAULT_METHOD", "METHODS", "DiffusionAroundHistology", "resolve_method", "resolve_model"]


class DiffusionAroundHistology(DiffusionMethod):
    """The diffusion method, its ``histology_base`` fitted by the histology method: joined here, not in either."""

    fit_base = staticmethod(fit_base)


#: Every method ``superresolve`` takes, by name.
METHODS: dict[str, type[Method]] = {
    m.name: m for m in (HistologyMethod, DiffusionAroundHistology, BicubicMethod, NearestMethod)
}
#: The method without a model.
DEFAULT_METHOD = HistologyMethod.name


def resolve_model(model, *, device) -> DiffST | HistologyModel | None:
    """``model`` as a fitted model: loaded from a folder, checked trained and finite, on ``device``."""
    from sr_spatial.tl import _checks

    if model is None:
        return None
    if isinstance(model, str | Path):
        path, model = model, load(model, device=device)
        if isinstance(model, DiffST) and not model.is_trained:
            msg = f"The model saved in {str(path)!r} is not trained; train it with `sr_spatial.tl.train` and save it."
            raise ValueError(msg)
    if isinstance(model, DiffST):
        if not model.is_trained:
            msg = "The model passed is not trained; train it with `sr_spatial.tl.train` or pass `model=None`."
            raise ValueError(msg)
        model.check_finite()
        _checks.move_to_device(model, device)
        return model
    if isinstance(model, HistologyModel):
        return model
    msg = f"`model` must be None, a DiffST, a HistologyModel or the folder of a saved one, got {type(model).__name__}."
    raise TypeError(msg)


def resolve_method(method: str | None, model) -> Method:
    """The method of a call: ``method`` by name, else the one ``model`` belongs to, else the default.

    A model the method cannot use is refused, so it is never silently ignored.
    """
    if method is None:
        kinds = [m for m in METHODS.values() if m.model_class is not None and isinstance(model, m.model_class)]
        return (kinds[0] if kinds else METHODS[DEFAULT_METHOD])()
    if not isinstance(method, str) or method not in METHODS:
        msg = f"Unknown method {method!r}; choose one of {list(METHODS)}."
        raise ValueError(msg)
    chosen = METHODS[method]()
    if model is not None and not (chosen.model_class is not None and isinstance(model, chosen.model_class)):
        owners = [m.name for m in METHODS.values() if m.model_class is not None and isinstance(model, m.model_class)]
        msg = (
            f"method={method!r} cannot use the {type(model).__name__} passed as `model`"
            + (f" (it belongs to method={owners[0]!r})" if owners else "")
            + "; drop `method` to use the model, or drop `model` to fit one with this method."
        )
        raise ValueError(msg)
    return chosen
