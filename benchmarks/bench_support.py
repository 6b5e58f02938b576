"""Benchmark setup: device, shapes and a timing wrapper that synchronises CUDA inside the timed call."""
import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"


def synced(fn):
    """``fn`` followed by a device synchronisation, so pytest-benchmark times the GPU work itself."""
    if not ON_GPU:
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


def shape_id(shape) -> str:
    return "x".join(map(str, shape))


def bench_copy(benchmark, op: str, shape, dtype) -> None:
    """The bandwidth floor's yardstick: copying an input of ``shape`` (an elementwise or filtering pass moves at
    least these bytes). Group "<op> copy <shape> <dtype>": summarize.py matches it to groups by shape and dtype."""
    x = torch.randn(shape, device=DEVICE, dtype=dtype)
    out = torch.empty_like(x)
    benchmark.group = f"{op} copy {shape_id(shape)} {dtype}"
    benchmark.extra_info.update(bytes=2 * x.numel() * x.element_size(), variant="copy")
    benchmark(synced(lambda: out.copy_(x)))
