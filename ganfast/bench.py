"""Timing helpers shared by ``ganfast bench``, the demo and ``benchmarks/``.

Each row compares ganfast with the eager reference (and torch.compile(reference) when asked) on one shape
and reports achieved GB/s against the copy bandwidth measured in the same run: the floor of an elementwise
pass is bytes moved ÷ copy bandwidth.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

DEFAULT_SHAPES = {"cpu": [(8, 64, 32, 32), (4, 128, 64, 64)], "cuda": [(32, 512, 64, 64), (32, 128, 256, 256)]}
DEFAULT_DTYPES = {"cpu": ["float32"], "cuda": ["float32", "bfloat16", "float16"]}


def time_fn(fn: Callable[[], object], device: torch.device, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds per call of ``fn``, synchronising CUDA around each timed call."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _parse_shape(s) -> tuple[int, ...]:
    return tuple(int(v) for v in s.lower().split("x")) if isinstance(s, str) else tuple(s)


def run_bias_act_bench(device: str | None = None, shapes=None, dtypes=None, repeats: int = 20,
                       with_compile: bool | None = None) -> list[dict]:
    """bias_act(lrelu, clamp=256) forward: ganfast (auto) vs eager reference [vs torch.compile(reference)]."""
    from ganfast.ops import bias_act
    from ganfast.reference import bias_act as bias_act_ref

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with_compile = dev.type == "cuda" if with_compile is None else with_compile
    compiled_ref = torch.compile(bias_act_ref) if with_compile else None
    rows = []
    for shape in [_parse_shape(s) for s in (shapes or DEFAULT_SHAPES[dev.type])]:
        for dtype_name in dtypes or DEFAULT_DTYPES[dev.type]:
            dtype = getattr(torch, dtype_name)
            x = torch.randn(shape, device=dev, dtype=dtype)
            b = torch.randn(shape[1], device=dev, dtype=dtype)
            kwargs = dict(act="lrelu", clamp=256.0)
            bytes_moved = 2 * x.numel() * x.element_size()
            copy_out = torch.empty_like(x)
            t_copy = time_fn(lambda: copy_out.copy_(x), dev, repeats)
            t_ref = time_fn(lambda: bias_act_ref(x, b, **kwargs), dev, repeats)
            t_ours = time_fn(lambda: bias_act(x, b, **kwargs), dev, repeats)
            row = {"op": "bias_act", "device": str(dev), "shape": "x".join(map(str, shape)), "dtype": dtype_name,
                   "ganfast_ms": t_ours * 1e3, "ref_ms": t_ref * 1e3, "speedup_vs_ref": t_ref / t_ours,
                   "ganfast_GBps": bytes_moved / t_ours / 1e9, "copy_GBps": bytes_moved / t_copy / 1e9,
                   "floor_ms": t_copy * 1e3, "pct_of_copy_bw": 100 * t_copy / t_ours}
            if compiled_ref is not None:
                t_comp = time_fn(lambda: compiled_ref(x, b, **kwargs), dev, repeats)
                row.update(compiled_ms=t_comp * 1e3, speedup_vs_compiled=t_comp / t_ours)
            rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """Rows as a markdown table."""
    cols = ["shape", "dtype", "ganfast_ms", "ref_ms", "speedup_vs_ref", "compiled_ms", "speedup_vs_compiled",
            "ganfast_GBps", "copy_GBps", "pct_of_copy_bw"]
    cols = [c for c in cols if any(c in r for r in rows)]
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
