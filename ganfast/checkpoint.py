"""Checkpoints: one ``.safetensors`` file holding every tensor, with everything else as JSON in its metadata.

Loading never unpickles: the tensors are safetensors, everything else JSON, and a model is rebuilt only from
a class exported by ``ganfast.models``. Every tensor's SHA-256 (of its dtype, shape and bytes) is stored in the
metadata and checked as it is read. A damaged or tampered file gives a ``ValueError`` naming it. (A digest
catches damage, not a forger, who can rewrite it; a forged file still runs no code.)

The file is written to a temporary name in the same folder, flushed to disk and moved into place with
``os.replace``, so a crash never leaves a half-written checkpoint under the final name.

Tensor keys: ``<name>/<state_dict key>`` for each module, ``<name>/state/<param index>/<key>`` for each
optimizer's tensors, ``rng/<name>`` for RNG states. Metadata key ``ganfast``: a JSON object with the
optimizers' ``param_groups`` and non-tensor state, the tensors' ``digests`` and whatever ``extra`` the caller
passes. Files of the first format (no digests) still load, unverified.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading

import torch
from safetensors.torch import safe_open, save

from ._io import atomic_write

FORMAT = "ganfast-checkpoint-2"
_UNVERIFIED_FORMAT = "ganfast-checkpoint-1"  # the same without digests
CHECKPOINT_NAME = "checkpoint.safetensors"  # the checkpoint inside a run directory


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 (hex) of a tensor's dtype, shape and bytes in row-major order."""
    h = hashlib.sha256(f"{t.dtype}{list(t.shape)}".encode())
    h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _flatten_optimizer(name: str, state: dict, tensors: dict) -> dict:
    plain = {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{name}/state/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                plain.setdefault(str(index), {})[key] = value
    return {"param_groups": state["param_groups"], "plain_state": plain}


def _unflatten_optimizer(name: str, meta: dict, tensors: dict) -> dict:
    state: dict[int, dict] = {}
    prefix = f"{name}/state/"
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, field = key[len(prefix):].split("/", 1)
            state.setdefault(int(index), {})[field] = value
    for index, plain in meta["plain_state"].items():
        state.setdefault(int(index), {}).update(plain)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: str, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                    extra: dict) -> None:
    """Atomically writes ``modules``' state dicts, ``optimizers``' states, the RNG states and ``extra`` (JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"{name}/{key}"] = value.detach().cpu().contiguous().clone()
    opt_meta = {name: _flatten_optimizer(name, opt.state_dict(), tensors) for name, opt in optimizers.items()}
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        # The current device's stream: every rank seeds and draws alike, so rank 0's state is every rank's.
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    digests = {key: tensor_digest(value) for key, value in tensors.items()}
    meta = {"format": FORMAT, "optimizers": opt_meta, "digests": digests, "extra": extra}
    blob = save(tensors, metadata={"ganfast": json.dumps(meta)})
    atomic_write(path, lambda f: f.write(blob))


def checkpoint_path(path: str | os.PathLike) -> str:
    """A checkpoint file itself, or a run directory holding ``checkpoint.safetensors``; it must exist."""
    path = os.fspath(path)
    file = os.path.join(path, CHECKPOINT_NAME) if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"checkpoint: no checkpoint at {file!r}")
    return file


def _read_meta(path: str) -> dict:
    try:
        with safe_open(path, framework="pt") as f:
            raw = (f.metadata() or {}).get("ganfast")
    except Exception as exc:  # safetensors' own error types differ between versions
        raise ValueError(f"checkpoint: {path!r} is not a readable safetensors file ({exc})") from None
    if raw is None:
        raise ValueError(f"checkpoint: {path!r} is not a ganfast checkpoint (no 'ganfast' metadata)")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser goes
        raise ValueError(f"checkpoint: {path!r} has damaged metadata (not JSON: {exc!r})") from None
    if not isinstance(meta, dict) or meta.get("format") not in (FORMAT, _UNVERIFIED_FORMAT):
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise ValueError(f"checkpoint: {path!r} has format {found!r}; expected {FORMAT!r} or {_UNVERIFIED_FORMAT!r}")
    if not (isinstance(meta.get("optimizers"), dict) and isinstance(meta.get("extra"), dict)):
        raise ValueError(f"checkpoint: {path!r} has damaged metadata (no 'optimizers'/'extra' objects)")
    digests = meta.setdefault("digests", None) if meta["format"] == _UNVERIFIED_FORMAT else meta.get("digests")
    if digests is not None and not (isinstance(digests, dict) and all(isinstance(v, str) for v in digests.values())):
        raise ValueError(f"checkpoint: {path!r} has damaged metadata ('digests' is not an object of strings)")
    if digests is None and meta["format"] == FORMAT:
        raise ValueError(f"checkpoint: {path!r} has damaged metadata (no 'digests')")
    return meta


def _open_tensors(path: str, read):
    """``read(f)`` on the file opened with ``safe_open``, its errors reported as a ValueError naming it."""
    try:
        with safe_open(path, framework="pt") as f:
            return read(f)
    except Exception as exc:  # e.g. a truncated file or a header whose offsets do not match the data
        raise ValueError(f"checkpoint: {path!r} has damaged tensor data ({exc})") from None


def _read_tensors(path: str, meta: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors whose keys start with ``prefix`` (keys without it), checked against their digests. They are
    copied out of the file's memory map first, so that a later change to the file cannot reach them."""
    tensors = _open_tensors(path, lambda f: {k: f.get_tensor(k).clone() for k in f.keys() if k.startswith(prefix)})
    digests = meta["digests"]
    if digests is not None:
        listed = {k for k in digests if k.startswith(prefix)}
        if listed != tensors.keys():
            odd = sorted(listed.symmetric_difference(tensors))[:4]
            raise ValueError(f"checkpoint: {path!r} is damaged: its tensors and its digests differ (e.g. {odd})")
        for key, value in tensors.items():
            if tensor_digest(value) != digests[key]:
                raise ValueError(f"checkpoint: {path!r} is damaged: tensor {key!r} fails its SHA-256 check")
    return {k[len(prefix):]: v for k, v in tensors.items()}


