"""ganfast.malloc.keep_freed_memory: a freed block's pages are reused (no fresh page faults), opt-out by env."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ganfast import malloc

ROOT = Path(__file__).resolve().parents[1]

# Allocates (malloc), touches and frees a 48 MiB block twice; prints the call's result and the minor page faults
# of the second round (a block from fresh mmapped pages faults once per 4 KiB page: about 12 thousand). 48 MiB: above
# glibc's largest mmap threshold (32 MiB), within a thread arena's heap (64 MiB), whichever arena serves it.
_PROBE = """
import ctypes, resource
from ganfast.malloc import keep_freed_memory
applied = keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def touch(size=48 << 20):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(env_value):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop(malloc.ENV, None)
    for name in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"):
        env.pop(name, None)
    if env_value is not None:
        env[malloc.ENV] = env_value
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or malloc._glibc_mallopt() is None,
                    reason="glibc's mallopt only")
def test_freed_block_is_reused_and_the_setting_opts_out():
    applied, faults = _probe(None)
    assert applied and faults < 1000, faults
    applied, faults = _probe("0")
    assert not applied and faults > 6000, faults  # glibc's default: the block is mmapped afresh
