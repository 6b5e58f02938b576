"""The compiled extension ``ganfast._C`` and the helpers that hand it tensors as raw addresses.

``_C`` is torch-free: it sees addresses, sizes, a dtype code and a CUDA stream handle. Everything that
touches torch (validation, layout, streams) happens here and in the op modules, before the call.
"""
from __future__ import annotations

import torch

try:
    from . import _C
    LOAD_ERROR: str | None = None
except ImportError as exc:  # a source checkout without a build, or a broken install
    _C = None
    LOAD_ERROR = f"the compiled extension ganfast._C did not load ({exc}); reinstall with `pip install .`"

# Element type codes understood by the kernels (csrc/common.h: enum DType).
DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def loaded() -> bool:
    return _C is not None


def cuda_compiled() -> bool:
    return _C is not None and bool(_C.cuda_compiled)


def runs_on(device: torch.device) -> bool:
    """Whether the built CUDA kernels can run on ``device``: binaries of an arch run on later minors of
    its major, and the PTX of the newest arch JIT-compiles for anything newer."""
    archs = [int(a) for a in str(_C.cuda_archs).split(",") if a.isdigit()]
    major, minor = torch.cuda.get_device_capability(device)
    cap = 10 * major + minor
    return "native" in str(_C.cuda_archs) or any(a // 10 == major and a <= cap for a in archs) or \
        (bool(archs) and cap > max(archs))


def address(t: torch.Tensor | None) -> int:
    """The data address of ``t`` (0 for None), as the extension takes it."""
    return 0 if t is None else t.data_ptr()


def runs_cuda_kernels(device: torch.device) -> bool:
    """Whether ``launch`` runs the CUDA kernels for tensors on ``device`` (the ops' CUDA-only paths follow it;
    the tests' CUDA execution model makes it true for CPU tensors)."""
    return device.type == "cuda"


def launch(kernel_name: str, device: torch.device, *args) -> None:
    """Calls ``_C.<kernel_name>_cpu`` or ``_cuda`` (the latter with the device index and current stream)."""
    if runs_cuda_kernels(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        getattr(_C, f"{kernel_name}_cuda")(*args, device.index if device.index is not None else
                                           torch.cuda.current_device(), stream)
    else:
        getattr(_C, f"{kernel_name}_cpu")(*args)
