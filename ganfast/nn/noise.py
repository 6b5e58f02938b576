"""Where ``SynthesisLayer``'s random noise comes from: torch's global RNG by default, or one generator per
sample inside ``per_sample_noise`` — which makes a sample's noise independent of its batch (used by
``ganfast.sample`` so that an image depends on its seed alone). A context variable: it holds in the block's own
thread (and in contexts copied from it), so threads sampling side by side each draw from their own generators."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Sequence

import torch

_generators: contextvars.ContextVar[Sequence[torch.Generator] | None] = contextvars.ContextVar("ganfast_noise",
                                                                                            default=None)


@contextlib.contextmanager
def per_sample_noise(generators: Sequence[torch.Generator]) -> Iterator[None]:
    """Within the block, random noise for sample i of a batch is drawn from ``generators[i]`` (CPU generators,
    consumed in layer order), so each sample sees the same noise whatever batch it is in."""
    token = _generators.set(list(generators))
    try:
        yield
    finally:
        _generators.reset(token)


def random_noise(batch: int, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(batch, 1, height, width) standard normal noise."""
    generators = _generators.get()
    if generators is None:
        return torch.randn(batch, 1, height, width, device=device, dtype=dtype)
    if len(generators) != batch:
        raise ValueError(f"per_sample_noise was given {len(generators)} generators for a batch of {batch}")
    return torch.stack([torch.randn(1, height, width, generator=g) for g in generators]).to(device, dtype)