def _load_state(path: str, name: str, target, state) -> None:
    """``target.load_state_dict(state)`` (a module or an optimizer), a mismatch reported as a ValueError. A
    module's entries must be stored in the dtypes it holds (load_state_dict would convert them silently)."""
    if isinstance(target, torch.nn.Module):
        held = target.state_dict()
        for key, value in state.items():
            if key in held and held[key].dtype != value.dtype:
                raise ValueError(f"checkpoint: {path!r} stores {name}/{key} as {value.dtype}, but the model holds "
                                 f"{held[key].dtype}")
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"checkpoint: {path!r} does not fit {name!r}: {exc}") from None


def load_checkpoint(path: str, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                    restore_rng: bool = True) -> dict:
    """Loads what :func:`save_checkpoint` wrote into ``modules``/``optimizers`` (strictly); returns ``extra``."""
    meta = _read_meta(path)
    tensors = _read_tensors(path, meta)
    for name, module in modules.items():
        prefix = f"{name}/"
        _load_state(path, name, module, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, opt in optimizers.items():
        if name not in meta["optimizers"]:
            raise ValueError(f"checkpoint: {path!r} holds no state for the optimizer {name!r}")
        try:
            state = _unflatten_optimizer(name, meta["optimizers"][name], tensors)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"checkpoint: {path!r} has damaged state for the optimizer {name!r} ({exc!r})") from None
        _load_state(path, name, opt, state)
    if restore_rng:
        rng = tensors.get("rng/torch")
        if rng is None or rng.dtype != torch.uint8:
            raise ValueError(f"checkpoint: {path!r} holds no valid 'rng/torch' state")
        torch.set_rng_state(rng)
        cuda_rng = tensors.get("rng/cuda", tensors.get("rng/cuda0"))  # rng/cuda0: rank 0's, in older checkpoints
        if torch.cuda.is_available() and cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng)  # each rank's own device (run.py makes it the current one)
    return meta["extra"]


MAX_SPEC_NUMBER = 1 << 20  # no argument of a ganfast model is that large (channels, resolution, layers)


