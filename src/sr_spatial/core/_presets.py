"""Configurations named by size: a preset by name, a configuration object or a dict, checked key by key."""

from __future__ import annotations

from dataclasses import fields, replace

__all__ = ["check_keys", "resolve_preset"]


def check_keys(cls, d: dict, *, what: str) -> None:
    """Refuse keys of ``d`` that are not fields of the dataclass ``cls``, naming the known ones."""
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        msg = f"Unknown {what} keys {sorted(unknown)}; known keys: {sorted(known)}."
        raise ValueError(msg)


def resolve_preset(config, *, presets: dict, cls: type, alternatives: str, **overrides):
    """A configuration of dataclass ``cls`` from a name of ``presets`` (default ``"base"``), a ``cls`` or a dict.

    Keyword overrides that are not ``None`` are applied; ``alternatives`` names what else may be passed.
    """
    if config is None:
        config = "base"
    if isinstance(config, str):
        if config not in presets:
            msg = f"Unknown model configuration {config!r}; choose one of {sorted(presets)} or pass {alternatives}."
            raise ValueError(msg)
        config = presets[config]
    elif isinstance(config, dict):
        config = cls.from_dict(config)
    elif not isinstance(config, cls):
        msg = f"`config` must be a preset name, a {cls.__name__} or a dict, got {type(config).__name__}."
        raise TypeError(msg)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(config, **overrides) if overrides else config
