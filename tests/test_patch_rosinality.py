"""ganfast.patch_rosinality() on stand-ins of rosinality's ``op`` copies (tests/rosinality_standin) and on the real
basicsr package: imports with compiling impossible, their numbers and derivatives (float64 against ganfast's
reference and against their autograd Functions run on a plain-PyTorch stand-in of their extension), a small
rosinality G/D train step, the launcher and the rebinding rules."""
import importlib
import importlib.util
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension
from support import rel_err

import ganfast
from ganfast.info import format_info
from ganfast.reference import bias_act as ref_bias_act
from ganfast.reference import upfirdn2d as ref_upfirdn2d

STANDIN = Path(__file__).parent / "rosinality_standin"
sys.path.insert(0, str(STANDIN))
import fake_ext  # noqa: E402


def _no_compiling(*args, **kwargs):
    raise RuntimeError("compiling is impossible in this test")


def _fake_build(*args, **kwargs):
    return fake_ext


def _place(tmp_path, template: str, dotted: str) -> Path:
    """Copies the stand-in ``template`` (new/old) into tmp_path as the package ``dotted`` (parents created)."""
    target = tmp_path.joinpath(*dotted.split("."))
    for parent in [tmp_path.joinpath(*dotted.split(".")[:i]) for i in range(1, dotted.count(".") + 1)]:
        parent.mkdir(exist_ok=True)
        (parent / "__init__.py").touch()
    shutil.copytree(STANDIN / template, target)
    return target


@pytest.fixture
def copies(tmp_path, monkeypatch):
    """import_copy(template, dotted, build): imports a fresh copy of the stand-in under ``dotted`` with
    ``cpp_extension.load`` replaced by ``build``; every patch and module made by the test is removed after it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names, patches = [], []

    def import_copy(template, dotted, build=_no_compiling, submodule="op"):
        _place(tmp_path, template, dotted)
        monkeypatch.setattr(torch.utils.cpp_extension, "load", build)
        names.append(dotted.split(".")[0])
        importlib.invalidate_caches()
        return importlib.import_module(f"{dotted}.{submodule}" if submodule else dotted)

    def patch(**kwargs):
        patches.append(ganfast.patch_rosinality(**kwargs))
        return patches[-1]
    import_copy.patch, import_copy.root = patch, tmp_path
    yield import_copy
    for handle in patches:
        handle.undo()
    for name in [m for m in sys.modules if m.split(".")[0] in names]:
        del sys.modules[name]


def _theirs_cuda_lrelu(copy, x, b, slope, scale):
    """Their CUDA path: the copy's own FusedLeakyReLUFunction on the plain-PyTorch stand-in of the extension."""
    return copy.fused_act.FusedLeakyReLUFunction.apply(x, b, slope, scale)


# ---- imports: nothing compiled, under any package path -------------------------------------------------------

@pytest.mark.parametrize("template,dotted", [("new", "repo"), ("new", "models.stylegan2"), ("new", "model.stylegan"),
                                             ("old", "ZSSGAN.model"), ("old", "e4e_models.stylegan2")])
def test_copies_import_under_any_path_with_nothing_compiled(copies, template, dotted):
    with pytest.raises(RuntimeError, match="compiling is impossible"):
        copies(template, dotted + "_unpatched")
    handle = copies.patch()
    op = copies(template, dotted)
    modules = [sys.modules[f"{dotted}.op.{leaf}"] for leaf in ("fused_act", "upfirdn2d")]
    assert all(m.__ganfast_patch__ and m.__file__.startswith(str(copies.root)) for m in modules)
    assert {f"{dotted}.op.fused_act", f"{dotted}.op.upfirdn2d"} <= set(handle.patched)
    assert op.fused_leaky_relu is modules[0].fused_leaky_relu and op.upfirdn2d is modules[1].upfirdn2d
    x, b, k = torch.randn(2, 3, 5, 6, dtype=torch.float64), torch.randn(3, dtype=torch.float64), torch.rand(3, 3)
    torch.testing.assert_close(op.fused_leaky_relu(x, b), ref_bias_act(x, b, 1, "lrelu", 0.2, 2 ** 0.5))
    torch.testing.assert_close(op.upfirdn2d(x, k.double(), up=2, pad=(1, 1)),
                               ref_upfirdn2d(x, k.double(), up=2, padding=[1, 1, 1, 1]))


