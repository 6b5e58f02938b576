"""Implementation selection: ``impl=`` arguments, ``GANFAST_IMPL``, ``use_impl`` and the per-op registry.

    None / "auto" / "cuda"  the fastest implementation available for the tensor's device and dtype
    "ref"                   the pure-PyTorch reference (ganfast.reference)
    "ext"                   the compiled extension: CUDA kernel for CUDA tensors, C++ kernel for CPU tensors
    "triton"                the Triton kernel (CPU tensors only under TRITON_INTERPRET=1)

An explicit impl that cannot serve a call raises :class:`ImplNotSupportedError` listing the reasons;
"auto" walks the op's preference order for the device and takes the first impl with no reasons.

One rule for routes that are partly torch's: where a backend hands part of a call to torch's own kernels (a
Triton or "ext" route whose convolution shape runs on torch's conv2d / conv_transpose2d), the call still
succeeds under that explicit impl; the op's registry entry says so in ``notes``, which ``ganfast info`` prints.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from . import _ext

IMPLS = ("ref", "ext", "triton")
_AUTO_ALIASES = (None, "auto", "cuda")  # "cuda" is NVlabs' spelling of "use the fast kernels"

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("ganfast_impl", default=None)


class ImplNotSupportedError(RuntimeError):
    """An implementation was asked for that cannot serve the given inputs; the message says why."""


def normalize_impl(impl: str | None, argname: str = "impl") -> str:
    """Maps None/"auto"/"cuda" to "auto" and checks the name."""
    if impl in _AUTO_ALIASES:
        return "auto"
    if impl not in IMPLS:
        raise ValueError(f"{argname} must be one of None, 'auto', 'cuda', {', '.join(map(repr, IMPLS))}; got {impl!r}")
    return impl


@torch.compiler.assume_constant_result  # torch.compile cannot trace ContextVar.get: the choice is fixed at trace time
def default_impl() -> str:
    """The impl used when a call passes ``impl=None``: ``use_impl`` if active, else ``$GANFAST_IMPL``, else auto."""
    scoped = _override.get()
    if scoped is not None:
        return scoped
    return normalize_impl(os.environ.get("GANFAST_IMPL") or None, argname="GANFAST_IMPL")


@contextlib.contextmanager
def use_impl(impl: str | None) -> Iterator[None]:
    """Within the block, calls with ``impl=None`` use ``impl`` (e.g. ``with ganfast.use_impl("ref"):``)."""
    token = _override.set(normalize_impl(impl))
    try:
        yield
    finally:
        _override.reset(token)


@functools.lru_cache(maxsize=None)
def _triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return f"triton is not installed ({exc})"
    return None


def common_reasons(impl: str, device: torch.device) -> list[str]:
    """Why ``impl`` cannot run on ``device`` at all, whatever the op (empty list: it can)."""
    if impl == "ext":
        if not _ext.loaded():
            return [_ext.LOAD_ERROR or "the compiled extension ganfast._C is not available"]
        if device.type == "cuda" and not _ext.cuda_compiled():
            return ["the extension was built without CUDA kernels (no CUDA compiler at build time, or "
                    "GANFAST_CUDA=OFF)"]
        if device.type == "cuda" and not _ext.runs_on(device):
            return [f"the CUDA kernels were built for sm_{_ext._C.cuda_archs}, which {device} "
                    f"(sm_{''.join(map(str, torch.cuda.get_device_capability(device)))}) cannot run"]
        if device.type not in ("cpu", "cuda"):
            return [f"the extension has no kernels for device type {device.type!r}"]
    elif impl == "triton":
        error = _triton_import_error()
        if error:
            return [error]
        if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            return ["Triton kernels run on CPU tensors only under TRITON_INTERPRET=1 (the interpreter, for tests)"]
        if device.type not in ("cpu", "cuda"):
            return [f"Triton has no backend for device type {device.type!r} here"]
    return []


FLOAT_DTYPES = tuple(_ext.DTYPE_CODES)  # the dtypes every kernel takes (csrc/common.h: enum DType)


@dataclass
class OpEntry:
    """An op's implementation policy: auto's preference per device type and what each impl cannot serve.

    ``missing``: impl → why the op has no such kernel; ``ref_dtypes``: the dtypes of the reference (kernels take
    ``FLOAT_DTYPES``); ``notes``: impl → what that route runs on, printed by ``ganfast info``; ``reasons``: extra
    call-independent limits, (impl, device, dtype) → list of reasons.
    """
    name: str
    auto_order: dict[str, tuple[str, ...]]
    reasons: Callable[[str, torch.device, torch.dtype], list[str]] = lambda impl, device, dtype: []
    missing: dict[str, str] = field(default_factory=dict)
    ref_dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES
    notes: dict[str, str] = field(default_factory=dict)
    warned: set = field(default_factory=set)
    resolved: dict = field(default_factory=dict)  # auto's answers, by everything they depend on (see resolve)

    def not_supported_reasons(self, impl: str, device: torch.device, dtype: torch.dtype) -> list[str]:
        if impl in self.missing:
            return [self.missing[impl]]
        dtypes = self.ref_dtypes if impl == "ref" else FLOAT_DTYPES
        if dtype not in dtypes:
            why = " (the kernels are real-valued; impl='ref' takes it)" if dtype in self.ref_dtypes else ""
            return [f"dtype {dtype} is not one of {', '.join(map(str, dtypes))}{why}"]
        return common_reasons(impl, device) + self.reasons(impl, device, dtype)

    def resolve(self, impl: str | None, device: torch.device, dtype: torch.dtype, variant: str | None = None) -> str:
        """The concrete impl for a call; raises ImplNotSupportedError if an explicit choice cannot serve it.

        ``variant`` names a class of calls with its own auto order (key ``"<device type>:<variant>"``).
        """
        impl = normalize_impl(impl) if impl is not None else default_impl()
        if impl == "auto":  # an op's limits are call-independent: auto's answer depends on this key alone
            key = (device, dtype, variant, _ext.loaded(), os.environ.get("TRITON_INTERPRET"))
            chosen = self.resolved.get(key)
            if chosen is None:
                chosen = self.resolved[key] = self._auto(device, dtype, variant)
            return chosen
        reasons = self.not_supported_reasons(impl, device, dtype)
        if reasons:
            raise ImplNotSupportedError(
                f"{self.name}: impl={impl!r} cannot serve {dtype} tensors on {device}: " + "; ".join(reasons))
        return impl

    def _auto(self, device: torch.device, dtype: torch.dtype, variant: str | None) -> str:
        order = self.auto_order.get(f"{device.type}:{variant}") or self.auto_order.get(device.type, ("ref",))
        skipped = []
        for candidate in order:
            reasons = self.not_supported_reasons(candidate, device, dtype)
            if not reasons:
                if candidate == "ref" and device.type == "cuda" and (device.type, dtype) not in self.warned:
                    self.warned.add((device.type, dtype))
                    warnings.warn(f"ganfast: {self.name} falls back to the slow PyTorch reference on {device} "
                                  f"({'; '.join(skipped)}); see ganfast.info()", RuntimeWarning, stacklevel=4)
                return candidate
            skipped.append(f"{candidate}: {'; '.join(reasons)}")
        return "ref"


OPS: dict[str, OpEntry] = {}


def register_op(name: str, auto_order: dict[str, tuple[str, ...]],
                reasons: Callable[[str, torch.device, torch.dtype], list[str]] | None = None, *,
                missing: dict[str, str] | None = None, ref_dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES,
                notes: dict[str, str] | None = None) -> OpEntry:
    """Adds an op to the registry that ``resolve`` and ``ganfast.info()`` read (arguments as :class:`OpEntry`)."""
    entry = OpEntry(name, auto_order, missing=dict(missing or {}), ref_dtypes=tuple(ref_dtypes),
                    notes=dict(notes or {}))
    if reasons is not None:
        entry.reasons = reasons
    OPS[name] = entry
    return entry
