"""Models that remember how they were built, so that a checkpoint can rebuild them (``ganfast sample``).

A subclass of :class:`BuildableModule` records the arguments of its outermost ``__init__`` call in
``init_kwargs``; ``model_spec`` turns that into JSON and ``build_model`` makes a fresh module from it, looking the
class up among ``ganfast.models``' exports only (a checkpoint never names arbitrary code to run).
"""
from __future__ import annotations

import functools
import inspect

from torch import nn


class BuildableModule(nn.Module):
    """An ``nn.Module`` whose constructor arguments are kept in ``init_kwargs`` (they must be JSON values)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init = cls.__init__
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            outermost = not hasattr(self, "_recording")
            if outermost:
                object.__setattr__(self, "_recording", True)
            init(self, *args, **kw)
            if outermost:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                self.init_kwargs = {k: v for k, v in bound.arguments.items() if k != "self"}
                object.__delattr__(self, "_recording")

        cls.__init__ = recording_init


def model_spec(module: nn.Module) -> dict | None:
    """``{"class": name, "kwargs": {...}}`` for a ganfast model; None for other modules."""
    if not isinstance(module, BuildableModule):
        return None
    return {"class": type(module).__name__, "kwargs": module.init_kwargs}


def build_model(spec: dict) -> nn.Module:
    """A new (freshly initialised) model from ``model_spec``'s output."""
    from .. import models
    name = spec.get("class") if isinstance(spec, dict) else None
    cls = getattr(models, name, None) if name in models.__all__ else None
    if not (isinstance(cls, type) and issubclass(cls, BuildableModule)):
        raise ValueError(f"model spec names {name!r}, which is not a model in ganfast.models")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ValueError("model spec: 'kwargs' must be a JSON object")
    return cls(**kwargs)
