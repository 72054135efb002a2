"""The methods of :func:`~sr_spatial.tl.superresolve`, one module each, behind one interface and one registry."""

from sr_spatial.core._method import BlockMethod, Call, Fitted, Method
from sr_spatial.tl._methods._registry import DEFAULT_METHOD, METHODS, resolve_method, resolve_model

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "BlockMethod",
    "Call",
    "Fitted",
    "Method",
    "resolve_method",
    "resolve_model",
]
