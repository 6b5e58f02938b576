"""Test setup: the Triton interpreter on machines without a GPU, and shared helpers."""
import os

import torch

if not torch.cuda.is_available():
    # Must be set before any @triton.jit function is created (ganfast.triton is imported lazily).
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from ganfast._dispatch import common_reasons  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_impls(device=DEVICE):
    """The non-reference impls that can run on ``device`` here."""
    return [impl for impl in ("ext", "triton") if not common_reasons(impl, torch.device(device))]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64; NaN anywhere makes it inf (NaN never passes)."""
    out, ref = out.double(), ref.double()
    if torch.isnan(out).any() or torch.isnan(ref).any():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
