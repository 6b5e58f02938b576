"""ganfast.losses: float64 parity with ganfast.reference.losses (penalty values and the gradients they send into
a critic's parameters, for a plain torch critic and one built from ganfast ops), the adversarial losses against
their textbook formulas, the lazy-regularisation helpers and the errors bad input gets. The ops themselves
(grad_penalty, sample_lerp) are tested in test_grad_penalty.py and test_sample_lerp.py."""
import math

import pytest
import torch
import torch.nn.functional as F
from support import DEVICE, available_impls, rel_err

from ganfast import losses
from ganfast.ops import bias_act
from ganfast.reference import losses as ref

IMPLS = available_impls()
CENTERS = [None, 1.0]


class Critic(torch.nn.Module):
    """A tiny conv critic; ``ganfast_ops=True`` uses ganfast's bias_act (with impl ``act_impl``) for its
    bias + leaky ReLU, otherwise torch's."""

    def __init__(self, channels=3, ganfast_ops=False, act_impl=None):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, 4, 3, padding=1, bias=not ganfast_ops)
        self.b1 = torch.nn.Parameter(torch.randn(4) * 0.1)
        self.conv2 = torch.nn.Conv2d(4, 5, 3, stride=2, padding=1, bias=False)
        self.b2 = torch.nn.Parameter(torch.randn(5) * 0.1)
        self.fc = torch.nn.Linear(5, 1)
        self.ganfast_ops, self.act_impl = ganfast_ops, act_impl

    def act(self, x, b):
        if self.ganfast_ops:
            return bias_act(x, b, act="lrelu", impl=self.act_impl)
        return F.leaky_relu(x + b.view(1, -1, 1, 1), 0.2) * math.sqrt(2)

    def forward(self, x):
        x = self.act(self.conv1(x), self.b1)
        x = self.act(self.conv2(x), self.b2)
        return self.fc(x.mean(dim=(2, 3)))


def _critic(ganfast_ops, act_impl=None):
    torch.manual_seed(1)
    return Critic(ganfast_ops=ganfast_ops, act_impl=act_impl).to(DEVICE, torch.float64)


def _param_grads(loss, module):
    return torch.autograd.grad(loss, list(module.parameters()), retain_graph=True, materialize_grads=True)


def _assert_same(got, want, tol=1e-12):
    assert rel_err(got, want) < tol, (got, want)


def _images(batch, shape=(3, 6, 5)):
    return torch.randn(batch, *shape, device=DEVICE, dtype=torch.float64)


# ---- penalties: values and the gradients they send into the critic ------------------------------------------

PENALTY_IMPLS = IMPLS + ["ref"]
CRITICS = ["torch", "ganfast"]


def _penalty_pair(name, critic_ref, critic, batch, impl):
    """(ganfast penalty, reference penalty) on the same inputs."""
    real, fake = _images(batch), _images(batch)
    eps = torch.rand(batch, device=DEVICE, dtype=torch.float64)
    if name in ("r1", "r2"):
        fn = losses.r1_penalty if name == "r1" else losses.r2_penalty
        x = (real if name == "r1" else fake).requires_grad_(True)
        return fn(critic(x), x, impl=impl), ref.r1_penalty(critic_ref(x), x)
    if name == "wgan_gp":
        return losses.wgan_gp(critic, real, fake, eps, impl=impl), ref.wgan_gp(critic_ref, real, fake, eps)
    noise = torch.rand_like(real)
    return (losses.dragan_penalty(critic, real, center=0.5, eps=eps, noise=noise, impl=impl),
            ref.dragan_penalty(critic_ref, real, eps, noise, center=0.5))


