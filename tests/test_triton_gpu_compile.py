"""Every Triton kernel of ganfast.triton compiled ahead of time to sm_90 machine code (Triton's own ptxas), in
the dtypes and flag values its host launcher uses: there is no GPU here, and the interpreter the other tests run
under cannot see GPU-only compile errors (types that differ between branches in float64, constexpr misuse, ...).

Each compile's shared memory must fit an sm_90 block. Run as a script (in a subprocess without
TRITON_INTERPRET) it compiles everything and prints ``compiled N``.
The argument types are those Triton's launcher specialises to: ``*<dtype>`` for tensors, ``fp32`` for Python
floats, ``i32`` for ints (``i64`` from 2**31 on), and an int equal to 1 becomes the constant 1 (unit strides,
stride-1 convolutions, ...); each table below follows the calls in its module's host launcher.
"""
import os
import subprocess
import sys
import time

import pytest

DTYPES = ("fp16", "bf16", "fp32", "fp64")
COMPILED = []  # the kernels compiled, in order
SM90_SHARED_BYTES = 227 * 1024  # shared memory one block may opt in to on an H100/H200


def _arithmetic(dtype: str) -> str:
    """The kernels' arithmetic type for a tensor dtype (float64 stays float64, the rest compute in float32)."""
    return "fp64" if dtype == "fp64" else "fp32"


def compile_for_gpu(fn, pointers: dict, ints=(), floats=(), constexprs=None, ones=(), wide=(), **options) -> None:
    """Compiles ``fn`` for sm_90. ``pointers``: argument -> element type; ``ints``: int arguments, i32 unless in
    ``wide`` (i64) or in ``ones`` (the value 1, which Triton turns into a constant); ``floats``: Python floats.
    Every argument of ``fn`` must be described exactly once."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    constexprs = {**(constexprs or {}), **{name: 1 for name in ones}}
    kinds = {**{name: "*" + dtype for name, dtype in pointers.items()},
             **{name: "i64" if name in wide else "i32" for name in ints if name not in ones},
             **{name: "fp32" for name in floats}, **{name: "constexpr" for name in constexprs}}
    described = len(pointers) + len(ints) + len(floats) + len(constexprs) - len(ones)
    if sorted(kinds) != sorted(fn.arg_names) or described != len(kinds):
        raise AssertionError(f"{fn.__name__}: table describes {sorted(kinds)}, kernel takes {sorted(fn.arg_names)}")
    aligned = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in pointers}  # as torch allocates
    kernel = triton.compile(ASTSource(fn=fn, signature={name: kinds[name] for name in fn.arg_names},
                                      constexprs=constexprs, attrs=aligned),
                            target=GPUTarget("cuda", 90, 32), options=options)
    if kernel.metadata.shared > SM90_SHARED_BYTES:  # the launch would fail with OutOfResources
        raise AssertionError(f"{fn.__name__} {constexprs}: {kernel.metadata.shared} bytes of shared memory per "
                             f"block, more than the {SM90_SHARED_BYTES} an sm_90 block may have")
    COMPILED.append(fn.__name__)


def _bias_act():
    """bias_act.bias_act: out, x, b (a placeholder x when absent), g, h, y in x's dtype; n, channels, stride_c;
    alpha, gain, clamp as float32 hi/lo pairs; every activation code, orders 0, 1, 2."""
    from ganfast.reference.bias_act import ACTIVATIONS
    from ganfast.triton import bias_act as m

    floats = "alpha_hi alpha_lo gain_hi gain_lo clamp_hi clamp_lo".split()
    codes = sorted(spec.code for spec in ACTIVATIONS.values())
    for dtype in DTYPES:
        # every activation and order in the two arithmetic types; lrelu in float16 / bfloat16
        for i, act in enumerate(codes if dtype in ("fp32", "fp64") else [codes[2]]):
            flags = dict(ACT=act, HAS_B=i % 2 == 0, HAS_CLAMP=i % 3 != 2, BLOCK=m.BLOCK)
            # channels-last / per-feature (N, C): stride_c is 1; from 2**31 elements n is i64
            ones, wide = (["stride_c"], ["n"]) if i % 2 else ([], [])
            compile_for_gpu(m._bias_act_fwd_kernel, {k: dtype for k in ("out_ptr", "x_ptr", "b_ptr")},
                            ["n", "channels", "stride_c"], floats, flags, ones, wide)
            for order in (1, 2):
                compile_for_gpu(m._bias_act_bwd_kernel,
                                {k: dtype for k in ("out_ptr", "g_ptr", "h_ptr", "x_ptr", "b_ptr", "y_ptr")},
                                ["n", "channels", "stride_c"], floats, dict(flags, ORDER=order), ones, wide)


def _upfirdn2d():
    """upfirdn2d.upfirdn2d: out, x in x's dtype, taps in the arithmetic type; sizes, the strides of x and out
    (unit strides: contiguous or channels_last), pads and shifts; up/down 1 or 2 with StyleGAN's 4-tap filter."""
    from ganfast.triton import upfirdn2d as m

    ints = ("planes channels in_h in_w out_h out_w sxn sxc sxh sxw son soc soh sow pad_x0 pad_y0 shift_x shift_y"
            ).split()
    layouts = [(["sxw", "sow", "shift_x", "shift_y"], []),  # contiguous, pad < up
               (["sxc", "soc"], ["sxn", "son"]),  # channels_last, samples of 2**31 elements or more
               ([], [])]
    for dtype in DTYPES:
        for (up, down, taps, block), (ones, wide) in zip([(2, 1, 4, (16, 64)), (1, 2, 4, (16, 64)),
                                                          (1, 1, 1, (32, 32))], layouts):
            compile_for_gpu(m._upfirdn2d_fwd_kernel,
                            dict(out_ptr=dtype, x_ptr=dtype, taps_ptr=_arithmetic(dtype)), ints, (),
                            dict(DOWN_X=down, DOWN_Y=down, UP_X=up, UP_Y=up, TAPS_H=taps, TAPS_W=taps,
                                 BLOCK_H=block[0], BLOCK_W=block[1]), ones, wide)


