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


def assert_layout_parity(out: torch.Tensor, ref: torch.Tensor, x: torch.Tensor, layout: str,
                         tol: float = 1e-12) -> None:
    """out matches ref, keeps channels_last when x had it, and sends the same gradient into x for a random
    cotangent."""
    assert rel_err(out, ref) < tol
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)
    dy = torch.randn_like(ref)
    assert rel_err(torch.autograd.grad(out, x, dy)[0], torch.autograd.grad(ref, x, dy)[0]) < tol
