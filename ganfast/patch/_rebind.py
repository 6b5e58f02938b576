"""Rebinding shared by the patch modules: point every name that a code base's modules hold for one of its
functions at ganfast's replacement, and put the originals back on ``undo``.

A code base's modules are those loaded from the folder its patched modules were imported from (the parent of
their top-level package, e.g. the repository root or site-packages), except ``__main__``: a user's script or
notebook keeps the objects it saved (``orig = module.fn`` stays the original, for comparisons).
"""
from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Callable, Iterable

Binding = tuple[ModuleType, str, Callable, Callable]  # (module, name, original, replacement)


def _import_roots(module: ModuleType) -> list[str]:
    """The folders that ``module``'s top-level package (or module) was imported from."""
    top = sys.modules.get(module.__name__.partition(".")[0], module)
    if getattr(top, "__path__", None) is not None:  # a package, regular or namespace
        return [os.path.dirname(os.path.abspath(p)) for p in top.__path__]
    file = getattr(top, "__file__", None)
    return [os.path.dirname(os.path.abspath(file))] if file else []


def _within(file: str, roots: Iterable[str]) -> bool:
    path = os.path.abspath(file)
    return any(os.path.commonpath([path, root]) == root for root in roots)


def rebind(pairs: dict[tuple[ModuleType, str], Callable]) -> list[Binding]:
    """Replaces ``module.name`` by its replacement for every ``(module, name) -> replacement`` of ``pairs``, and
    every other name bound to the same original in the code base's modules (see the module docstring). An
    original that is already one of ganfast's replacements (``__ganfast_patch__``) is left alone. Returns the
    bindings made, for :func:`restore`."""
    originals: dict[int, tuple[Callable, Callable]] = {}  # id(original) -> (original, replacement)
    roots: set[str] = set()
    owners = {id(module) for module, _ in pairs}
    for (module, name), replacement in pairs.items():
        original = getattr(module, name, None)
        if callable(original) and not getattr(original, "__ganfast_patch__", False):
            originals[id(original)] = (original, replacement)
            roots.update(_import_roots(module))
    bindings: list[Binding] = []
    if not originals:
        return bindings
    for module_name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        file = getattr(module, "__file__", None)
        if module_name == "__main__" or not isinstance(namespace, dict):
            continue
        if id(module) not in owners and not (file and _within(file, roots)):
            continue
        for name, value in list(namespace.items()):
            found = originals.get(id(value))
            if found is not None and found[0] is value:
                setattr(module, name, found[1])
                bindings.append((module, name, value, found[1]))
    return bindings


def restore(bindings: list[Binding]) -> None:
    """Puts back every original of ``bindings`` whose name still holds ganfast's replacement."""
    for module, name, original, replacement in reversed(bindings):
        if getattr(module, name, None) is replacement:
            setattr(module, name, original)
