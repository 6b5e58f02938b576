"""Hardening of checkpoint files: damaged or tampered checkpoints, hostile model arguments and foreign classes
give clear errors; nothing in ganfast unpickles."""
import json
import os
import random
import re
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save

import ganfast
from ganfast.models import MLPGenerator
from ganfast.models._spec import model_spec
from ganfast.checkpoint import FORMAT, load_checkpoint, load_generator, save_checkpoint, tensor_digest


def _generator_checkpoint(path: Path, G=None, spec=None) -> Path:
    G = G or MLPGenerator(z_dim=4, hidden=8, depth=1)
    opt = torch.optim.Adam(G.parameters())
    G(torch.randn(2, 4)).sum().backward()
    opt.step()
    save_checkpoint(str(path), {"G_ema": G}, {"opt": opt}, {"models": {"G": spec or model_spec(G)}})
    return path


def _header_span(blob: bytes) -> tuple[int, int]:
    return 8, 8 + int.from_bytes(blob[:8], "little")


def _loaders(path):
    G = MLPGenerator(z_dim=4, hidden=8, depth=1)
    yield lambda: load_generator(path)
    yield lambda: load_checkpoint(str(path), {"G_ema": G}, {"opt": torch.optim.Adam(G.parameters())},
                                  restore_rng=False)


def test_checkpoint_loads_back(tmp_path):
    path = _generator_checkpoint(tmp_path / "ok.safetensors")
    G = load_generator(path)
    assert isinstance(G, MLPGenerator) and not G.training
    for load in _loaders(path):
        load()


@pytest.mark.parametrize("damage", ["header_length", "header_not_json", "metadata_not_json", "format", "truncated",
                                    "truncated_header", "empty"])
