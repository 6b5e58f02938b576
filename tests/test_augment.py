"""ganfast.augment: StyleGAN2-ADA's pipeline against the reference composition, its parameter distributions, the
ADA controller, DiffAugment."""
import importlib.util
import math

import pytest
import torch
from support import available_impls

from ganfast.augment import PRESETS, AdaController, AugmentPipe, DiffAugment
from ganfast.reference import augment as ref

FAMILIES = {"blit": 12, "geom": 12, "color": 6, "filter": 24, "noise": 6, "cutout": 6}  # preset: image size


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_p_zero_is_identity(preset):
    images = torch.randn(3, 3, 32, 32)
    out = AugmentPipe(preset, p=0.0)(images)
    assert torch.equal(out, images)


def _params(preset, size, seed=0, n=2, channels=3):
    torch.manual_seed(seed)
    return AugmentPipe(preset, p=1.0).sample_params(n, channels, size, size, "cpu")


KERNELS = ("blit", "geom", "color")  # the families that run on ganfast's ops (the others are reference torch ops)
CASES = [(family, "ext") for family in FAMILIES] + [(family, "triton") for family in KERNELS]


@pytest.mark.parametrize("family,impl", CASES)
def test_family_matches_reference(family, impl):
    """Fused pipeline (geometric and colour passes on ganfast's ops; the other stages are the reference's own torch
    ops) against the reference composition, forward and input gradient, same drawn parameters."""
    if impl not in available_impls("cpu"):
        pytest.skip(f"{impl} not available here")
    if impl == "triton" and family != "color" and importlib.util.find_spec("ganfast.triton.affine_resample") is None:
        pytest.skip("no Triton kernel of the fused geometric pass in this checkout (ganfast/triton/affine_resample.py)")
    size = 8 if impl == "triton" else FAMILIES[family]
    n = 1 if impl == "triton" else 2
    params = _params(family, size, n=n)
    pipe = AugmentPipe(family, p=1.0, impl=impl)
    x = torch.randn(n, 3, size, size, dtype=torch.float64, requires_grad=True)
    out, expected = pipe.apply(x, params), ref.apply(x, params)
    assert not torch.equal(expected, x.detach())  # p = 1 changed the images
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    dy = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, x, dy)[0], torch.autograd.grad(expected, x, dy)[0],
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_gradcheck(family):
    """gradcheck and gradgradcheck in the images, float64,
    in fast mode (random projections of the Jacobian) to keep the suite quick."""
    channels = 3 if family == "color" else 1
    size = {"color": 3, "filter": 22, "blit": 8, "geom": 8}.get(family, 6)
    params = _params(family, size, n=1, channels=channels)
    x = torch.randn(1, channels, size, size, dtype=torch.float64, requires_grad=True)
    pipe = AugmentPipe(family, p=1.0, impl="ext")
    fn = lambda x: pipe.apply(x, params)
    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


def test_blit_transforms_move_pixels():
    """Integer translation is exact; xflip and rotate90 pass through the (not quite symmetric) symlet-6 filters
    twice, so a smooth image comes out flipped / turned to within a few percent."""
    i = torch.arange(16, dtype=torch.float64)
    x = (torch.sin(i * 0.5 + 0.3)[:, None] * torch.cos(i * 0.3 - 0.2)[None, :] + 0.1 * i[None, :])[None, None]
    pipe = AugmentPipe(None, p=1.0)
    shift = ref.translate2d(torch.tensor([-3.0]), torch.tensor([2.0])).double()
    out = pipe.apply(x, ref.AugmentParams(G_inv=shift))
    torch.testing.assert_close(out[..., :-2, 3:], x[..., 2:, :-3], atol=1e-6, rtol=0)
    flip = ref.scale2d(torch.tensor([-1.0]), torch.tensor([1.0])).double()
    assert (pipe.apply(x, ref.AugmentParams(G_inv=flip)) - x.flip(3)).abs().max() < 0.06
    rot = ref.rotate2d(torch.tensor([-math.pi / 2])).double()
    assert (pipe.apply(x, ref.AugmentParams(G_inv=rot)) - torch.rot90(x, -1, (2, 3))).abs().max() < 0.06


