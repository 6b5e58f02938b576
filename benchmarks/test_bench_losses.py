"""Gradient-penalty pass benchmarks: a whole discriminator step with R1 (ganfast's StyleGAN2 D) and with WGAN-GP
(SNGAN-like ResNet D), ganfast vs the eager reference, plus the penalty pass alone; and the fused per-sample
reduction op (ganfast.ops.grad_penalty, forward + backward) vs the reference and torch.compile(reference).

    pass_ = "d_step":   D forward on reals and fakes + logistic (or Wasserstein) loss + penalty + backward
    pass_ = "penalty":  the penalty pass alone (D forward on the penalty's inputs, the create_graph gradient,
                        the penalty, backward into D's parameters); its share of the step is
                        time(penalty) / time(d_step) of the same shape, dtype and variant.

Variants: "ganfast" runs D on ganfast's ops and takes the penalty from ganfast.losses; "ref" runs the same D
(same weights) on the reference ops (StyleGAN2 D: under ``ganfast.use_impl("ref")``; SNGAN-like D: built from
ganfast.reference) and takes ganfast.reference.losses. torch.compile(reference) is
not benchmarked here: the step differentiates through a gradient (create_graph=True), which compiled graphs do
not support (double backward through AOTAutograd).
On a GPU: D with R1 at 64² and 256², batch 32; WGAN-GP at 32², batch 64 (float32). On a CPU: tiny shapes.
"""

import pytest
import torch
import torch.nn.functional as F
from bench_support import DEVICE, ON_GPU, synced, variants

import ganfast
from ganfast import losses
from ganfast.models import StyleGAN2Discriminator
from ganfast.ops import bias_act, grad_penalty
from ganfast.reference import bias_act as bias_act_ref
from ganfast.reference import losses as losses_ref

R1_RESOLUTIONS = [64, 256] if ON_GPU else [8]
R1_BATCH = 32 if ON_GPU else 2
GP_RESOLUTION, GP_BATCH, GP_CHANNELS = (32, 64, 128) if ON_GPU else (8, 2, 8)
VARIANTS = ["ganfast", "ref"]
OP_SHAPES = [(32, 3, 64, 64), (32, 3, 256, 256)] if ON_GPU else [(4, 3, 16, 16)]
OP_DTYPES = [torch.float32, torch.bfloat16] if ON_GPU else [torch.float32]
_compiled_grad_penalty_ref = torch.compile(losses_ref.grad_penalty)
OP_VARIANTS = variants({"ganfast": grad_penalty, "ref": losses_ref.grad_penalty,
                        "compiled_ref": _compiled_grad_penalty_ref})


class _BiasAct(torch.nn.Module):
    """Bias + activation with ganfast's kernel or the reference, so both variants share weights and math."""

    def __init__(self, channels, act, gain, use_ganfast):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(channels))
        self.act, self.gain, self.fn = act, gain, bias_act if use_ganfast else bias_act_ref

    def forward(self, x):
        return self.fn(x, self.bias, act=self.act, gain=self.gain)


class SNGANLikeD(torch.nn.Module):
    """The SNGAN/WGAN-GP CIFAR ResNet critic layout (an optimised first block, two downsampling residual
    blocks, two plain ones, ReLU, global sum, linear), bias + ReLU fused where a conv output meets a ReLU.
    Spectral norm is left out: WGAN-GP critics do not use it, and ganfast's lands separately."""

    def __init__(self, channels, use_ganfast):
        super().__init__()
        relu = lambda: _BiasAct(channels, "relu", 1.0, use_ganfast)  # noqa: E731
        conv = lambda cin=channels: torch.nn.Conv2d(cin, channels, 3, padding=1, bias=False)  # noqa: E731
        self.block0 = torch.nn.ModuleList([conv(3), relu(), conv(), torch.nn.Conv2d(3, channels, 1)])
        self.blocks = torch.nn.ModuleList([torch.nn.ModuleList([conv(), relu(), conv(),
                                                                torch.nn.Conv2d(channels, channels, 1)])
                                           for _ in range(2)] + [torch.nn.ModuleList([conv(), relu(), conv()])
                                                                 for _ in range(2)])
        self.fc = torch.nn.Linear(channels, 1)

    def forward(self, x):
        c0, act, c1, sc = self.block0
        x = F.avg_pool2d(c1(act(c0(x))), 2) + sc(F.avg_pool2d(x, 2))
        for block in self.blocks:
            h = block[2](block[1](block[0](F.relu(x))))
            if len(block) == 4:  # downsampling block with a learned 1×1 shortcut
                x = F.avg_pool2d(h, 2) + F.avg_pool2d(block[3](x), 2)
            else:
                x = x + h
        return self.fc(F.relu(x).sum(dim=(2, 3)))


def _pair(make):
    """(ganfast D, reference D) with the same weights."""
    torch.manual_seed(0)
    fast = make(True).to(DEVICE)
    ref = make(False).to(DEVICE)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def _r1_step(D, reals, fakes, penalty_fn, with_logits, gamma=10.0):
    x = reals.detach().requires_grad_(True)
    real_logits = D(x)
    loss = gamma / 2 * penalty_fn(real_logits, x)
    if with_logits:
        loss = loss + losses_ref.d_loss("logistic", real_logits, D(fakes))
    loss.backward()
    return loss