@pytest.mark.parametrize("impl", PENALTY_IMPLS)
@pytest.mark.parametrize("critic_kind", CRITICS)
@pytest.mark.parametrize("name", ["r1", "r2", "wgan_gp", "dragan"])
@pytest.mark.parametrize("batch", [1, 3])
def test_penalty_parity(impl, critic_kind, name, batch):
    critic = _critic(critic_kind == "ganfast")
    critic_ref = _critic(critic_kind == "ganfast", act_impl="ref")  # same weights, every op the reference
    weight_grads = []  # gradient hooks fire whenever autograd computes a gradient for the parameter
    hooks = [p.register_hook(lambda g: weight_grads.append(g)) for p in critic.parameters()]
    got, want = _penalty_pair(name, critic_ref, critic, batch, impl)
    assert weight_grads == []  # the first-order gradient was taken with respect to the inputs only
    assert got.shape == () and got.dtype == torch.float64
    _assert_same(got, want)
    for g, w in zip(_param_grads(got, critic), _param_grads(want, critic_ref)):
        _assert_same(g, w, tol=1e-11)
    assert weight_grads  # and the hooks do see the penalty's own backward
    for hook in hooks:
        hook.remove()


@pytest.mark.parametrize("impl", PENALTY_IMPLS)
@pytest.mark.parametrize("ws_shape", [(3, 4, 6), (1, 6)])
def test_path_length_parity(impl, ws_shape):
    torch.manual_seed(2)
    mapping = torch.nn.Linear(6, 2 * 5 * 4).to(DEVICE, torch.float64)
    ws = torch.randn(ws_shape, device=DEVICE, dtype=torch.float64, requires_grad=True)

    def generate(ws):
        w = ws.mean(dim=1) if ws.ndim == 3 else ws
        return torch.tanh(mapping(w)).view(-1, 2, 5, 4)

    images = generate(ws)
    noise = torch.randn_like(images)
    mean = torch.tensor(0.3, device=DEVICE, dtype=torch.float64)
    got, got_mean = losses.path_length_penalty(images, ws, mean, decay=0.1, noise=noise, impl=impl)
    want, want_mean = ref.path_length_penalty(images, ws, mean, 0.1, noise)
    _assert_same(got, want)
    _assert_same(got_mean, want_mean)
    assert not got_mean.requires_grad
    for g, w in zip(_param_grads(got, mapping), _param_grads(want, mapping)):
        _assert_same(g, w, tol=1e-11)


def test_path_length_module_keeps_running_mean():
    ws = torch.randn(4, 3, 5, requires_grad=True)
    weight = torch.randn(5, 2 * 3 * 3)
    images = torch.tanh(ws.mean(1) @ weight).view(4, 2, 3, 3)
    module = losses.PathLengthPenalty(decay=0.25)
    noise = torch.randn_like(images)
    lengths = []
    for _ in range(2):
        (g,) = torch.autograd.grad((images * noise / 3).sum(), ws, retain_graph=True)
        lengths.append(g.square().sum(dim=2).mean(dim=1).sqrt().mean())
        module(images, ws, noise=noise)
    expected = 0.25 * lengths[0]
    expected = expected + 0.25 * (lengths[1] - expected)
    assert torch.allclose(module.mean, expected, rtol=1e-5)
    assert "mean" in module.state_dict()


def test_wgan_gp_default_eps_is_per_sample_uniform():
    critic = lambda x: (x * x).flatten(1).sum(1)  # noqa: E731  ∇ = 2x̂: ‖∇‖ = 2‖x̂‖
    real, fake = torch.ones(64, 2, 3), torch.zeros(64, 2, 3)
    gp = losses.wgan_gp(critic, real, fake, center=0.0)
    # x̂_b = eps_b · 1, so ‖∇‖² = 4 · 6 · eps_b²; E[eps²] = 1/3 for eps ~ U[0, 1)
    assert abs(gp.item() / 24 - 1 / 3) < 0.1


# ---- adversarial losses ----------------------------------------------------------------------------------------

