"""The CUDA execution model of the tests: kernels/*.cu built with the host compiler and run on the CPU.

``build()`` compiles the sources of ``ganfast._C`` (csrc/*.cpp with ``GANFAST_WITH_CUDA``, kernels/*.cu through
``translate`` and cuda_emu.h, and the scheduler runtime.cpp) into a separate extension whose ``<op>_cuda``
functions are the real launch wrappers, launching the emulated kernels on host memory. Objects are cached under
``$GANFAST_CUDA_EMU_CACHE`` (default ``~/.cache/ganfast-cuda-emulation``) by the hash of their source, every header
and the flags, so a repeated run compiles nothing. ``emulate(module, ...)`` makes ``impl="ext"`` on CPU tensors call
those wrappers, so the op layer computes the arguments exactly as for a GPU.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.machinery
import importlib.util
import os
import re
import shutil
import subprocess
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ORDERS = {"ascending": 0, "descending": 1, "random": 2}


def cuda_include() -> Path | None:
    """The CUDA toolkit's include folder (its cuda_fp16.h / cuda_bf16.h and runtime declarations), or None."""
    candidates = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda",
                  *sorted((str(p) for p in Path("/usr/local").glob("cuda-*")), reverse=True)]
    for base in filter(None, candidates):
        if (Path(base) / "include" / "cuda_fp16.h").is_file():
            return Path(base) / "include"
    return None


def missing() -> str | None:
    """Why the model cannot be built here (a one-line reason for a skip), or None."""
    if cuda_include() is None:
        return "no CUDA toolkit headers (cuda_fp16.h) under $CUDA_HOME or /usr/local/cuda*"
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        return "no host C++ compiler (g++ or $CXX)"
    try:
        import pybind11  # noqa: F401
    except ImportError:
        return "pybind11 is not installed (pip install '.[test]')"
    return None


# ---- translation of the two constructs C++ has no spelling for ----------------------------------------------------

_SHARED = re.compile(r"(extern\s+)?__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?([A-Za-z_][\w:<>, ]*?)\s+"
                     r"([A-Za-z_]\w*)\s*((?:\[[^\]]*\])*)\s*;")


def _closing(text: str, start: int, open_: str, close: str) -> int:
    """Index just past the bracket that closes the one at ``start``."""
    depth = 0
    for i in range(start, len(text)):
        depth += (text[i] == open_) - (text[i] == close)
        if depth == 0:
            return i + 1
    raise ValueError(f"unbalanced {open_!r} at offset {start}")


def _launch_bounds(text: str) -> str:
    """``__global__ void __launch_bounds__(N) k(...) {`` -> ``__global__ void k(...) { check_launch_bounds(N);``."""
    out, pos = [], 0
    for m in re.finditer(r"__launch_bounds__\s*\(", text):
        if m.start() < pos:
            continue
        end = _closing(text, m.end() - 1, "(", ")")
        bound = text[m.end():end - 1].split(",")[0]
        body = text.index("{", end) + 1
        out += [text[pos:m.start()], text[end:body],
                f" ::cuda_emu::check_launch_bounds((long long)({bound}), __FILE__, __LINE__);"]
        pos = body
    return "".join(out) + text[pos:]


def _shared(m: re.Match) -> str:
    extern, type_, name, dims = m.groups()
    if extern:
        return f"{type_}* const {name} = static_cast<{type_}*>(::cuda_emu::dynamic_shared());"
    return (f"static char {name}_emu_key; auto& {name} = ::cuda_emu::shared_array<{type_}{dims}>(&{name}_emu_key, "
            f"\"{name}\", __FILE__, __LINE__);")


def _launches(text: str) -> str:
    """``kernel<T><<<grid, block, bytes, stream>>>(args)`` -> ``::cuda_emu::launch(config, kernel<T>, ...)``."""
    while (at := text.find("<<<")) >= 0:
        start = at
        while text[start - 1].isspace():
            start -= 1
        if text[start - 1] == ">":  # template arguments
            depth = 0
            while True:
                start -= 1
                depth += (text[start] == ">") - (text[start] == "<")
                if depth == 0:
                    break
        while re.match(r"[\w:]", text[start - 1]):
            start -= 1
        kernel = text[start:at].strip()
        close = text.index(">>>", at)
        config = text[at + 3:close]
        paren = text.index("(", close)
        end = _closing(text, paren, "(", ")")
        args = text[paren + 1:end - 1].strip()
        text = (text[:start] + f"::cuda_emu::launch(::cuda_emu::LaunchConfig({config}), {kernel}, \"{kernel}\", "
                f"__FILE__, __LINE__{', ' + args if args else ''})" + text[end:])
    return text


def translate(source: str, path: str) -> str:
    """CUDA source -> C++ for cuda_emu.h, line for line (``#line`` keeps the original file and lines in messages)."""
    text = _launches(_SHARED.sub(_shared, _launch_bounds(source)))
    return f'#include "cuda_emu.h"\n#line 1 "{path}"\n{text}'