def test_parameter_distributions():
    n = 4000
    torch.manual_seed(0)
    g = AugmentPipe(None, p=1.0, strengths={"xflip": 1}).sample_params(n, 3, 16, 16, "cpu").G_inv
    flipped = (g[:, 0, 0] < 0).double().mean().item()
    assert abs(flipped - 0.5) < 4 * math.sqrt(0.25 / n)
    g = AugmentPipe(None, p=0.5, strengths={"rotate90": 1}).sample_params(n, 3, 16, 16, "cpu").G_inv
    quarter = torch.round(torch.atan2(g[:, 1, 0], g[:, 0, 0]) / (math.pi / 2)).remainder(4)
    counts = torch.bincount(quarter.long(), minlength=4).double() / n
    # applied with probability 0.5, then uniform over 4 quarter turns: 0 turns 0.5 + 0.125, others 0.125
    torch.testing.assert_close(counts, torch.tensor([0.625, 0.125, 0.125, 0.125], dtype=torch.float64), atol=0.03,
                               rtol=0)
    g = AugmentPipe(None, p=1.0, strengths={"scale": 1}).sample_params(n, 3, 16, 16, "cpu").G_inv
    log_scale = -torch.log2(g[:, 0, 0])
    assert abs(log_scale.std().item() - 0.2) < 0.01 and abs(log_scale.mean().item()) < 0.01
    g = AugmentPipe(None, p=1.0, strengths={"xint": 1}).sample_params(n, 3, 16, 16, "cpu").G_inv
    t = g[:, :2, 2]
    assert torch.equal(t, t.round()) and t.abs().max() <= 2 and (t == 0).double().mean() < 0.4
    for p in (0.3, 0.8):  # two rotations, each with probability 1 − sqrt(1 − p): some rotation with probability p
        g = AugmentPipe(None, p=p, strengths={"rotate": 1}).sample_params(n, 3, 16, 16, "cpu").G_inv
        rotated = (g[:, 0, 1].abs() > 0).double().mean().item()
        assert abs(rotated - p) < 4 * math.sqrt(p * (1 - p) / n)
    g = AugmentPipe(None, p=1.0, strengths={"rotate": 1}).sample_params(n, 3, 16, 16, "cpu").G_inv
    angle = torch.atan2(g[:, 1, 0], g[:, 0, 0])  # the sum of two uniform angles on the circle: uniform again
    hist = torch.histc(angle, bins=8, min=-math.pi, max=math.pi) / n
    assert (hist - 1 / 8).abs().max() < 0.03
    c = AugmentPipe(None, p=1.0, strengths={"brightness": 1}).sample_params(n, 3, 4, 4, "cpu").C
    assert abs(c[:, 0, 3].std().item() - 0.2) < 0.01
    c = AugmentPipe(None, p=1.0, strengths={"lumaflip": 1}).sample_params(n, 3, 4, 4, "cpu").C
    flipped = (torch.linalg.det(c[:, :3, :3]) < 0).double().mean().item()
    assert abs(flipped - 0.5) < 4 * math.sqrt(0.25 / n)
    params = AugmentPipe(None, p=0.5, strengths={"cutout": 1}).sample_params(n, 3, 4, 4, "cpu")
    assert abs((params.cutout_size[:, 0] > 0).double().mean().item() - 0.5) < 4 * math.sqrt(0.25 / n)


def test_color_matrix_is_orthogonal_for_hue_and_keeps_luma():
    torch.manual_seed(0)
    c = AugmentPipe(None, p=1.0, strengths={"hue": 1}).sample_params(64, 3, 4, 4, "cpu").C[:, :3, :3]
    torch.testing.assert_close(c @ c.transpose(1, 2), torch.eye(3).expand(64, 3, 3), atol=1e-5, rtol=0)
    grey = torch.ones(3)
    torch.testing.assert_close(c @ grey, grey.expand(64, 3), atol=1e-5, rtol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="preset"):
        AugmentPipe("nope")
    with pytest.raises(ValueError, match="strengths"):
        AugmentPipe(strengths={"wobble": 1})
    with pytest.raises(ValueError, match="p must be"):
        AugmentPipe(p=1.5)
    with pytest.raises(ValueError, match="images"):
        AugmentPipe(p=0.5)(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        AugmentPipe("color", p=1.0)(torch.randn(2, 2, 8, 8))
    with pytest.raises(ValueError, match="target"):
        AdaController(AugmentPipe(), target=1.5)


def _run_controller(sign: float, steps: int = 40, batch: int = 64) -> list[float]:
    """A planted D: its logits on reals are positive (overfit) or negative with probability 0.9."""
    pipe = AugmentPipe(p=0.5)
    ada = AdaController(pipe, target=0.6, interval=4, speed_kimg=1.0)
    ps = []
    for _ in range(steps):
        logits = sign * torch.where(torch.rand(batch) < 0.9, 1.0, -1.0)
        ada.accumulate(logits.sign().sum().item(), len(logits))
        ada.update()
        ps.append(pipe.p)
    return ps


def test_controller_moves_p_with_overfitting():
    up, down = _run_controller(+1), _run_controller(-1)
    assert up[-1] > 0.5 and up == sorted(up) and up[-1] < 1
    assert down[-1] < 0.5 and down == sorted(down, reverse=True) and down[-1] >= 0
    # speed: 4 steps of 64 images per adjustment, 256 / 1000 per adjustment at speed_kimg = 1
    assert up[3] == pytest.approx(0.5 + 0.256) and up[2] == 0.5


def test_controller_state_round_trip():
    pipe = AugmentPipe(p=0.0)
    ada = AdaController(pipe, interval=3)
    for _ in range(5):
        ada.accumulate(8.0, 8)
        ada.update()
    other = AdaController(AugmentPipe(p=0.0), interval=3)
    other.load_state_dict(ada.state_dict())
    assert other.state_dict() == ada.state_dict() and other.pipe.p == pipe.p > 0


def test_diffaugment():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 16, 16, requires_grad=True)
    out = DiffAugment()(x)
    assert out.shape == x.shape
    assert (out == 0).flatten(1).any(1).all()  # every image has its cutout box (and shifted-in zeros)
    out.sum().backward()
    assert x.grad is not None
    shifted = DiffAugment("translation")(torch.ones(256, 1, 16, 16))
    zeros = (shifted == 0).flatten(1).sum(1)
    assert zeros.max() <= 16 * 16 - 14 * 14 and (zeros == 0).any() and (zeros > 0).any()
    with pytest.raises(ValueError, match="policy"):
        DiffAugment("color,wobble")