def _penalty():
    """penalty.grad_penalty_fwd / _bwd / sample_lerp: per-sample results (term, norm, partial, dterm, dnorm) in
    the arithmetic type, the gradient and the lerp operands in their own dtype; R1 and centred penalties, one
    chunk or several (then the finish kernel)."""
    from ganfast.triton import grad_penalty as m

    center = ["center_hi", "center_lo"]
    for dtype in DTYPES:
        acc = _arithmetic(dtype)
        # samples of 2**31 elements or more (i64), and of one element (the constant 1)
        size = dict(fp16=dict(wide=["per_sample"]), bf16=dict(ones=["per_sample"])).get(dtype, {})
        for has_center in (False, True):
            for one_chunk in (False, True):
                compile_for_gpu(m._grad_penalty_fwd_kernel, dict(term_ptr=acc, norm_ptr=acc, partial_ptr=acc,
                                                                 g_ptr=dtype),
                                ["per_sample", "chunk"], center,
                                dict(HAS_CENTER=has_center, ONE_CHUNK=one_chunk, BLOCK=m.REDUCE_BLOCK), **size)
            if dtype in ("fp32", "fp64"):  # launched with the result dtype only
                compile_for_gpu(m._grad_penalty_finish_kernel, dict(term_ptr=acc, norm_ptr=acc, partial_ptr=acc),
                                ["chunks"], center, dict(HAS_CENTER=has_center, CHUNKS_P2=4))
            compile_for_gpu(m._grad_penalty_bwd_kernel, dict(out_ptr=dtype, g_ptr=dtype, dterm_ptr=acc,
                                                             dnorm_ptr=acc, norm_ptr=acc),
                            ["batch", "per_sample"], center, dict(HAS_CENTER=has_center, BLOCK=m.SCALE_BLOCK), **size)
        compile_for_gpu(m._sample_lerp_fwd_kernel, {k: dtype for k in ("out_ptr", "a_ptr", "b_ptr", "eps_ptr")},
                        ["batch", "per_sample"], (), dict(BLOCK=m.SCALE_BLOCK), **size)


