"""Helpers shared by the tests (conftest.py sets the environment before this is imported)."""
import torch

from ganfast._dispatch import common_reasons

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