def test_top_level_op_and_relative_imports(copies):
    """rosinality's own layout: a top-level ``op`` package next to model.py; the model imports ``.op``."""
    copies.patch()
    model = copies("new", "stylegan2_pytorch", submodule="model")
    assert model.fused_leaky_relu.__ganfast_patch__ and model.upfirdn2d.__ganfast_patch__
    op = copies("new/op", "op", submodule=None)
    assert op.__name__ == "op" and sys.modules["op.fused_act"].__ganfast_patch__
    assert op.FusedLeakyReLU.__ganfast_patch__


# ---- fused_leaky_relu / FusedLeakyReLU ------------------------------------------------------------------------

LRELU_CASES = [((3, 5), True, 0.2, 2 ** 0.5), ((2, 4, 3), True, 0.1, 1.5), ((2, 3, 4, 5), True, 0.2, 2 ** 0.5),
               ((2, 3, 4, 5), False, 0.3, 1.0), ((1, 2, 3, 3, 2), True, 0.05, 2.0)]


@pytest.mark.parametrize("impl", [None, "ext"])
@pytest.mark.parametrize("shape,with_bias,slope,scale", LRELU_CASES)
def test_fused_leaky_relu_is_theirs(copies, shape, with_bias, slope, scale, impl):
    theirs = copies("new", "cuda_theirs", build=_fake_build)
    copies.patch(impl=impl)
    ours = copies("new", "patched")
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    b = torch.randn(shape[1], dtype=torch.float64, requires_grad=True) if with_bias else None
    inputs = (x, b) if with_bias else (x,)
    want = _theirs_cuda_lrelu(theirs, x, b, slope, scale)
    got = ours.fused_leaky_relu(x, b, slope, scale)
    assert rel_err(got, want) < 1e-12
    assert rel_err(got, ref_bias_act(x, b, 1, "lrelu", slope, scale)) < 1e-12
    torch.autograd.gradcheck(lambda *t: ours.fused_leaky_relu(t[0], t[1] if with_bias else None, slope, scale),
                             inputs)
    torch.autograd.gradgradcheck(lambda *t: ours.fused_leaky_relu(t[0], t[1] if with_bias else None, slope, scale),
                                 inputs)

    v = torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    def first_and_second(fn):
        y = fn(x, b, slope, scale)
        grads = torch.autograd.grad((y * v).sum(), inputs, create_graph=True)
        second = torch.autograd.grad(sum((g * g.detach().cos()).sum() for g in grads), (*inputs, v),
                                     allow_unused=True)
        return grads, second
    want_first, want_second = first_and_second(lambda *a: _theirs_cuda_lrelu(theirs, *a))
    got_first, got_second = first_and_second(ours.fused_leaky_relu)
    for a, w in zip((*got_first, *got_second), (*want_first, *want_second)):
        assert (a is None) == (w is None)
        assert a is None or rel_err(a, w) < 1e-12
    assert not want_second[0].any()  # the mask has no derivative: a zero gradient, theirs and ours (not None)


def test_cpu_branch_slope_bug_is_not_reproduced(copies):
    """Their CPU branch ignores negative_slope (0.2 always); ganfast honours it, as their CUDA path does."""
    theirs = copies("new", "cpu_theirs", build=_fake_build)
    x, b = torch.randn(2, 3, 4, 4), torch.randn(3)
    cpu_branch = {slope: theirs.fused_leaky_relu(x, b, slope) for slope in (0.2, 0.01)}
    copies.patch()  # rebinds theirs too (imported before): ours is a fresh copy
    ours = copies("new", "patched")
    assert rel_err(cpu_branch[0.2], ours.fused_leaky_relu(x, b, 0.2)) < 1e-6
    assert rel_err(cpu_branch[0.01], ours.fused_leaky_relu(x, b, 0.01)) > 1e-2
    assert rel_err(ours.fused_leaky_relu(x, b, 0.01), _theirs_cuda_lrelu(theirs, x, b, 0.01, 2 ** 0.5)) < 1e-6
    # GPEN's copies take a device argument; half precision and channels_last
    assert rel_err(ours.fused_leaky_relu(x, b, 0.2, 2 ** 0.5, device="cpu"), ours.fused_leaky_relu(x, b)) == 0
    for dtype in (torch.float16, torch.bfloat16):
        xh = x.to(dtype).contiguous(memory_format=torch.channels_last)
        got = ours.fused_leaky_relu(xh, b.to(dtype))
        assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
        assert rel_err(got, ref_bias_act(x, b, 1, "lrelu", 0.2, 2 ** 0.5)) < 1e-2