# ---- build ----------------------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ganfast-cuda-emulation"
    path = Path(os.environ.get("GANFAST_CUDA_EMU_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic_write(path: Path, data: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "w") as f:
        f.write(data)
    os.replace(tmp, path)


def _compile(cxx: list[str], source: Path, flags: list[str], obj: Path) -> None:
    tmp = obj.with_name(obj.name + f".{os.getpid()}.tmp")
    run = subprocess.run([*cxx, *flags, "-c", str(source), "-o", str(tmp)], capture_output=True, text=True)
    if run.returncode:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"compiling {source} for the CUDA emulation failed:\n{run.stderr[-6000:]}")
    os.replace(tmp, obj)


def build(sanitize: bool = False, replace: dict[str, str] | None = None, jobs: int = 2) -> Path:
    """The emulation extension's path, built on first use. ``replace`` maps a kernels/ file name to the source
    to use instead (the mutation tests); ``sanitize`` builds the kernels and the scheduler with AddressSanitizer
    (load it in a process started with ``asan_environment()``)."""
    import pybind11

    cache = cache_dir()
    cxx = [os.environ.get("CXX", "g++")]
    flags = ["-std=c++20", "-fPIC", "-fopenmp", "-fvisibility=hidden", "-w",
             f"-I{HERE}", f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'kernels'}", f"-I{cuda_include()}",
             f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}",
             "-DGANFAST_WITH_CUDA=1", '-DGANFAST_CUDA_ARCHS="emulated"']
    headers = sorted([*(ROOT / "csrc").glob("*.h"), *(ROOT / "kernels").glob("*.cuh"), *HERE.glob("*.h")])
    header_hash = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in headers)).hexdigest()

    # (name, C++ source text, extra flags): the host code (bindings, CPU kernels, never run here) unoptimised and
    # uninstrumented; the kernels and the scheduler optimised and, with `sanitize`, under AddressSanitizer
    device = ["-O1", *(["-fsanitize=address", "-fno-omit-frame-pointer"] if sanitize else [])]
    units = [(path.name, path.read_text(), ["-O0"]) for path in sorted((ROOT / "csrc").glob("*.cpp"))]
    for path in sorted((ROOT / "kernels").glob("*.cu")):
        source = (replace or {}).get(path.name, path.read_text())
        units.append((path.name + ".cpp", translate(source, f"kernels/{path.name}"), device))
    units.append(("runtime.cpp", (HERE / "runtime.cpp").read_text(), device))

    jobs_list, objects = [], []
    for name, text, extra in units:
        key = hashlib.sha256("\0".join([name, text, header_hash, *cxx, *flags, *extra]).encode()).hexdigest()[:24]
        obj = cache / f"{key}.o"
        objects.append(obj)
        if not obj.exists():
            src = cache / f"{key}-{name}"
            _atomic_write(src, text)
            jobs_list.append((src, [*flags, *extra], obj))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(lambda job: _compile(cxx, *job), jobs_list))

    link_key = hashlib.sha256("\0".join([*(o.name for o in objects), str(sanitize)]).encode()).hexdigest()[:24]
    library = cache / f"_C-emu-{link_key}{sysconfig.get_config_var('EXT_SUFFIX')}"
    if not library.exists():
        tmp = library.with_name(library.name + f".{os.getpid()}.tmp")
        link = [*cxx, "-shared", "-fopenmp", *(["-fsanitize=address"] if sanitize else []), *map(str, objects),
                "-o", str(tmp)]
        run = subprocess.run(link, capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"linking the CUDA emulation failed:\n{run.stderr[-6000:]}")
        os.replace(tmp, library)
    return library


def asan_environment() -> dict[str, str]:
    """The environment of a Python process that can load a ``build(sanitize=True)`` extension: the host compiler's
    ASan runtime preloaded, leak checks off (CPython and torch keep their allocations at exit)."""
    cxx = os.environ.get("CXX", "g++")
    runtime = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return {**os.environ, "LD_PRELOAD": runtime, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=99"}


_LOADED: dict[Path, object] = {}


def load(library: Path):
    """The emulation extension at ``library`` (a module like ``ganfast._C``), loaded once per process."""
    if library not in _LOADED:
        # a package-qualified name per build: the interpreter keeps one single-phase extension module per name
        name = f"ganfast_cuda_emulation_{len(_LOADED)}._C"
        loader = importlib.machinery.ExtensionFileLoader(name, str(library))
        spec = importlib.util.spec_from_file_location(name, library, loader=loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        module.handle = ctypes.CDLL(str(library))
        module.handle.cuda_emu_configure.argtypes = [ctypes.c_int, ctypes.c_ulonglong, ctypes.c_int, ctypes.c_int]
        _LOADED[library] = module
    return _LOADED[library]


def configure(module, order: str = "ascending", seed: int = 0, multiprocessors: int = 132,
              max_grid_z: int = 65535) -> None:
    """Thread and block order of the following launches, and the device attributes the launchers query."""
    module.handle.cuda_emu_configure(ORDERS[order], seed, multiprocessors, max_grid_z)


def stats(module) -> dict[str, int]:
    """Counters since the module was loaded: launches, blocks, threads, barriers and warp exchanges completed."""
    out = (ctypes.c_ulonglong * 5)()
    module.handle.cuda_emu_stats(out)
    return dict(zip(("launches", "blocks", "threads", "barriers", "shuffles"), out))


@contextlib.contextmanager
def emulate(module, **config):
    """Inside: ganfast's compiled-kernel launches for CPU tensors run the emulated CUDA launchers of ``module``
    (device 0, the default stream), and the op layer takes the CUDA kernels' paths (``_ext.runs_cuda_kernels``)."""
    from ganfast import _ext

    configure(module, **config)
    saved = _ext.launch, _ext.runs_cuda_kernels

    def launch(kernel_name, device, *args):
        getattr(module, f"{kernel_name}_cuda")(*args, 0, 0)

    _ext.launch, _ext.runs_cuda_kernels = launch, lambda device: True
    try:
        yield module
    finally:
        _ext.launch, _ext.runs_cuda_kernels = saved
