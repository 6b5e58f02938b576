"""ganfast.augment: StyleGAN2-ADA's pipeline against the reference composition, its parameter distributions, the
ADA controller, DiffAugment."""
import functools
import importlib.util
import math
import operator

import pytest
import torch
from support import DEVICE, available_impls

from ganfast.augment import PRESETS, AdaController, AugmentPipe, DiffAugment
from ganfast.reference import augment as ref

FAMILIES = {"blit": 12, "geom": 12, "color": 6, "filter": 24, "noise": 6, "cutout": 6}  # preset: image size


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_p_zero_is_identity(preset):
    images = torch.randn(3, 3, 32, 32)
    out = AugmentPipe(preset, p=0.0)(images)
    assert torch.equal(out, images)


def _params(preset, size, seed=1, n=2, channels=3):  # seed 1: no image of these tests draws the identity
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


def _stylegan2_ada_draws(pipe: AugmentPipe, n: int, channels: int, height: int, width: int, device) -> dict:
    """StyleGAN2-ADA's parameters re-derived from its draw sequence (training/augment.py, AugmentPipe.forward),
    built independently in float64 from the drawn float32 numbers.

    Its rules: a transform with strength 0 draws nothing; an enabled one draws whatever p is (p = 0 too), its
    value(s) first and then its coin, rand(...) < strength · p evaluated in float32 (p is a float32 buffer there);
    the two rotations' coins use 1 − sqrt(clamp(1 − strength · p, 0, 1)), also in float32. Order: xflip,
    rotate90, xint, scale, rotate, aniso, rotate, xfrac; brightness, contrast, lumaflip, hue, saturation (hue and
    saturation only for more than one channel); the 4 filter bands (gain, coin); noise (|sigma|, coin, the noise
    itself); cutout (coin, then the centre). Only the element count of each draw matters, not its shape."""
    s, p = pipe.strength, torch.tensor(pipe.p, dtype=torch.float32, device=device)
    rand = lambda *shape: torch.rand(shape, device=device)
    randn = lambda *shape: torch.randn(shape, device=device)

    one = torch.ones(n, dtype=torch.float64, device=device)

    def gated(value, threshold, otherwise, *coin_shape):  # the coin is drawn after the value (an argument here)
        return torch.where(rand(n, *coin_shape) < threshold, value.double(), otherwise)

    def mat(rows):  # rows of (n,) tensors or numbers → (n, r, c) float64
        return torch.stack([torch.stack([v * one if isinstance(v, torch.Tensor) else one * v for v in row], -1)
                            for row in rows], -2)

    def rot(a):
        return mat([[a.cos(), -a.sin(), 0], [a.sin(), a.cos(), 0], [0, 0, 1]])

    geometric = []  # G_inv = product of these, left to right
    if s["xflip"] > 0:
        flip = gated(torch.floor(rand(n) * 2), s["xflip"] * p, 0)
        geometric.append(mat([[1 - 2 * flip, 0, 0], [0, 1, 0], [0, 0, 1]]))
    if s["rotate90"] > 0:
        geometric.append(rot(gated(torch.floor(rand(n) * 4), s["rotate90"] * p, 0) * math.pi / 2))
    if s["xint"] > 0:
        t = gated((rand(n, 2) * 2 - 1) * pipe.xint_max, s["xint"] * p, 0, 1)
        shift_x, shift_y = -torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height)
        geometric.append(mat([[1, 0, shift_x], [0, 1, shift_y], [0, 0, 1]]))
    if s["scale"] > 0:
        k = gated(torch.exp2(randn(n) * pipe.scale_std), s["scale"] * p, 1)
        geometric.append(mat([[1 / k, 0, 0], [0, 1 / k, 0], [0, 0, 1]]))
    rotate_coin = 1 - torch.sqrt((1 - s["rotate"] * p).clamp(0, 1))
    for step in ("rotate", "aniso", "rotate"):
        if step == "rotate" and s["rotate"] > 0:
            geometric.append(rot(gated((rand(n) * 2 - 1) * math.pi * pipe.rotate_max, rotate_coin, 0)))
        if step == "aniso" and s["aniso"] > 0:
            k = gated(torch.exp2(randn(n) * pipe.aniso_std), s["aniso"] * p, 1)
            geometric.append(mat([[1 / k, 0, 0], [0, k, 0], [0, 0, 1]]))
    if s["xfrac"] > 0:
        t = gated(randn(n, 2) * pipe.xfrac_std, s["xfrac"] * p, 0, 1)
        geometric.append(mat([[1, 0, -t[:, 0] * width], [0, 1, -t[:, 1] * height], [0, 0, 1]]))

    color = []  # C = product of these, right to left (the first drawn acts first)
    luma = torch.tensor([1, 1, 1, 0], dtype=torch.float64, device=device) / math.sqrt(3)
    along = torch.outer(luma, luma)
    eye = torch.eye(4, dtype=torch.float64, device=device)
    if s["brightness"] > 0:
        b = gated(randn(n) * pipe.brightness_std, s["brightness"] * p, 0)
        color.append(mat([[1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1]]))
    if s["contrast"] > 0:
        k = gated(torch.exp2(randn(n) * pipe.contrast_std), s["contrast"] * p, 1)
        color.append(mat([[k, 0, 0, 0], [0, k, 0, 0], [0, 0, k, 0], [0, 0, 0, 1]]))
    if s["lumaflip"] > 0:
        flip = gated(torch.floor(rand(n) * 2), s["lumaflip"] * p, 0)
        color.append(eye - 2 * along * flip[:, None, None])
    if s["hue"] > 0 and channels > 1:
        angle = gated((rand(n) * 2 - 1) * math.pi * pipe.hue_max, s["hue"] * p, 0)[:, None, None]
        cross = mat([[0, -luma[2], luma[1], 0], [luma[2], 0, -luma[0], 0], [-luma[1], luma[0], 0, 0], [0, 0, 0, 0]])
        color.append(eye + angle.sin() * cross + (1 - angle.cos()) * (cross @ cross))  # Rodrigues about luma
    if s["saturation"] > 0 and channels > 1:
        k = gated(torch.exp2(randn(n) * pipe.saturation_std), s["saturation"] * p, 1)[:, None, None]
        color.append(along + (eye - along) * k)

    expected = {"G_inv": None, "C": None, "band_gains": None, "noise": None, "cutout_center": None,
                "cutout_size": None}
    if geometric:
        expected["G_inv"] = functools.reduce(operator.matmul, geometric)
    if color:
        expected["C"] = functools.reduce(operator.matmul, color[::-1])
    if s["imgfilter"] > 0:
        power = torch.tensor([10, 1, 1, 1], dtype=torch.float64, device=device) / 13
        gains = torch.ones(n, 4, dtype=torch.float64, device=device)
        for band, band_strength in enumerate(pipe.imgfilter_bands):
            one_band = torch.ones(n, 4, dtype=torch.float64, device=device)
            one_band[:, band] = gated(torch.exp2(randn(n) * pipe.imgfilter_std), s["imgfilter"] * p * band_strength, 1)
            gains = gains * one_band / (power * one_band ** 2).sum(1, keepdim=True).sqrt()
        expected["band_gains"] = gains
    if s["noise"] > 0:
        sigma = gated(randn(n, 1, 1, 1).abs() * pipe.noise_std, s["noise"] * p, 0, 1, 1, 1)
        expected["noise"] = randn(n, channels, height, width).double() * sigma
    if s["cutout"] > 0:
        size = gated(torch.full([n, 2], pipe.cutout_size, device=device), s["cutout"] * p, 0, 1)
        expected["cutout_center"], expected["cutout_size"] = rand(n, 2), size
    return expected