@pytest.mark.parametrize("template", ["new", "old"])
def test_fused_leaky_relu_module_keeps_signature_and_checkpoints(copies, template):
    theirs = copies(template, "module_theirs", build=_fake_build)
    torch.manual_seed(4)
    positional = (6, 0.1, 1.5) if template == "old" else (6, True, 0.1, 1.5)
    reference = theirs.FusedLeakyReLU(*positional).double()
    with torch.no_grad():
        reference.bias.normal_()
    copies.patch()
    ours = copies(template, "module_patched")
    module = ours.FusedLeakyReLU(*positional).double()
    module.load_state_dict(reference.state_dict())
    assert list(module.state_dict()) == ["bias"] and module.bias.shape == (6,)
    assert (module.negative_slope, module.scale) == (0.1, 1.5)
    assert type(module).__module__ == "module_patched.op.fused_act"
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    assert rel_err(module(x), _theirs_cuda_lrelu(theirs, x, reference.bias, 0.1, 1.5)) < 1e-12
    if template == "new":
        no_bias = ours.FusedLeakyReLU(6, bias=False)
        assert no_bias.bias is None and rel_err(no_bias(x.float()), ref_bias_act(x, None, 1, "lrelu")) < 1e-6
    else:
        with pytest.raises(TypeError):
            ours.FusedLeakyReLU(6, bias=False)


# ---- upfirdn2d ---------------------------------------------------------------------------------------------

UPFIRDN_CASES = [dict(up=2, pad=(2, 1)), dict(down=2, pad=(1, 1)), dict(pad=(2, 1)), dict(up=2, down=2, pad=(1, 0)),
                 dict(up=(2, 1), down=(1, 2), pad=(1, 2, 0, -1)), dict(pad=(-1, 2, 3, -2)), dict(up=3, pad=(0, 0))]


@pytest.mark.parametrize("case", UPFIRDN_CASES, ids=str)
def test_upfirdn2d_is_theirs(copies, case):
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    kernel = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    k = kernel.detach()
    up, down = case.get("up", 1), case.get("down", 1)
    pad = case["pad"] if len(case["pad"]) == 4 else (*case["pad"], *case["pad"])
    want = copies("new", "fir_theirs", build=_fake_build).upfirdn2d(x, kernel, **case)  # their CPU path
    old_style = isinstance(up, int) and isinstance(down, int) and len(case["pad"]) == 2
    if old_style:  # the old copies' CUDA path, on the stand-in of their extension
        old = copies("old", "fir_old_theirs", build=_fake_build)
        want_old = old.upfirdn2d(x, k, up, down, case["pad"])
    copies.patch()
    ours = copies("new", "fir_patched")
    got = ours.upfirdn2d(x, kernel, **case)
    assert got.shape == want.shape and rel_err(got, want) < 1e-12
    assert rel_err(got, ref_upfirdn2d(x, kernel, up, down, list(pad))) < 1e-12
    if old_style:
        assert rel_err(got, want_old) < 1e-12
        native = sys.modules["fir_patched.op.upfirdn2d"].upfirdn2d_native
        assert rel_err(native(x, k, up, up, down, down, *pad), got) == 0
    torch.autograd.gradcheck(lambda t: ours.upfirdn2d(t, k, **case), (x,))
    torch.autograd.gradgradcheck(lambda t: ours.upfirdn2d(t, k, **case), (x,))
    got.square().sum().backward()
    assert kernel.grad is None and x.grad is not None  # their CUDA path gives the kernel no gradient