def _textbook(kind, r, f):
    """(d_loss, g_loss) written out from the papers' formulas, independently of ganfast.reference."""
    if kind == "logistic":
        return -torch.log(torch.sigmoid(r)).mean() - torch.log(1 - torch.sigmoid(f)).mean(), \
            -torch.log(torch.sigmoid(f)).mean()
    if kind == "hinge":
        return torch.clamp(1 - r, min=0).mean() + torch.clamp(1 + f, min=0).mean(), -f.mean()
    if kind == "wasserstein":
        return f.mean() - r.mean(), -f.mean()
    if kind == "rpgan":  # relativistic pairing: −log σ(r_b − f_b), and −log σ(f_b − r_b) for G
        return -torch.log(torch.sigmoid(r - f)).mean(), -torch.log(torch.sigmoid(f - r)).mean()
    return ((r - 1) ** 2).mean() / 2 + (f ** 2).mean() / 2, ((f - 1) ** 2).mean() / 2


@pytest.mark.parametrize("kind", losses.LOSS_KINDS)
def test_adversarial_losses(kind):
    r = torch.randn(7, 1, dtype=torch.float64, requires_grad=True)
    f = torch.randn(7, 1, dtype=torch.float64, requires_grad=True)
    d_want, g_want = _textbook(kind, r, f)
    d_got = losses.d_loss(kind, r, f)
    _assert_same(d_got, d_want)
    _assert_same(losses.g_loss(kind, f, r), g_want)
    if kind in losses.PAIRED_KINDS:
        with pytest.raises(ValueError, match="both real_logits and fake_logits are needed"):
            losses.d_loss(kind, r, None)
        with pytest.raises(ValueError, match="both real_logits and fake_logits are needed"):
            losses.g_loss(kind, f)
        with pytest.raises(ValueError, match="must have one shape"):
            losses.d_loss(kind, r, f[:3])
    else:
        _assert_same(losses.g_loss(kind, f), g_want)
        _assert_same(losses.d_loss(kind, r, None) + losses.d_loss(kind, None, f), d_want)
    for a, b in zip(torch.autograd.grad(d_got, (r, f)), torch.autograd.grad(d_want, (r, f))):
        _assert_same(a, b)


# ---- R1 + R2 in one D pass ---------------------------------------------------------------------------------------

class PerSampleD(torch.nn.Module):
    """A conditional critic built from ganfast ops with a frozen weight and an unused one (both: None)."""

    def __init__(self, c_dim=0):
        super().__init__()
        self.critic = Critic(ganfast_ops=True)
        self.embed = torch.nn.Linear(c_dim, 1, bias=False) if c_dim else None
        self.frozen = torch.nn.Parameter(torch.randn(1), requires_grad=False)
        self.unused = torch.nn.Parameter(torch.randn(2))

    def forward(self, x, c=None):
        out = self.critic(x).reshape(-1) * self.frozen
        return out if c is None else out + self.embed(c).reshape(-1) * out.tanh()


def _d_pair(c_dim):
    torch.manual_seed(2)
    return PerSampleD(c_dim).double().to(DEVICE)


@pytest.mark.parametrize("impl", PENALTY_IMPLS)
@pytest.mark.parametrize("c_dim", [0, 2])
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("passes", [1, 2])
def test_rpgan_r1_r2_one_pass_matches_two_passes(impl, c_dim, batch, passes):
    D = _d_pair(c_dim)
    real, fake = _images(batch), _images(batch)
    c = torch.randn(batch, c_dim, device=DEVICE, dtype=torch.float64) if c_dim else None
    rows = []
    hook = D.critic.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    got = losses.rpgan_r1_r2(D, real, fake, 0.7, c, impl=impl, passes=passes)
    ours = [2 * batch] if passes == 1 else [batch, batch]  # one D forward on [real; fake], or one per half
    assert rows == ours
    want, l_r, l_f, r1, r2 = ref.rpgan_r1_r2(D, real, fake, 0.7, c)
    assert rows == ours + [batch, batch]
    hook.remove()
    assert got.shape == () and got.dtype == torch.float64
    _assert_same(got, want)
    manual = (F.softplus(-(l_r - l_f)) + 0.35 * (r1 + r2)).mean()  # the formula, term by term
    _assert_same(want, manual)
    params = list(D.parameters())
    g_got = torch.autograd.grad(got, [p for p in params if p.requires_grad], allow_unused=True)
    g_want = torch.autograd.grad(want, [p for p in params if p.requires_grad], allow_unused=True)
    assert [g is None for g in g_got] == [g is None for g in g_want]
    assert sum(g is None for g in g_got) == 1  # D.unused
    for a, b in zip(g_got, g_want):
        if a is not None:
            _assert_same(a, b, tol=1e-11)
    parts = losses.r1_r2(D, real, fake, c, c, impl=impl, passes=passes)
    for a, b in zip(parts, (l_r, l_f, r1, r2)):
        _assert_same(a, b)


