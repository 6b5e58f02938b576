"""spectral_norm benchmarks: ganfast vs torch's hook and parametrization flavours vs torch.compile, per weight and for
a BigGAN-like discriminator with 40 spectrally normalised layers.

Timed work, "sn": what spectral normalization adds to a training step, i.e. the power iteration, σ and W/σ for
every weight, plus the backward of Σ⟨W/σ, G⟩ into W. "d_step": a whole D forward+backward on a batch.
On a GPU: weights 64×27 up to 1024×4608 and a D with 64 base channels at 64 px, batch 32; on a CPU tiny shapes, so
that CI proves the suite runs. extra_info["bytes"] is the power iteration's floor: two reads of W per iteration.
"""
import pytest
import torch
from bench_support import DEVICE, ON_GPU, sweep, synced, variants
from torch import nn

import ganfast
from ganfast.nn.utils import spectral_norm_step

WEIGHTS = sweep([(64, 27), (128, 576), (256, 1152), (512, 2304), (512, 4608), (1024, 4608)] if ON_GPU else
               [(64, 27), (128, 576)])
CH, RES, BATCH = (64, 64, 32) if ON_GPU else (2, 8, 2)
VARIANTS = ["ganfast", "ganfast_step", "torch_hook", "torch_param", "compiled_torch_hook"]
# Compiling the 40-weight SN part takes ~45 s on a 2-core CPU: there the D-level suites leave it out. The whole D
# step is never compiled: torch.compile of torch's hook-SN D fails on D(real) + D(fake) before one backward
# ("modified by an inplace operation", torch 2.13), and compiling it took over 3 minutes on the CPU.
D_VARIANTS = variants(VARIANTS if ON_GPU else VARIANTS[:-1])


def _sn_modules(model):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _apply(model, variant):
    """``model`` (fp32, on DEVICE) with every conv/linear weight spectrally normalised the variant's way."""
    for m in _sn_modules(model):
        if variant == "torch_param":
            torch.nn.utils.parametrizations.spectral_norm(m)
        else:
            torch.nn.utils.spectral_norm(m)
    if variant.startswith("ganfast"):
        ganfast.convert_spectral_norm(model)
    return model.to(DEVICE)


def _sn_part(model, variant):
    """A callable running the SN part of a training step for every SN weight of ``model``."""
    modules = _sn_modules(model)
    hooks = [next((h for h in m._forward_pre_hooks.values() if hasattr(h, "compute_weight")), None)
             for m in modules]
    weights = [m.parametrizations.weight.original if variant == "torch_param" else m.weight_orig for m in modules]
    grads = [torch.randn_like(w) for w in weights]

    def normalised():
        if variant == "torch_param":
            return [m.weight for m in modules]
        return [h.compute_weight(m, True) for h, m in zip(hooks, modules)]

    if variant == "compiled_torch_hook":
        normalised = torch.compile(normalised)

    def run():
        if variant == "ganfast_step":
            spectral_norm_step(model)
        total = sum((w * g).sum() for w, g in zip(normalised(), grads))
        return torch.autograd.grad(total, weights)
    return run


def _discriminator():
    """40 SN layers: 13 blocks of (3×3 conv, 3×3 conv (stride 2 in four blocks), 1×1 conv), then a linear head."""
    widths = [1, 1, 2, 2, 4, 4, 8, 8, 8, 16, 16, 16, 16]
    layers, c_in = [], 3
    for i, width in enumerate(widths):
        c_out = width * CH
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.2),
                   nn.Conv2d(c_out, c_out, 3, stride=2 if i in (1, 3, 5, 7) else 1, padding=1), nn.LeakyReLU(0.2),
                   nn.Conv2d(c_out, c_out, 1), nn.LeakyReLU(0.2)]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 1)]
    return nn.Sequential(*layers)


def _floor_bytes(model):
    return sum(2 * m.weight_orig.numel() * 4 if hasattr(m, "weight_orig") else
               2 * m.parametrizations.weight.original.numel() * 4 for m in _sn_modules(model))


@pytest.mark.parametrize("variant", variants(VARIANTS))
@pytest.mark.parametrize("shape", WEIGHTS, ids=lambda s: "x".join(map(str, s)))
def test_sn_per_weight(benchmark, shape, variant):
    """One weight (a Linear with an h × w matrix): the SN part only."""
    torch.manual_seed(0)
    model = _apply(nn.Sequential(nn.Linear(shape[1], shape[0])), variant)
    benchmark.group = f"spectral_norm sn {shape[0]}x{shape[1]}"
    benchmark.extra_info.update(bytes=_floor_bytes(model), variant=variant)
    benchmark(synced(_sn_part(model, variant)))


def test_sn_variants_agree():
    """Correctness first: after one SN part, the hook-flavour variants hold the same u, v (torch_param draws the same
    u, v but runs 15 iterations at registration, so it is checked in tests/test_spectral_norm.py instead)."""
    states = {}
    for variant in D_VARIANTS:
        if variant != "torch_param":
            torch.manual_seed(0)
            model = _apply(_discriminator(), variant)
            _sn_part(model, variant)()
            states[variant] = model.state_dict()
    for variant, state in states.items():
        for key, value in states["torch_hook"].items():
            torch.testing.assert_close(state[key], value, rtol=1e-4, atol=1e-5, msg=f"{variant} {key}")


@pytest.mark.parametrize("variant", D_VARIANTS)
def test_sn_discriminator(benchmark, variant):
    """The SN part for all 40 weights of the BigGAN-like D (ganfast_step: one launch for all of them)."""
    torch.manual_seed(0)
    model = _apply(_discriminator(), variant)
    benchmark.group = f"spectral_norm sn biggan_d ch{CH}"
    benchmark.extra_info.update(bytes=_floor_bytes(model), variant=variant, weights=len(_sn_modules(model)))
    benchmark(synced(_sn_part(model, variant)))


@pytest.mark.parametrize("variant", VARIANTS[:-1])
def test_d_step(benchmark, variant):
    """A whole D forward+backward (real and fake batch, as in a GAN D step) on the BigGAN-like D."""
    torch.manual_seed(0)
    model = _apply(_discriminator(), variant)
    real = torch.randn(BATCH, 3, RES, RES, device=DEVICE)
    fake = torch.randn(BATCH, 3, RES, RES, device=DEVICE)
    params = list(model.parameters())

    def step():
        if variant == "ganfast_step":
            spectral_norm_step(model)
        loss = torch.nn.functional.softplus(-model(real)).mean()
        if variant == "ganfast_step":
            spectral_norm_step(model)
        loss = loss + torch.nn.functional.softplus(model(fake)).mean()
        return torch.autograd.grad(loss, params)
    benchmark.group = f"spectral_norm d_step biggan_d ch{CH} {RES}px b{BATCH}"
    benchmark.extra_info.update(variant=variant)
    benchmark(synced(step))
