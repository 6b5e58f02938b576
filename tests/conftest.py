"""Test setup: the Triton interpreter on machines without a GPU, and a fixed seed per test."""
import os

import torch

if not torch.cuda.is_available():
    # Must be set before any @triton.jit function is created (ganfast.triton is imported lazily).
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One torch CPU thread for the test: small models train many times faster single-threaded on a shared CPU
    (see ganfast.train.trainer.set_threads); the previous setting is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """ganfast's caches (decoded data sets, the digits classifier) go to this session's temporary folder, never
    to the user's ~/.cache; subprocesses inherit it."""
    if "GANFAST_CACHE" not in os.environ:
        monkeypatch.setenv("GANFAST_CACHE", str(tmp_path_factory.getbasetemp() / "ganfast-cache"))