def test_r1_r2_passes_auto_and_bad_value():
    """"auto" is two D passes on the CPU (measured faster there) and one on other devices; bad values are named."""
    assert losses.resolve_passes("auto", torch.device("cpu")) == 2
    assert losses.resolve_passes("auto", torch.device("cuda", 0)) == 1
    assert [losses.resolve_passes(p, torch.device("cpu")) for p in (1, 2)] == [1, 2]
    D = _d_pair(0)
    real, fake = _images(2), _images(2)
    rows = []
    hook = D.critic.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    losses.rpgan_r1_r2(D, real, fake, 0.7)
    hook.remove()
    assert rows == ([2, 2] if real.device.type == "cpu" else [4])
    for bad in (0, 3, True, "two", None):
        with pytest.raises(ValueError, match="passes must be"):
            losses.r1_r2(D, real, fake, passes=bad)


def test_rpgan_r1_r2_gradcheck_tiny_d():
    """First and second derivatives through the one-pass loss (its penalty is a gradient) in float64, with respect
    to the biases inside bias_act and the last layer (every weight would take a minute)."""
    from torch.func import functional_call
    D = _d_pair(0)
    real, fake = _images(2, (3, 4, 4)), _images(2, (3, 4, 4))
    names = ["critic.b1", "critic.b2", "critic.fc.weight", "critic.fc.bias"]
    weights = tuple(dict(D.named_parameters())[n].detach().clone().requires_grad_(True) for n in names)

    def loss(*ws):
        return losses.rpgan_r1_r2(lambda_module(ws), real, fake, 1.5, impl="ext", passes=1)

    def lambda_module(ws):
        class Bound(torch.nn.Module):
            def forward(self, x):
                return functional_call(D, dict(zip(names, ws)), (x,))
        return Bound()
    assert torch.autograd.gradcheck(loss, weights, eps=1e-6, atol=1e-6)


def test_one_pass_refuses_batch_dependent_d():
    real, fake = _images(2), _images(2)
    bn = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                             torch.nn.Linear(60, 1)).double()
    with pytest.raises(ValueError, match=r"1 \(BatchNorm2d, batch statistics\)"):
        losses.rpgan_r1_r2(bn, real, fake, 1.0)
    bn.eval()  # running statistics: per sample again
    assert torch.isfinite(losses.rpgan_r1_r2(bn, real, fake, 1.0))
    bn[1].track_running_stats = False  # no running statistics: batch statistics even in eval mode
    with pytest.raises(ValueError, match="BatchNorm2d, batch statistics"):
        losses.r1_r2(bn, real, fake)
    from ganfast.models import StyleGAN2Discriminator
    sg2 = StyleGAN2Discriminator(img_resolution=8, img_channels=3)
    with pytest.raises(ValueError, match=r"MinibatchStdLayer"):
        losses.rpgan_r1_r2(sg2, torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8), 1.0)

    class Custom(torch.nn.Module):
        batch_dependent = True

        def forward(self, x):
            return x - x.mean(dim=0)
    custom = torch.nn.Sequential(Custom(), torch.nn.Flatten(), torch.nn.Linear(90, 1)).double()
    with pytest.raises(ValueError, match=r"0 \(Custom\)"):
        losses.rpgan_r1_r2(custom, real, fake, 1.0)
    D = _d_pair(0)
    with pytest.raises(ValueError, match="gamma"):
        losses.rpgan_r1_r2(D, real, fake, -1.0)
    with pytest.raises(ValueError, match="fake has shape"):
        losses.rpgan_r1_r2(D, real, _images(3), 1.0)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        losses.rpgan_r1_r2(lambda x: x.sum((1, 2, 3)), real, fake, 1.0)
    with pytest.raises(ValueError, match="real_c and fake_c"):
        losses.r1_r2(D, real, fake, real_c=torch.randn(2, 2))