def test_damaged_checkpoint_gives_clear_error(tmp_path, damage):
    path = _generator_checkpoint(tmp_path / "ckpt.safetensors")
    blob = bytearray(path.read_bytes())
    start, end = _header_span(blob)
    if damage == "header_length":
        blob[:8] = (len(blob) * 4).to_bytes(8, "little")
    elif damage == "header_not_json":
        blob[start] = ord("x")
    elif damage == "metadata_not_json":
        at = blob.index(b'"ganfast":"{', start) + len('"ganfast":"')
        blob[at] = ord("[")
    elif damage == "format":
        at = blob.index(FORMAT.encode(), start)
        blob[at + len("ganfast-checkpoint-")] = ord("9")
    elif damage == "truncated":
        blob = blob[:end + (len(blob) - end) // 2]
    elif damage == "truncated_header":
        blob = blob[:end // 2]
    else:
        blob = bytearray()
    path.write_bytes(bytes(blob))
    for load in _loaders(path):
        with pytest.raises(ValueError, match="checkpoint: "):
            load()


def test_random_header_flips_never_crash(tmp_path):
    """A flipped byte in the header or metadata either still loads (e.g. a float in the optimizer's settings
    changed) or raises a ValueError naming the checkpoint: never another exception, never an unpickling."""
    path = _generator_checkpoint(tmp_path / "ckpt.safetensors")
    clean = path.read_bytes()
    start, end = _header_span(clean)
    rng = random.Random(0)
    errors = 0
    for _ in range(40):
        blob = bytearray(clean)
        at = rng.randrange(start, end)
        blob[at] ^= rng.randrange(1, 256)
        path.write_bytes(bytes(blob))
        for load in _loaders(path):
            try:
                load()
            except ValueError as exc:
                assert str(exc).startswith("checkpoint: "), exc
                errors += 1
    assert errors > 20


def test_checkpoint_with_wrong_shapes_or_foreign_class(tmp_path):
    small = MLPGenerator(z_dim=4, hidden=8, depth=1)
    wrong = _generator_checkpoint(tmp_path / "wrong.safetensors", G=MLPGenerator(z_dim=4, hidden=16, depth=1),
                                  spec=model_spec(small))     # weights of another size than the spec says
    generator, checkpoint = _loaders(wrong)
    with pytest.raises(ValueError, match=r"model spec for G does not fit its weights \(.*'net.0.weight'"):
        generator()
    with pytest.raises(ValueError, match="(?s)does not fit 'G_ema'.*size mismatch"):
        checkpoint()
    for name in ("Trainer", "os.system", "BuildableModule", "Module", "__builtins__"):
        path = _generator_checkpoint(tmp_path / f"{name}.safetensors", spec={"class": name, "kwargs": {}})
        with pytest.raises(ValueError, match=f"names '{re.escape(name)}', which is not a model in ganfast.models"):
            load_generator(path)
    path = _generator_checkpoint(tmp_path / "kwargs.safetensors",
                                 spec={"class": "MLPGenerator", "kwargs": {"evil": "__import__('os')"}})
    with pytest.raises(ValueError, match="unusable model spec"):
        load_generator(path)
    meta = {"format": "ganfast-checkpoint-1", "optimizers": {}, "extra": {"models": "G"}}
    (tmp_path / "meta.safetensors").write_bytes(save({"x": torch.zeros(1)}, metadata={"ganfast": json.dumps(meta)}))
    with pytest.raises(ValueError, match="no model spec"):
        load_generator(tmp_path / "meta.safetensors")


def _rewrite(path: Path, change) -> None:
    """Rewrites a checkpoint after ``change(tensors, meta)`` edits its tensors and parsed metadata in place."""
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["ganfast"])
    change(tensors, meta)
    path.write_bytes(save(tensors, metadata={"ganfast": json.dumps(meta)}))


def test_changed_tensor_values_fail_their_digest(tmp_path):
    path = _generator_checkpoint(tmp_path / "ckpt.safetensors")
    blob = bytearray(path.read_bytes())
    start, end = _header_span(blob)
    first, _ = json.loads(blob[start:end])["G_ema/net.0.weight"]["data_offsets"]
    blob[end + first + 1] ^= 0x10                               # one bit of a weight
    path.write_bytes(bytes(blob))
    for load in _loaders(path):
        with pytest.raises(ValueError, match="is damaged: tensor '.*' fails its SHA-256 check"):
            load()


@pytest.mark.parametrize("change", ["tensor_added", "digest_removed", "digests_missing", "digest_not_str"])
def test_tensors_and_digests_must_agree(tmp_path, change):
    path = _generator_checkpoint(tmp_path / "ckpt.safetensors")
    edits = {"tensor_added": lambda t, m: t.update({"G_ema/extra": torch.zeros(2)}),
             "digest_removed": lambda t, m: m["digests"].pop("G_ema/net.0.bias"),
             "digests_missing": lambda t, m: m.pop("digests"),
             "digest_not_str": lambda t, m: m["digests"].update({"G_ema/net.0.bias": 7})}
    _rewrite(path, edits[change])
    message = {"tensor_added": "tensors and its digests differ|spec for G does not fit its weights",
               "digest_removed": "tensors and its digests differ"}.get(change, "'digests'")
    for load in _loaders(path):
        with pytest.raises(ValueError, match=message):
            load()


def test_first_format_loads_unverified(tmp_path):
    """Checkpoints written before digests existed (format 1) still load."""
    G = MLPGenerator(z_dim=4, hidden=8, depth=1)
    path = _generator_checkpoint(tmp_path / "old.safetensors", G=G)

    def first_format(tensors, meta):
        del meta["digests"]
        meta["format"] = "ganfast-checkpoint-1"
    _rewrite(path, first_format)
    loaded = load_generator(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), G.state_dict().values()))


_MLP = {"z_dim": 4, "hidden": 8, "depth": 1}