def _gp_step(D, reals, fakes, eps, penalty_fn, with_logits, lam=10.0):
    loss = lam * penalty_fn(D, reals, fakes, eps)
    if with_logits:
        loss = loss + losses_ref.d_loss("wasserstein", D(reals), D(fakes))
    loss.backward()
    return loss


def _assert_same_grads(step_fast, step_ref, fast, ref):
    """Correctness before timing: one step of each variant sends the same gradients into D."""
    for module, step in ((fast, step_fast), (ref, step_ref)):
        module.zero_grad(set_to_none=True)
        step()
    for p, q in zip(fast.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-4)


def _with_impl(impl, fn):
    def run():
        with ganfast.use_impl(impl):
            return fn()
    return run


@pytest.mark.parametrize("resolution", R1_RESOLUTIONS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("pass_", ["d_step", "penalty"])
def test_d_step_r1(benchmark, resolution, variant, pass_):
    """ganfast.models.StyleGAN2Discriminator (config-F widths on a GPU): ganfast's ops vs the same module on the
    reference ops (``use_impl("ref")``), with the matching R1."""
    torch.manual_seed(0)
    sizes = dict(channel_base=16384, channel_max=512) if ON_GPU else dict(channel_base=64, channel_max=16)
    D = StyleGAN2Discriminator(img_resolution=resolution, img_channels=3, **sizes).to(DEVICE)
    reals = torch.randn(R1_BATCH, 3, resolution, resolution, device=DEVICE)
    fakes = torch.randn_like(reals)
    with_logits = pass_ == "d_step"
    steps = {"ganfast": lambda: _r1_step(D, reals, fakes, losses.r1_penalty, with_logits),
             "ref": _with_impl("ref", lambda: _r1_step(D, reals, fakes, losses_ref.r1_penalty, with_logits))}
    grads = []
    for step in (steps["ganfast"], steps["ref"]):  # correctness before timing: the same gradients into D
        D.zero_grad(set_to_none=True)
        step()
        grads.append([p.grad.clone() for p in D.parameters() if p.grad is not None])
    for g_fast, g_ref in zip(*grads, strict=True):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-3, atol=1e-4)
    benchmark.group = f"D step R1 {pass_} {R1_BATCH}x3x{resolution}x{resolution}"
    benchmark.extra_info.update(variant=variant, pass_=pass_, batch=R1_BATCH, resolution=resolution)
    benchmark(synced(steps[variant]))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("pass_", ["d_step", "penalty"])
def test_d_step_wgan_gp(benchmark, variant, pass_):
    fast, ref = _pair(lambda use_ganfast: SNGANLikeD(GP_CHANNELS, use_ganfast))
    reals = torch.randn(GP_BATCH, 3, GP_RESOLUTION, GP_RESOLUTION, device=DEVICE)
    fakes = torch.randn_like(reals)
    eps = torch.rand(GP_BATCH, device=DEVICE)
    with_logits = pass_ == "d_step"
    steps = {"ganfast": lambda: _gp_step(fast, reals, fakes, eps, losses.wgan_gp, with_logits),
             "ref": lambda: _gp_step(ref, reals, fakes, eps, losses_ref.wgan_gp, with_logits)}
    _assert_same_grads(steps["ganfast"], steps["ref"], fast, ref)
    benchmark.group = f"D step WGAN-GP {pass_} {GP_BATCH}x3x{GP_RESOLUTION}x{GP_RESOLUTION}"
    benchmark.extra_info.update(variant=variant, pass_=pass_, batch=GP_BATCH, resolution=GP_RESOLUTION)
    benchmark(synced(steps[variant]))


@pytest.mark.parametrize("shape", OP_SHAPES, ids=lambda shape: "x".join(map(str, shape)))
@pytest.mark.parametrize("dtype", OP_DTYPES, ids=str)
@pytest.mark.parametrize("variant", list(OP_VARIANTS))
def test_grad_penalty_op(benchmark, shape, dtype, variant):
    """The WGAN-GP reduction of an input gradient: (‖g_b‖ − 1)² per sample, then its backward into g."""
    g = torch.randn(shape, device=DEVICE, dtype=dtype, requires_grad=True)
    fn = OP_VARIANTS[variant]

    def call():
        term, _ = fn(g, 1.0)
        return torch.autograd.grad(term.sum(), g)

    torch.testing.assert_close(call()[0], torch.autograd.grad(losses_ref.grad_penalty(g, 1.0)[0].sum(), g)[0],
                               rtol=2e-2, atol=1e-3)
    benchmark.group = f"grad_penalty fwd_bwd {'x'.join(map(str, shape))} {dtype}"
    benchmark.extra_info.update(bytes=3 * g.numel() * g.element_size(), variant=variant)  # read g twice, write dg
    benchmark(synced(call))
