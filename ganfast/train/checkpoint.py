"""Checkpoints: one ``.safetensors`` file holding every tensor, with everything else as JSON in its metadata.

Loading never unpickles: the tensors are safetensors, everything else JSON, and a model is rebuilt only from
a class exported by ``ganfast.models``. A damaged or tampered file gives a ``ValueError`` naming it.

The file is written to a temporary name in the same folder, flushed to disk and moved into place with
``os.replace``, so a crash never leaves a half-written checkpoint under the final name.

Tensor keys: ``<name>/<state_dict key>`` for each module, ``<name>/state/<param index>/<key>`` for each
optimizer's tensors, ``rng/<name>`` for RNG states. Metadata key ``ganfast``: a JSON object with the
optimizers' ``param_groups`` and non-tensor state, and whatever ``extra`` the caller passes.
"""
from __future__ import annotations

import json
import os

import torch
from safetensors.torch import safe_open, save

from .._io import atomic_write

FORMAT = "ganfast-checkpoint-1"
CHECKPOINT_NAME = "checkpoint.safetensors"  # the checkpoint inside a run directory


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
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda{i}"] = s
    meta = {"format": FORMAT, "optimizers": opt_meta, "extra": extra}
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
    except json.JSONDecodeError as exc:
        raise ValueError(f"checkpoint: {path!r} has damaged metadata (not JSON: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise ValueError(f"checkpoint: {path!r} has format {found!r}; expected {FORMAT!r}")
    if not (isinstance(meta.get("optimizers"), dict) and isinstance(meta.get("extra"), dict)):
        raise ValueError(f"checkpoint: {path!r} has damaged metadata (no 'optimizers'/'extra' objects)")
    return meta


def _read_tensors(path: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors whose keys start with ``prefix``, keys without it."""
    try:
        with safe_open(path, framework="pt") as f:
            return {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    except Exception as exc:  # e.g. a truncated file or a header whose offsets do not match the data
        raise ValueError(f"checkpoint: {path!r} has damaged tensor data ({exc})") from None


def _load_state(path: str, name: str, target, state) -> None:
    """``target.load_state_dict(state)`` (a module or an optimizer), a mismatch reported as a ValueError."""
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"checkpoint: {path!r} does not fit {name!r}: {exc}") from None


def load_checkpoint(path: str, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                    restore_rng: bool = True) -> dict:
    """Loads what :func:`save_checkpoint` wrote into ``modules``/``optimizers`` (strictly); returns ``extra``."""
    meta = _read_meta(path)
    tensors = _read_tensors(path)
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
        if torch.cuda.is_available():
            states = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng/cuda"))]
            if states:
                torch.cuda.set_rng_state_all(states[:torch.cuda.device_count()])
    return meta["extra"]


def load_generator(path: str | os.PathLike, which: str = "G_ema",
                   device: str | torch.device = "cpu") -> torch.nn.Module:
    """The generator of a training run, rebuilt from the model spec in its checkpoint and loaded with the
    weights of ``which`` ("G_ema", the one to sample from, or "G"); in eval mode, without gradients."""
    from ..models._spec import build_model
    path = checkpoint_path(path)
    models = _read_meta(path)["extra"].get("models")
    spec = models.get("G") if isinstance(models, dict) else None
    if spec is None:
        raise ValueError(f"checkpoint: {path!r} holds no model spec for G (a generator that is not one of "
                         "ganfast.models); build it yourself and use load_checkpoint")
    try:
        G = build_model(spec)
    except (TypeError, ValueError) as exc:  # a class outside ganfast.models, or arguments it does not take
        raise ValueError(f"checkpoint: {path!r} has an unusable model spec for G: {exc}") from None
    state = _read_tensors(path, prefix=f"{which}/")
    if not state:
        raise ValueError(f"checkpoint: {path!r} has no weights for {which!r}")
    _load_state(path, which, G, state)
    return G.to(device).eval().requires_grad_(False)
