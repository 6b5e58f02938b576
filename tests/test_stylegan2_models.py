"""StyleGAN2 generator and discriminator: shapes, conditioning, truncation, w_avg tracking, ganfast ops vs the
reference ops, R1 and path-length double backward through them, per-sample noise, and argument errors."""
import pytest
import torch
from support import rel_err

import ganfast
from ganfast.models import StyleGAN2Discriminator, StyleGAN2Generator
from ganfast.nn.noise import per_sample_noise


def _pair(**kwargs):
    torch.manual_seed(0)
    return StyleGAN2Generator(**kwargs), StyleGAN2Discriminator(
        **{k: v for k, v in kwargs.items() if k in ("img_resolution", "img_channels", "c_dim")})


@pytest.mark.parametrize("resolution,channels,c_dim", [(16, 1, 0), (32, 3, 5)])
def test_shapes_and_conditioning(resolution, channels, c_dim):
    G, D = _pair(img_resolution=resolution, img_channels=channels, c_dim=c_dim)
    z = torch.randn(4, G.z_dim)
    c = torch.eye(c_dim)[torch.arange(4) % c_dim] if c_dim else None
    img = G(z, c)
    assert img.shape == (4, channels, resolution, resolution) and torch.isfinite(img).all()
    assert D(img, c).shape == (4, 1)
    if c_dim:
        with pytest.raises(ValueError, match="class labels"):
            G(z)
        assert rel_err(D(img, c.roll(1, 0)), D(img, c)) > 1e-3  # the label changes the logits


def test_truncation_and_w_avg():
    G, _ = _pair()
    z = torch.randn(4, G.z_dim)
    ws = G.mapping(z)  # training mode: w_avg follows the batches
    assert G.mapping.w_avg.abs().sum() > 0
    G.eval()  # eval mode: it stays put
    expected = G.mapping.w_avg.clone()
    G.mapping(torch.randn(4, G.z_dim))
    torch.testing.assert_close(G.mapping.w_avg, expected, rtol=0, atol=0)
    truncated = G.mapping(z, truncation_psi=0)
    torch.testing.assert_close(truncated, expected.expand_as(truncated))
    half = G.mapping(z, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(half[:, :2], expected.lerp(ws[:, :2], 0.5))
    torch.testing.assert_close(half[:, 2:], ws[:, 2:])


def test_ganfast_ops_match_reference_ops():
    G, D = _pair()
    z = torch.randn(4, G.z_dim)
    img = G(z, noise_mode="const")
    with ganfast.use_impl("ref"):
        img_ref = G(z, noise_mode="const")
        logits_ref = D(img_ref)
    assert rel_err(img, img_ref) < 1e-5
    assert rel_err(D(img), logits_ref) < 1e-5


def test_r1_and_path_length_double_backward():
    G, D = _pair()
    real = torch.randn(4, 1, 16, 16, requires_grad=True)
    r1 = ganfast.losses.r1_penalty(D(real), real)
    r1.backward()  # every weight shapes ∇_x D (the last bias does not, so it gets no gradient)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for name, p in D.named_parameters()
               if name.endswith("weight")), [name for name, p in D.named_parameters() if p.grad is None]
    ws = G.mapping(torch.randn(4, G.z_dim)).detach().requires_grad_()
    img = G.synthesis(ws, noise_mode="const")
    (grad,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), ws, create_graph=True)
    grad.square().sum().backward()
    assert G.blocks[-1].conv1.weight.grad.abs().sum() > 0


def test_w_avg_moves_in_the_d_step_only():
    """As in StyleGAN2-ADA's training loop: the D step's generation moves w_avg; the G step, path-length pass
    included, does not."""
    from ganfast.train.step import d_step, g_step
    G, D = _pair()
    G.train()
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    before = G.mapping.w_avg.clone()
    g_step(G, D, opt_g, torch.randn(4, G.z_dim), path_length=ganfast.losses.PathLengthPenalty(), pl_weight=2.0,
           regularize=True)
    torch.testing.assert_close(G.mapping.w_avg, before, rtol=0, atol=0)
    d_step(G, D, opt_d, torch.rand(4, 1, 16, 16) * 2 - 1, torch.randn(4, G.z_dim))
    assert not torch.equal(G.mapping.w_avg, before)


def test_bf16_training_steps(tmp_path):
    """Two Trainer steps under bf16 autocast with R1 and path length (double backward through the ops in bf16):
    finite losses and gradients, the synthesis layers ran in bf16."""
    import math

    from ganfast.data import load_dataset
    from ganfast.train import TrainConfig, Trainer
    G, D = _pair()
    trainer = Trainer(G, D, load_dataset("digits"), str(tmp_path / "run"),
                      TrainConfig(batch_size=4, num_fixed=4, r1_gamma=0.5, r1_interval=1, pl_weight=2.0, pl_interval=1,
                                  bf16=True),
                      progress=False)
    dtypes = set()
    hook = G.blocks[-1].conv1.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
    stats = [trainer.train_step() for _ in range(2)]
    hook.remove()
    assert dtypes == {torch.bfloat16}
    for record in stats:
        for key in ("loss_d", "loss_g", "r1", "pl", "grad_norm_d", "grad_norm_g"):
            assert math.isfinite(record[key]), (key, record)
        assert not record["skipped_d"] and not record["skipped_g"]
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in G.parameters())


def test_per_sample_noise_is_batch_independent():
    G, _ = _pair()
    z = torch.randn(3, G.z_dim)
    with torch.no_grad():
        for layer in (G.blocks[-1].conv0, G.blocks[-1].conv1):
            layer.noise_strength.fill_(0.5)
        with per_sample_noise([torch.Generator().manual_seed(s) for s in range(3)]):
            batch = G(z, noise_mode="random")
        with per_sample_noise([torch.Generator().manual_seed(2)]):
            single = G(z[2:], noise_mode="random")
        plain = G(z, noise_mode="random")
    torch.testing.assert_close(single, batch[2:])
    assert rel_err(plain, batch) > 1e-3
    with pytest.raises(ValueError, match="generators"), per_sample_noise([torch.Generator()]):
        G(z, noise_mode="random")


def test_errors():
    with pytest.raises(ValueError, match="img_resolution"):
        StyleGAN2Generator(img_resolution=24)
    with pytest.raises(ValueError, match="img_resolution"):
        StyleGAN2Discriminator(img_resolution=2)
    _, D = _pair()
    with pytest.raises(ValueError, match="minibatch-std group"):
        D(torch.randn(6, 1, 16, 16))
