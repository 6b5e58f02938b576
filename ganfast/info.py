"""``ganfast.info()``: what was built, what is available, and which implementation each op uses."""
from __future__ import annotations

import os
import platform

import torch

from . import _ext
from ._dispatch import FLOAT_DTYPES, OPS, ImplNotSupportedError, _triton_import_error, default_impl
from ._version import __version__


def info() -> dict:
    """A report of the installation: versions, extension build, devices, and the impl ``auto`` picks per op.

    ``ops[name][device_type]`` is the impl that a float32 call with ``impl=None`` takes right now (it honours
    ``GANFAST_IMPL`` and ``use_impl``), or a fallback note when that is the slow reference on a GPU, with the
    other impls' reasons and, per impl of the device's auto order, a note where that route hands work to torch's
    own kernels (the one rule of ganfast._dispatch: such routes serve the call and say so here).
    """
    triton_version = None
    if _triton_import_error() is None:
        import triton
        triton_version = triton.__version__
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    ops = {}
    reference_only = {name: [str(d) for d in entry.ref_dtypes if d not in FLOAT_DTYPES]
                      for name, entry in sorted(OPS.items())}
    for name, entry in sorted(OPS.items()):
        ops[name] = {}
        for dev in devices:
            device = torch.device(dev)
            try:
                chosen = entry.resolve(None, device, torch.float32)
            except ImplNotSupportedError as exc:
                chosen = f"error: {exc}"
            skipped = {impl: entry.not_supported_reasons(impl, device, torch.float32)
                       for impl in entry.auto_order.get(dev, ()) if impl != chosen}
            notes = {impl: entry.notes[impl] for impl in entry.auto_order.get(dev, ()) if impl in entry.notes}
            ops[name][dev] = {"impl": chosen, "unavailable": {k: v for k, v in skipped.items() if v},
                              "notes": notes}
    cuda_device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "ganfast": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "extension_loaded": _ext.loaded(),
        "extension_error": _ext.LOAD_ERROR,
        "cuda_compiled": _ext.cuda_compiled(),
        "cuda_archs": (_ext._C.cuda_archs or None) if _ext.loaded() else None,
        "cuda_device": cuda_device,
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
        "default_impl": default_impl(),
        "ops": ops,
        "reference_only_dtypes": {name: dtypes for name, dtypes in reference_only.items() if dtypes},
        "patches": {"rosinality": _rosinality_report(devices)},
    }


def _rosinality_report(devices: list[str]) -> dict:
    """What ``patch_rosinality`` serves in this process: its modules and rebound names, and per replaced function
    the ganfast op and the impl a float32 call of it takes per device."""
    from .patch.rosinality import SERVED_BY, active_patches

    def chosen(op: str, variant: str | None, dev: str) -> str:
        try:
            return OPS[op].resolve(None, torch.device(dev), torch.float32, variant)
        except ImplNotSupportedError as exc:
            return f"error: {exc}"
    patches = active_patches()
    return {"active": bool(patches), "patched": [name for patch in patches for name in patch.patched],
            "functions": {fn: {"op": op, "call": call, "impl": {dev: chosen(op, variant, dev) for dev in devices}}
                          for fn, (op, variant, call) in SERVED_BY.items()}}


def format_info(report: dict) -> str:
    """``info()`` as the text ``ganfast info`` prints."""
    lines = [f"ganfast {report['ganfast']}  (python {report['python']}, torch {report['torch']}, "
             f"triton {report['triton'] or 'not installed'})"]
    if report["extension_loaded"]:
        cuda = f"CUDA kernels for sm_{report['cuda_archs']}" if report["cuda_compiled"] else "no CUDA kernels"
        lines.append(f"extension: ganfast._C loaded, C++ CPU kernels, {cuda}")
    else:
        lines.append(f"extension: NOT loaded: {report['extension_error']}")
    lines.append(f"device: {report['cuda_device'] or 'no CUDA device'}"
                 + ("; TRITON_INTERPRET=1" if report["triton_interpret"] else ""))
    lines.append(f"default impl: {report['default_impl']}")
    for name, per_device in report["ops"].items():
        for dev, choice in per_device.items():
            line = f"  {name:<16} {dev:<5} -> {choice['impl']}"
            if choice["unavailable"]:
                line += "   (" + "; ".join(f"{k}: {' '.join(v)}" for k, v in choice["unavailable"].items()) + ")"
            lines.append(line)
            for impl, note in choice.get("notes", {}).items():
                lines.append(f"  {'':<16} {'':<5}    {impl}: {note}")
    for name, dtypes in report.get("reference_only_dtypes", {}).items():
        lines.append(f"  {name:<16} {', '.join(dtypes)}: impl='ref' only (the kernels are real-valued)")
    rosinality = report.get("patches", {}).get("rosinality")
    if rosinality:
        state = (f"active: {', '.join(rosinality['patched']) or 'no copy imported yet'}" if rosinality["active"] else
                 "not installed in this process (ganfast.patch_rosinality(), or ganfast run SCRIPT)")
        lines.append(f"rosinality patch: {state}")
        for fn, served in rosinality["functions"].items():
            impls = ", ".join(f"{dev}: {impl}" for dev, impl in served["impl"].items())
            lines.append(f"  {fn:<16} -> ganfast {served['op']} ({served['call']}) [{impls}]")
    return "\n".join(lines)
