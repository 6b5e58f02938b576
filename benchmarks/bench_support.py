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