def _modulated_conv2d():
    """modulated_conv2d.modconv / weight_grad / demod: every tensor in x's dtype, accumulators in the arithmetic
    type, TF32 GEMMs for float32 (torch's default); the first GPU tile of each autotuner (every tile builds a
    config); a 3×3 stride-1 convolution (stride and pads are the constant 1), a 1×1 one and a strided one."""
    import triton.language as tl

    from ganfast.triton import modulated_conv2d as m

    fwd_ints = ("C_in H W C_out H_out W_out stride pad_h pad_w noise_sn noise_sc noise_sh noise_sw").split()
    wgrad_ints = "batch split C_in H W C_out H_out W_out stride pad_h pad_w".split()
    # (kernel size, ints equal to 1 in the forward, in the weight gradient): 3×3 stride 1 with noise, 1×1, 3×3
    # stride 2 (weight gradient of a batch of 1, hence one slice); the first writes split partial sums in the
    # accumulator dtype, the others write dw in x's dtype
    geometries = [(3, ["stride", "pad_h", "pad_w", "noise_sw"], ["stride", "pad_h", "pad_w"]),
                  (1, ["stride"], ["stride", "split"]), (3, ["pad_h", "pad_w"], ["pad_h", "pad_w", "batch", "split"])]
    fwd_tile, wgrad_tile = m._FWD_TILES[0], m._WGRAD_TILES[0]
    for dtype in DTYPES:
        acc = tl.float64 if dtype == "fp64" else tl.float32
        precision = "tf32" if dtype == "fp32" else None
        for i, (k, ones, wgrad_ones) in enumerate(geometries):
            flags = dict(HAS_S=i != 1, HAS_D=i != 2, HAS_NOISE=i == 0, HAS_B=i != 2, ACT=2 * (i != 1),
                         HAS_CLAMP=i == 0, NEED_RAW=i != 1)
            compile_for_gpu(m._modconv_fwd_kernel, {k_ + "_ptr": dtype for k_ in
                                                    ("y", "raw", "x", "w", "s", "d", "noise", "b")},
                            fwd_ints, "alpha_hi alpha_lo gain_hi gain_lo clamp_hi clamp_lo".split(),
                            dict(KH=k, KW=k, **flags, ACC=acc, INPUT_PRECISION=precision,
                                 **dict(zip(("BLOCK_M", "BLOCK_N", "BLOCK_K"), fwd_tile[:3]))), ones,
                            num_warps=fwd_tile[3], num_stages=fwd_tile[4])
            partials = "fp64" if dtype == "fp64" else "fp32"
            compile_for_gpu(m._modconv_wgrad_kernel, {"dw_ptr": partials if i == 0 else dtype,
                                                      **{k_ + "_ptr": dtype for k_ in ("x", "xs", "g", "gs")}},
                            wgrad_ints, (), dict(KH=k, KW=k, HAS_XS=i != 1, HAS_GS=i != 2, ACC=acc,
                                                 INPUT_PRECISION=precision,
                                                 **dict(zip(("BLOCK_O", "BLOCK_K", "BLOCK_P"), wgrad_tile[:3]))),
                            wgrad_ones,
                            num_warps=wgrad_tile[3], num_stages=wgrad_tile[4])
        compile_for_gpu(m._modconv_demod_kernel, dict(d_ptr=dtype, s_ptr=dtype, w2_ptr=dtype), ["C_in", "C_out"],
                        ["eps"], dict(ACC=acc, BLOCK_O=32, BLOCK_I=128))
    for name in ("fwd", "wgrad"):  # the autotuner wrappers build (they run only on a GPU)
        assert len(m._tuned(name).configs) >= 4


def _filtered_lrelu():
    """filtered_lrelu.filtered_lrelu: out, x, bias in x's dtype (placeholders: out), the mask uint8 (placeholder:
    out), taps in the arithmetic type; StyleGAN3's geometry (up 2 or 4, down 2, 12- or 24-tap filters, separable
    or a 2-D fu), the forward with and without the mask and clamp, and the mask's linear map (mode 1)."""
    from ganfast.triton import filtered_lrelu as m

    ints = ("planes channels in_h in_w mid_h mid_w out_h out_w mask_w sxn sxc sxh sxw son soc soh sow pad1_x pad1_y "
            "pad2_x pad2_y shift_x shift_y valid_x valid_y tiles_x").split()
    floats = "gain_hi gain_lo slope_hi slope_lo clamp_hi clamp_lo".split()
    # (up, fu taps, separable fu, mode, write mask, ints equal to 1): contiguous x and out (unit x strides)
    cases = [(2, 12, True, 0, True, ["sxw", "sow"]), (2, 12, True, 1, False, ["sxw", "sow"]),
             (4, 24, True, 0, False, ["sxc", "soc"]), (2, 12, False, 0, True, [])]
    for dtype in DTYPES:
        for up, taps1, sep1, mode, write_mask, ones in cases if dtype == "fp32" else cases[:2]:
            it, mt, bo, _ = m._axis_tile(taps1, 12, up, 2, False)
            pointers = dict(out_ptr=dtype, x_ptr=dtype, bias_ptr=dtype, mask_ptr="u8" if mode or write_mask else dtype,
                            taps1_ptr=_arithmetic(dtype), taps2_ptr=_arithmetic(dtype))
            flags = dict(UP=up, DOWN=2, T1H=taps1, T1W=taps1, T2H=12, T2W=12, SEP1=sep1, SEP2=True, MODE=mode,
                         HAS_BIAS=mode == 0, HAS_CLAMP=mode == 0, WRITE_MASK=write_mask, IT_Y=it, IT_X=it, MT_Y=mt,
                         MT_X=mt, BO_Y=bo, BO_X=bo, PRECISION="ieee" if dtype in ("fp32", "fp64") else "tf32")
            compile_for_gpu(m._filtered_lrelu_kernel, pointers, ints, floats, flags, ones, num_warps=8)