@pytest.mark.parametrize("spec, message", [
    ({"class": "MLPGenerator", "kwargs": {**_MLP, "hidden": 10 ** 7}}, "argument beyond any model's: 10000000"),
    ({"class": "MLPGenerator", "kwargs": {**_MLP, "depth": 10 ** 9}}, "argument beyond any model's"),
    ({"class": "StyleGAN2Generator", "kwargs": {"num_fp16_res": -1e308}}, "argument beyond any model's"),
    ({"class": "MLPGenerator", "kwargs": {**_MLP, "z_dim": [[[[[1]]]]]}}, "argument beyond any model's"),
    ({"class": "MLPGenerator", "kwargs": {**_MLP, "hidden": 1 << 20}}, "does not fit its weights"),
    ({"class": "MLPGenerator", "kwargs": {**_MLP, "depth": 1 << 20}}, "registers more than 72 parameters and buffers"),
    ({"class": "StyleGAN2Generator", "kwargs": {"channel_base": 0}}, "unusable model spec for G: ZeroDivisionError"),
])
def test_hostile_model_arguments_allocate_nothing(tmp_path, spec, message):
    """Arguments that would need terabytes, 10^9 layers or huge numbers are refused before anything is built;
    sane-looking ones are sized on the meta device (a 2^20-wide layer of 4 TiB, 2^20 layers: refused after 72
    registrations) and must match the stored weights; arithmetic errors on them are ValueErrors too."""
    path = _generator_checkpoint(tmp_path / "ckpt.safetensors", spec=spec)
    started = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        load_generator(path)
    assert time.perf_counter() - started < 5


def test_weights_in_another_dtype_are_refused(tmp_path):
    """Weights stored as uint8 (digests rewritten to match) would load lossily as float32: refused."""
    path = _generator_checkpoint(tmp_path / "ckpt.safetensors")

    def to_bytes(tensors, meta):
        key = "G_ema/net.0.weight"
        tensors[key] = tensors[key].to(torch.uint8)
        meta["digests"][key] = tensor_digest(tensors[key])
    _rewrite(path, to_bytes)
    for load in _loaders(path):
        with pytest.raises(ValueError, match="stores G_ema/net.0.weight as torch.uint8, but the model holds "
                                             "torch.float32"):
            load()


def test_loaded_state_does_not_follow_the_file(tmp_path):
    """Tensors are copied out of the file: rewriting it afterwards changes nothing already loaded."""
    path = _generator_checkpoint(tmp_path / "ckpt.safetensors")
    G = MLPGenerator(z_dim=4, hidden=8, depth=1)
    opt = torch.optim.Adam(G.parameters())
    load_checkpoint(str(path), {"G_ema": G}, {"opt": opt}, restore_rng=False)
    before = [t.clone() for t in (*G.state_dict().values(), *opt.state[next(iter(opt.state))].values())]
    with open(path, "r+b") as f:                                 # in place: a memory map would see it
        start, end = _header_span(f.read())
        f.seek(end)
        f.write(bytes(os.path.getsize(path) - end))
    after = [*G.state_dict().values(), *opt.state[next(iter(opt.state))].values()]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_registration_budget_counts_only_its_own_thread():
    from concurrent.futures import ThreadPoolExecutor

    from ganfast.checkpoint import _registration_budget
    with _registration_budget(2):
        with ThreadPoolExecutor(1) as pool:                       # another thread's modules are not counted
            assert pool.submit(lambda: torch.nn.Linear(3, 3)).result().weight.shape == (3, 3)
        torch.nn.Linear(3, 3)                                    # weight and bias: 2 registrations
        with pytest.raises(ValueError, match="registers more than 2"):
            torch.nn.Linear(3, 3)


@pytest.mark.parametrize("model", ["StyleGAN2Generator", "SNGANGenerator", "DCGANGenerator"])
def test_every_generator_round_trips(tmp_path, model):
    import ganfast.models
    G = getattr(ganfast.models, model)()
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(str(path), {"G_ema": G}, {}, {"models": {"G": model_spec(G)}})
    loaded = load_generator(path)
    assert type(loaded) is type(G)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), G.state_dict().values()))


def test_nothing_in_ganfast_unpickles():
    """No ``pickle``, no ``torch.load`` without ``weights_only=True``, no ``np.load(allow_pickle=True)``."""
    sources = sorted(Path(ganfast.__file__).parent.rglob("*.py"))
    assert len(sources) > 20
    for source in sources:
        text = source.read_text()
        assert not re.search(r"\b(c?pickle|dill|marshal|shelve)\b", text), source
        assert "allow_pickle=True" not in text and "weights_only=False" not in text, source
        for call in re.finditer(r"torch\.load\(", text):
            args = text[call.end():text.find(")", call.end())]
            assert "weights_only=True" in args, f"{source}: torch.load without weights_only=True"


# -- hostile files: data sets ------------------------------------------------------------------------------------