DRAW_CASES = [("bgc", 0.3, 3), ("bgc", 1.0, 3), ("bgcfnc", 0.6, 3), ("bgcfnc", 0.6, 1), ("blit", 0.5, 3),
              ("geom", 0.8, 3), ("color", 0.4, 1), ("filter", 0.7, 3), ("noise", 0.9, 1), ("cutout", 0.5, 3),
              ("bgcfnc", 0.0, 3), (None, 0.45, 3)]


@pytest.mark.parametrize("device", sorted({"cpu", str(DEVICE)}))
@pytest.mark.parametrize("preset,p,channels", DRAW_CASES)
def test_draws_follow_stylegan2_ada(preset, p, channels, device):
    """Same seed, same parameters as StyleGAN2-ADA's AugmentPipe (to float rounding), and the generator left in
    the same state — also at p = 0, where StyleGAN2-ADA still draws (ganfast then applies nothing)."""
    n, height, width = 64, 10, 14
    strengths = {"xflip": 0.5, "rotate": 0.7, "aniso": 1, "hue": 2, "imgfilter": 0.9} if preset is None else None
    pipe = AugmentPipe(preset, p=p, strengths=strengths)
    if preset is None:
        pipe.imgfilter_bands = (1.0, 0.0, 0.5, 2.0)
    torch.manual_seed(1)
    expected = _stylegan2_ada_draws(pipe, n, channels, height, width, device)
    expected_next = torch.rand(8, device=device)
    torch.manual_seed(1)
    params = pipe.sample_params(n, channels, height, width, device)
    assert torch.equal(torch.rand(8, device=device), expected_next)  # the same number of draws
    if p == 0:
        assert all(getattr(params, name) is None for name in expected)
        return
    for name, value in expected.items():
        got = getattr(params, name)
        assert (got is None) == (value is None), name
        if value is not None:
            torch.testing.assert_close(got.double(), value.double(), rtol=1e-5, atol=1e-5,
                                       msg=lambda message: f"{name}: {message}")
    assert any(value is not None for value in expected.values())


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