# ---- lazy regularisation ----------------------------------------------------------------------------------------

def test_lazy_regularisation_helpers():
    lr, (b1, b2) = losses.lazy_adam_params(0.0025, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.0025 * 16 / 17)
    assert b1 == 0.0 and b2 == pytest.approx(0.99 ** (16 / 17))
    assert losses.lazy_adam_params(0.002, (0.5, 0.9), None) == (0.002, (0.5, 0.9))
    assert losses.lazy_penalty_weight(5.0, 16) == 80.0 and losses.lazy_penalty_weight(5.0, None) == 5.0
    assert [losses.lazy_reg_due(s, 4) for s in range(6)] == [True, False, False, False, True, False]
    assert all(losses.lazy_reg_due(s, None) for s in range(3))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="interval"):
            losses.lazy_adam_params(0.1, (0.0, 0.99), bad)


# ---- errors -----------------------------------------------------------------------------------------------------

def test_r1_errors():
    critic = _critic(False)
    x = _images(2)
    with pytest.raises(ValueError, match="inputs does not require grad"):
        losses.r1_penalty(critic(x), x)
    y = _images(2).requires_grad_(True)
    with pytest.raises(ValueError, match="inputs was not used"):
        losses.r1_penalty(critic(y), x.requires_grad_(True))
    with pytest.raises(ValueError, match="outputs does not require grad"):
        losses.r2_penalty(critic(_images(2)).detach(), y)
    with pytest.raises(TypeError, match="inputs"):
        losses.r1_penalty(critic(y), [y])
    with pytest.raises(ValueError, match="inputs"):
        losses.r1_penalty(y.sum(), torch.tensor(1.0, requires_grad=True))


def test_penalty_argument_errors():
    critic = _critic(False)
    real = _images(3)
    with pytest.raises(ValueError, match="fake has shape"):
        losses.wgan_gp(critic, real, _images(2))
    with pytest.raises(ValueError, match="eps"):
        losses.wgan_gp(critic, real, _images(3), eps=torch.rand(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="center"):
        losses.wgan_gp(critic, real, _images(3), center=-1.0)
    with pytest.raises(TypeError, match="critic"):
        losses.wgan_gp("not a critic", real, _images(3))
    with pytest.raises(ValueError, match="noise"):
        losses.dragan_penalty(critic, real, noise=torch.rand(3, 1))
    ws = torch.randn(2, 4, requires_grad=True)
    with pytest.raises(ValueError, match="batch"):
        losses.path_length_penalty(torch.randn(3, 1, 2, 2), ws, 0.0)
    with pytest.raises(ValueError, match="decay"):
        losses.path_length_penalty(ws.view(2, 1, 2, 2) * 2, ws, 0.0, decay=2.0)


def test_loss_errors():
    with pytest.raises(ValueError, match="kind"):
        losses.d_loss("nonsaturating", torch.randn(2), torch.randn(2))
    with pytest.raises(ValueError, match="neither"):
        losses.d_loss("hinge", None, None)
    with pytest.raises(TypeError, match="fake_logits"):
        losses.g_loss("hinge", torch.ones(2, dtype=torch.int64))