def test_upfirdn2d_half_and_channels_last(copies):
    copies.patch()
    ours = copies("new", "fir_half")
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    kernel = torch.tensor([[1.0, 3, 3, 1]]).T @ torch.tensor([[1.0, 3, 3, 1]]) / 64
    want = ref_upfirdn2d(x.double(), kernel.double(), 2, 1, [2, 1, 2, 1])
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        got = ours.upfirdn2d(x.to(dtype), kernel, up=2, pad=(2, 1))
        assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
        assert rel_err(got, want) < (1e-6 if dtype == torch.float32 else 1e-2)


def test_bad_arguments_say_which(copies):
    copies.patch()
    ours = copies("new", "bad_args")
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="pad must be"):
        ours.upfirdn2d(x, torch.ones(2, 2), pad=(1, 1, 1))
    with pytest.raises(ValueError, match="kernel must be a 2-D"):
        ours.upfirdn2d(x, torch.ones(3))
    with pytest.raises(ValueError, match="b has length 3"):
        ours.fused_leaky_relu(x, torch.zeros(3))
    with pytest.raises(ValueError, match="impl must be one of"):
        ganfast.patch_rosinality(impl="fastest")


# ---- a whole train step ----------------------------------------------------------------------------------------

def _train_step(model, size):
    torch.manual_seed(0)
    g, d = model.Generator(size).double(), model.Discriminator(size).double()
    real, z = torch.randn(4, 3, size, size, dtype=torch.float64), torch.randn(4, 32, dtype=torch.float64)
    torch.manual_seed(1)
    return model.train_step(g, d, real, z)


def test_train_step_with_r1_and_path_length_is_theirs(copies, one_thread):
    """The small rosinality G/D: one D step (+ R1 under no_weight_gradients) and one G step (+ path length) give
    the same losses, images, logits and gradients (None where theirs is None) on ganfast's ops as on their
    plain-PyTorch CPU path."""
    want = _train_step(copies("new", "step_theirs", build=_fake_build, submodule="model"), 16)
    copies.patch()
    ours = copies("new", "step_patched", submodule="model")
    assert ours.FusedLeakyReLU.__ganfast_patch__
    got = _train_step(ours, 16)
    for key in ("losses", "images", "logits"):
        assert rel_err(got[key], want[key]) < 1e-10, key
    for key in ("d_grads", "g_grads"):
        assert len(got[key]) == len(want[key])
        for a, w in zip(got[key], want[key]):
            assert (a is None) == (w is None) and (a is None or rel_err(a, w) < 1e-9), key


# ---- basicsr: their stand-in, and the real package --------------------------------------------------------------

def test_basicsr_style_missing_extension(monkeypatch):
    monkeypatch.syspath_prepend(str(STANDIN))
    try:
        from srlib.models.ops import fused_act as unpatched
        with pytest.raises(NameError, match="fused_act_ext"):
            unpatched.fused_leaky_relu(torch.randn(2, 3), torch.zeros(3))
        with ganfast.patch_rosinality() as handle:  # imported already: rebound
            assert "srlib.models.ops.fused_act.fused_act.fused_leaky_relu" in handle.patched
            x, b = torch.randn(2, 3, 4, 4), torch.randn(3)
            assert rel_err(unpatched.fused_leaky_relu(x, b), ref_bias_act(x, b, 1, "lrelu")) < 1e-6
            assert rel_err(unpatched.FusedLeakyReLU(3)(x), ref_bias_act(x, torch.zeros(3), 1, "lrelu")) < 1e-6
        with pytest.raises(NameError, match="fused_act_ext"):
            unpatched.fused_leaky_relu(x, b)
        for name in [m for m in sys.modules if m.startswith("srlib")]:
            del sys.modules[name]
        with ganfast.patch_rosinality() as handle:  # imported under the patch: built by ganfast
            from srlib.models.ops.upfirdn2d import upfirdn2d
            from srlib.models.ops.fused_act import fused_leaky_relu
            assert {"srlib.models.ops.fused_act.fused_act", "srlib.models.ops.upfirdn2d.upfirdn2d"} <= \
                set(handle.patched)
            assert rel_err(fused_leaky_relu(x, b), ref_bias_act(x, b, 1, "lrelu")) < 1e-6
            k = torch.rand(3, 3)
            assert rel_err(upfirdn2d(x, k, down=2, pad=(1, 1)), ref_upfirdn2d(x, k, 1, 2, [1, 1, 1, 1])) < 1e-6
    finally:
        for name in [m for m in sys.modules if m.startswith("srlib")]:
            del sys.modules[name]