def _affine_sample():
    """affine_sample.affine_sample: dst, src in the tensor's dtype (float32/float64 for the transpose, which
    ganfast.ops runs in float32 for half types), the matrix in the arithmetic type; sizes and strides (dst
    contiguous, src contiguous or channels_last); sample and transpose."""
    from ganfast.triton import affine_sample as m

    ints = "batch channels in_h in_w out_h out_w ss0 ss1 ss2 ss3 sd0 sd1 sd2 sd3".split()
    for dtype in DTYPES:
        for transpose in ((0, 1) if dtype in ("fp32", "fp64") else (0,)):
            for ones in (["ss3", "sd3"], ["ss1", "sd3"]):
                compile_for_gpu(m._affine_sample_kernel, dict(dst_ptr=dtype, src_ptr=dtype, m_ptr=_arithmetic(dtype)),
                                ints, (), dict(TRANSPOSE=transpose, BLOCK=256), ones)


def _affine_resample():
    """affine_resample.affine_resample: dst, src in the tensor's dtype (float32/float64 for the transpose, which
    ganfast.ops runs in float32 for half types), matrix and padded filter in the arithmetic type; StyleGAN2-ADA's
    12-tap filter and the 64-pixel canvas tile; src and dst contiguous or src channels_last, one channel or more."""
    from ganfast.triton import affine_resample as m

    ints = ("planes channels height width pad_y0 pad_x0 padded_h padded_w ss0 ss1 ss2 ss3 sd0 sd1 sd2 sd3 tiles_x"
            ).split()
    valid, block = m.tile_sizes(12, 64)
    for dtype in DTYPES:
        for transpose in ((0, 1) if dtype in ("fp32", "fp64") else (0,)):
            for ones in (["ss3", "sd3"], ["ss1", "sd3", "channels"]):
                compile_for_gpu(m._affine_resample_kernel,
                                dict(dst_ptr=dtype, src_ptr=dtype, m_ptr=_arithmetic(dtype), f_ptr=_arithmetic(dtype)),
                                ints, (), dict(TRANSPOSE=transpose, TAPS=12, MT=64, BO=block, VALID=valid,
                                               PRECISION="tf32" if dtype in ("fp16", "bf16") else "ieee"),
                                ones, num_warps=8)


def _color_matrix():
    """color_matrix.color_matrix: out, x in the tensor's dtype, matrix and offset in the arithmetic type; sizes and
    strides (out contiguous, x contiguous or channels_last); 1 and 3 channels."""
    from ganfast.triton import color_matrix as m

    ints = "batch pixels width sxn sxc sxh sxw son soc soh sow".split()
    for dtype in DTYPES:
        for channels, ones in ((1, ["sxw", "sow"]), (3, ["sxc", "sow"])):
            compile_for_gpu(m._color_matrix_kernel, dict(out_ptr=dtype, x_ptr=dtype, m_ptr=_arithmetic(dtype),
                                                         b_ptr=_arithmetic(dtype)), ints, (),
                            dict(C=channels, BLOCK=1024), ones)


def _kernels() -> set[str]:
    """Every kernel (a @triton.jit function named ``*_kernel``) in the modules of ganfast.triton."""
    import importlib
    import pkgutil

    from triton.runtime.jit import JITFunction

    import ganfast.triton

    names = set()
    for info in pkgutil.iter_modules(ganfast.triton.__path__):
        module = importlib.import_module(f"ganfast.triton.{info.name}")
        names |= {name for name, obj in vars(module).items()
                  if isinstance(obj, JITFunction) and name.endswith("_kernel")}
    return names


def main() -> None:
    start = time.perf_counter()
    for tables in (_bias_act, _upfirdn2d, _penalty, _modulated_conv2d, _filtered_lrelu, _affine_sample,
                   _affine_resample, _color_matrix):
        tables()
    missing = _kernels() - set(COMPILED)
    if missing:
        raise AssertionError(f"kernels with no table here: {sorted(missing)}")
    print(f"compiled {len(COMPILED)} kernels in {time.perf_counter() - start:.1f} s")


def test_triton_kernels_compile_for_a_gpu():
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "compiled" in result.stdout, result.stderr[-3000:]


if __name__ == "__main__":
    main()