def _check_spec_values(path: str, value, depth: int = 0) -> None:
    """Refuses model arguments beyond any real model's before anything is built from them: numbers of magnitude
    over MAX_SPEC_NUMBER (a layer count of 10**9 makes lists before any weight exists), non-finite floats, strings
    over 256 characters, lists or objects of over 64 entries or nested over 4 deep."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        fits = math.isfinite(value) and abs(value) <= MAX_SPEC_NUMBER
    elif isinstance(value, str):
        fits = len(value) <= 256
    elif isinstance(value, (list, dict)):
        fits = depth < 4 and len(value) <= 64
        if fits:
            for item in value.values() if isinstance(value, dict) else value:
                _check_spec_values(path, item, depth + 1)
    else:
        fits = False
    if not fits:
        raise ValueError(f"checkpoint: {path!r} has a model spec for G with an argument beyond any model's: "
                         f"{repr(value)[:80]}")


@contextlib.contextmanager
def _registration_budget(limit: int):
    """Raises ValueError once more than ``limit`` parameters and buffers are registered on modules by this
    thread (the hooks are process-wide; other threads' modules are not counted)."""
    count, owner = 0, threading.get_ident()

    def count_one(module, name, tensor):
        nonlocal count
        if threading.get_ident() != owner:
            return
        count += 1
        if count > limit:
            raise ValueError(f"it registers more than {limit} parameters and buffers")

    handles = [torch.nn.modules.module.register_module_parameter_registration_hook(count_one),
               torch.nn.modules.module.register_module_buffer_registration_hook(count_one)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _build_to_fit(path: str, spec, stored: dict[str, list[int]]) -> torch.nn.Module:
    """``build_model(spec)``, once its state-dict shapes are known to be ``stored``'s: the arguments are checked
    for sane sizes, then the model is built on the meta device (no memory for weights) within a registration
    budget, so that arguments changed in the file cannot make ganfast allocate much more than the file holds."""
    from .models._spec import build_model
    _check_spec_values(path, spec)
    try:
        with _registration_budget(2 * len(stored) + 64), torch.device("meta"):
            probe = build_model(spec)
    except Exception as exc:  # a foreign class, bad arguments, arithmetic on them (zero channels, ...)
        raise ValueError(f"checkpoint: {path!r} has an unusable model spec for G: {exc!r}") from None
    expected = {k: list(v.shape) for k, v in probe.state_dict().items()}
    if expected != stored:
        odd = sorted(k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k))[:4]
        raise ValueError(f"checkpoint: {path!r}: its model spec for G does not fit its weights "
                         f"(differing entries, e.g. {odd})")
    return build_model(spec)


def load_generator(path: str | os.PathLike, which: str = "G_ema",
                   device: str | torch.device = "cpu") -> torch.nn.Module:
    """The generator of a training run, rebuilt from the model spec in its checkpoint and loaded with the
    weights of ``which`` ("G_ema", the one to sample from, or "G"); in eval mode, without gradients. A
    class-conditional generator also gets ``class_counts``: the training set's images per class (what
    sampling draws labels from); one trained on label vectors gets ``label_vectors = True``."""
    path = checkpoint_path(path)
    meta = _read_meta(path)
    models = meta["extra"].get("models")
    spec = models.get("G") if isinstance(models, dict) else None
    if spec is None:
        raise ValueError(f"checkpoint: {path!r} holds no model spec for G (a generator that is not one of "
                         "ganfast.models); build it yourself and use load_checkpoint")
    prefix = f"{which}/"
    stored = _open_tensors(path, lambda f: {k[len(prefix):]: list(f.get_slice(k).get_shape())
                                            for k in f.keys() if k.startswith(prefix)})
    if not stored:
        raise ValueError(f"checkpoint: {path!r} has no weights for {which!r}")
    G = _build_to_fit(path, spec, stored)
    _load_state(path, which, G, _read_tensors(path, meta, prefix))
    labels = meta["extra"].get("labels")
    counts = labels.get("class_counts") if isinstance(labels, dict) else None
    if isinstance(labels, dict) and labels.get("num_classes") is None and getattr(G, "c_dim", 0):
        G.label_vectors = True  # trained on label vectors, not classes: sampling needs them given
    if counts is not None:
        if not (isinstance(counts, list) and len(counts) == getattr(G, "c_dim", 0)
                and all(isinstance(n, int) and n >= 0 for n in counts) and sum(counts) > 0):
            raise ValueError(f"checkpoint: {path!r} has damaged label metadata (class_counts {str(counts)[:80]})")
        G.class_counts = counts
    return G.to(device).eval().requires_grad_(False)


def checkpoint_extra(path: str | os.PathLike) -> dict:
    """The ``extra`` object of a checkpoint (a file or a run folder), read from its metadata without its tensors."""
    return _read_meta(checkpoint_path(path))["extra"]