def _import_basicsr(monkeypatch):
    """basicsr 1.4.2 with this torch/torchvision: torchvision's CUDA build needs an empty _meta_registrations beside
    the CPU torch, and basicsr imports functional_tensor, which current torchvision calls functional."""
    if importlib.util.find_spec("basicsr") is None:
        pytest.skip("basicsr is in the test extra (pip install '.[test]')")
    if "torchvision" not in sys.modules:
        monkeypatch.setitem(sys.modules, "torchvision._meta_registrations",
                            types.ModuleType("torchvision._meta_registrations"))
    import torchvision.transforms.functional as functional
    sys.modules.setdefault("torchvision.transforms.functional_tensor", functional)
    from basicsr.archs import stylegan2_arch
    return stylegan2_arch


def test_real_basicsr_generator(monkeypatch, one_thread):
    """basicsr from the package index: its fused_leaky_relu raises NameError (no fused_act_ext), GFPGAN's most
    reported error; patched, its StyleGAN2Generator runs with the numbers of the reference's composition."""
    arch = _import_basicsr(monkeypatch)
    from basicsr.ops.fused_act import fused_act
    with pytest.raises(NameError, match="fused_act_ext"):
        fused_act.fused_leaky_relu(torch.randn(2, 3), torch.zeros(3))
    torch.manual_seed(5)
    generator = arch.StyleGAN2Generator(out_size=16, num_style_feat=32, num_mlp=2, channel_multiplier=1,
                                        narrow=0.0625).double()
    styles = [torch.randn(2, 32, dtype=torch.float64)]
    noise = [torch.randn(2, 1, 2 ** (2 + (i + 1) // 2), 2 ** (2 + (i + 1) // 2), dtype=torch.float64)
             for i in range(generator.num_layers)]

    def run():
        image, _ = generator(styles, noise=noise)
        grads = torch.autograd.grad(image.sin().sum(), list(generator.parameters()), allow_unused=True)
        return image, grads

    def reference_lrelu(input, bias, negative_slope=0.2, scale=2 ** 0.5):
        return ref_bias_act(input, bias, 1, "lrelu", negative_slope, scale)
    with monkeypatch.context() as m:  # their upfirdn2d has a CPU path (upfirdn2d_native); their lrelu has none
        m.setattr(fused_act, "fused_leaky_relu", reference_lrelu)
        m.setattr(arch, "fused_leaky_relu", reference_lrelu)
        want_image, want_grads = run()
    with ganfast.patch_rosinality() as handle:
        assert {"basicsr.ops.fused_act.fused_act.fused_leaky_relu", "basicsr.archs.stylegan2_arch.upfirdn2d"} <= \
            set(handle.patched)
        image, grads = run()
    assert rel_err(image, want_image) < 1e-12
    for a, w in zip(grads, want_grads):
        assert (a is None) == (w is None) and (a is None or rel_err(a, w) < 1e-10)
    with pytest.raises(NameError, match="fused_act_ext"):  # undone
        fused_act.fused_leaky_relu(torch.randn(2, 3), torch.zeros(3))


# ---- rebinding: the code base's modules, not __main__; undo; info -----------------------------------------------

def test_main_keeps_its_saved_originals_and_undo_restores(copies, monkeypatch):
    theirs = copies("new", "rebind_theirs", build=_fake_build)
    main = sys.modules["__main__"]
    original = theirs.fused_act.fused_leaky_relu
    monkeypatch.setattr(main, "saved_fused_leaky_relu", original, raising=False)
    handle = copies.patch()
    assert theirs.fused_act.fused_leaky_relu is not original and theirs.fused_leaky_relu.__ganfast_patch__
    assert main.saved_fused_leaky_relu is original
    assert "rebind_theirs.op.fused_leaky_relu" in handle.patched
    report = ganfast.info()["patches"]["rosinality"]
    assert report["active"] and "rebind_theirs.op.fused_act.fused_leaky_relu" in report["patched"]
    assert report["functions"]["upfirdn2d"]["op"] == "upfirdn2d"
    text = format_info(ganfast.info())  # (copies imported by earlier tests, basicsr's, are rebound too)
    assert "rosinality patch: active: " in text and "rebind_theirs.op.fused_act.fused_leaky_relu" in text
    assert "fused_leaky_relu -> ganfast bias_act (act='lrelu'" in text
    handle.undo()
    assert theirs.fused_act.fused_leaky_relu is original and theirs.fused_leaky_relu is original
    assert not ganfast.info()["patches"]["rosinality"]["active"]


def test_patch_stylegan_leaves_main_alone(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "stylegan_standin"))
    for name in [m for m in sys.modules if m.split(".")[0] in ("torch_utils", "training")]:
        monkeypatch.delitem(sys.modules, name)
    with ganfast.patch_rosinality():  # NVlabs' upfirdn2d is not a rosinality copy: imported as it is
        from torch_utils.ops import bias_act, upfirdn2d
    assert not getattr(upfirdn2d, "__ganfast_patch__", False) and hasattr(upfirdn2d, "setup_filter")
    original = bias_act.bias_act
    monkeypatch.setattr(sys.modules["__main__"], "saved_bias_act", original, raising=False)
    try:
        with ganfast.patch_stylegan():
            assert bias_act.bias_act is not original and sys.modules["__main__"].saved_bias_act is original
        assert bias_act.bias_act is original
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] in ("torch_utils", "training")]:
            del sys.modules[name]


