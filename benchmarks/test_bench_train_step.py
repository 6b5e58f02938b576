"""Whole training steps of ganfast's StyleGAN2 (config-F widths on a GPU): one D step (logistic loss + R1, lazy
regularisation on) and one G step (non-saturating loss + path length), each with its optimiser step, on ganfast's
kernels ("ganfast") vs the same models on the reference ops ("ref", ``use_impl("ref")``)."""
import pytest
import torch
from bench_support import DEVICE, ON_GPU, synced

import ganfast
from ganfast import losses
from ganfast.models import StyleGAN2Discriminator, StyleGAN2Generator
from ganfast.train import step

RESOLUTIONS = [32, 128] if ON_GPU else [8]
BATCH = 32 if ON_GPU else 2
SIZES = dict(channel_base=16384, channel_max=512) if ON_GPU else dict(channel_base=64, channel_max=16)
Z_DIM = 512 if ON_GPU else 16


def _models(resolution):
    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=Z_DIM, w_dim=Z_DIM, img_resolution=resolution, img_channels=3, **SIZES).to(DEVICE)
    D = StyleGAN2Discriminator(img_resolution=resolution, img_channels=3, **SIZES).to(DEVICE)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.0, 0.99))
    return G, D, opt_g, opt_d


@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("variant", ["ganfast", "ref"])
@pytest.mark.parametrize("which", ["D", "G"])
def test_train_step(benchmark, resolution, variant, which):
    G, D, opt_g, opt_d = _models(resolution)
    real = torch.randn(BATCH, 3, resolution, resolution, device=DEVICE)
    z = torch.randn(BATCH, Z_DIM, device=DEVICE)
    path_length = losses.PathLengthPenalty().to(DEVICE)

    def run():
        with ganfast.use_impl(None if variant == "ganfast" else "ref"):
            if which == "D":
                return step.d_step(G, D, opt_d, real, z, r1_gamma=10.0, regularize=True)
            return step.g_step(G, D, opt_g, z, path_length=path_length, pl_weight=2.0, regularize=True)
    stats = run()
    assert all(torch.isfinite(torch.tensor(float(v))) for v in stats.values())
    benchmark.group = f"{which} step {BATCH}x3x{resolution}x{resolution}"
    benchmark.extra_info.update(variant=variant, images=BATCH)
    benchmark(synced(run))