# ---- the launcher ------------------------------------------------------------------------------------------

SCRIPT = """import sys
import torch.utils.cpp_extension
def _no_compiling(*args, **kwargs):
    raise RuntimeError("compiling is impossible here")
torch.utils.cpp_extension.load = _no_compiling
from repo.op import fused_leaky_relu
import torch
import torch.utils.cpp_extension
print("ARGS", sys.argv[1:], __name__, float(fused_leaky_relu(torch.tensor([[-1.0, 2.0]]), torch.zeros(2)).sum()))
if "--fail" in sys.argv:
    raise KeyError("raised by the script")
"""


@pytest.mark.parametrize("launcher", [["-m", "ganfast.run"], ["-m", "ganfast", "run", "-m"]])
def test_launcher_runs_the_script_as_main_with_its_argv(tmp_path, launcher):
    """python -m ganfast.run SCRIPT ARGS (with a failing run too), and ganfast run -m MODULE ARGS."""
    _place(tmp_path, "new", "repo")
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    target = "train" if launcher[-1] == "-m" else str(script)
    done = subprocess.run([sys.executable, *launcher, target, "--size", "64"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    want = float(ref_bias_act(torch.tensor([[-1.0, 2.0]]), torch.zeros(2), 1, "lrelu").sum())
    assert f"ARGS ['--size', '64'] __main__ {want}" in done.stdout
    if launcher[1] != "ganfast.run":
        return
    failed = subprocess.run([sys.executable, *launcher, str(script), "--fail"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert failed.returncode == 1 and "KeyError: 'raised by the script'" in failed.stderr
    assert f'File "{script}", line 11' in failed.stderr  # the traceback points into the script


def test_without_the_compiled_extension_the_reference_serves(copies, monkeypatch):
    monkeypatch.setattr(ganfast._ext, "_C", None)
    copies.patch()
    ours = copies("new", "no_extension")
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b, k = torch.randn(2, dtype=torch.float64), torch.rand(3, 3, dtype=torch.float64)
    y = ours.upfirdn2d(ours.fused_leaky_relu(x, b, 0.1), k, up=2, pad=(1, 1))
    assert rel_err(y, ref_upfirdn2d(ref_bias_act(x, b, 1, "lrelu", 0.1), k, 2, 1, [1, 1, 1, 1])) < 1e-12
    torch.autograd.gradgradcheck(lambda t: ours.upfirdn2d(ours.fused_leaky_relu(t, b, 0.1), k, up=2, pad=(1, 1)),
                                 (x,))
