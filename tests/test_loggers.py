"""Runs people can watch: TensorBoard event files read back with TensorBoard's own reader (every stats.jsonl scalar,
metric results, the sample grids), resume without duplicated points, ``--logger`` choices and errors, and metrics
computed afterwards reaching the event files once per snapshot (W&B and MLflow: test_loggers_services.py)."""
import io
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from test_train import _noise_zip

from ganfast.cli import main
from ganfast.train.loggers import metric_scalars, stat_scalars

pytest.importorskip("tensorboard", reason="tensorboard is in the test extra; without it the event files are not "
                    "written")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

RING = ["--dataset", "ring8", "--batch-size", "32", "--tick", "2", "--no-progress"]


def _events(run) -> EventAccumulator:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_event_files_hold_every_stat_metric_and_sample_grid(tmp_path, one_thread):
    """A conditional image run with ADA: every scalar of every stats.jsonl record at its nimg, the results of each
    metric record the snapshot hook returns, the config text, and the sample grids (whole and each class's row)
    equal to the PNGs written beside them."""
    from ganfast.checkpoint import checkpoint_extra, load_generator
    from ganfast.train.run import build_trainer
    returned = []

    def hook(path):  # a metric of two results and one of one, as metric-<name>.jsonl lines
        G, nimg = load_generator(path), checkpoint_extra(path)["nimg"]
        x = G(torch.randn(8, G.z_dim), torch.eye(G.c_dim)[torch.arange(8) % G.c_dim])
        records = [{"metric": "pixels8", "results": {"mean": x.mean().item(), "std": x.std().item()},
                    "kimg": nimg / 1000},
                   {"metric": "absmax8", "results": {"absmax": x.abs().max().item()}, "kimg": nimg / 1000}]
        returned.extend(records)
        return records

    out = tmp_path / "run"
    trainer, _ = build_trainer(_noise_zip(tmp_path / "d.zip"), str(out), model="dcgan", cbase=4, progress=False,
                               overrides={"batch_size": 8, "tick_steps": 2, "snapshot_ticks": 1, "num_fixed": 4,
                                          "cond": True, "keep_snapshots": True, "aug": "ada", "aug_p": 0.2,
                                          "ada_interval": 1, "ada_kimg": 0.1},
                               snapshot_hook=hook, loggers=("tensorboard",))
    trainer.train(6)
    events, stats = _events(out), _records(out / "stats.jsonl")
    assert [r["step"] for r in stats] == [2, 4, 6]
    for record in stats:
        expected = stat_scalars(record)
        assert {"stats/loss_g", "stats/aug_p", "stats/lr_g", "stats/lr_d", "stats/diversity_per_class/2",
                "stats/collapse_alarm"} <= expected.keys()
        for tag, value in expected.items():
            logged = [e.value for e in events.Scalars(tag) if e.step == round(record["kimg"] * 1000)]
            assert logged == [pytest.approx(value, rel=1e-6, abs=1e-30)], tag
    assert len({r["aug_p"] for r in stats}) > 1  # ADA's p moved: the curve is the controller's, not a constant
    assert [r["kimg"] for r in returned] == [0.016, 0.016, 0.032, 0.032, 0.048, 0.048]
    for record in returned:
        for tag, value in metric_scalars(record).items():
            assert [e.value for e in events.Scalars(tag) if e.step == round(record["kimg"] * 1000)] == \
                [pytest.approx(value, rel=1e-6)], tag
    assert {"metrics/pixels8/mean", "metrics/pixels8/std", "metrics/absmax8"} <= set(events.Tags()["scalars"])
    tags = events.Tags()
    assert {"samples", "reals", "samples/class0", "samples/class1", "samples/class2"} <= set(tags["images"])
    assert "config/text_summary" in tags["tensors"]
    grids = {e.step: _png(e.encoded_image_string) for e in events.Images("samples")}
    assert sorted(grids) == [0, 16, 32, 48]
    assert np.array_equal(grids[0], np.asarray(Image.open(out / "fakes_init.png").convert("RGB")))
    for step, nimg in ((2, 16), (4, 32), (6, 48)):
        assert np.array_equal(grids[nimg], np.asarray(Image.open(out / f"samples-{step:07d}.png").convert("RGB")))
    rows = [_png(next(e for e in events.Images(f"samples/class{k}") if e.step == 48).encoded_image_string)
            for k in range(3)]  # the grid is these rows stacked (neighbouring rows share a 1-pixel gap)
    assert np.array_equal(np.concatenate([r[:-1] for r in rows] + [rows[-1][-1:]]), grids[48])


def _raw_steps(run, tag: str) -> list[int]:
    """The steps of ``tag`` in every event file as written, without the reader's purging."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    steps = []
    for path in sorted(run.glob("events.out.tfevents.*")):
        steps += [event.step for event in EventFileLoader(str(path)).Load()
                  if any(v.tag == tag for v in event.summary.value)]
    return steps


def test_resume_continues_the_curves_without_duplicates(tmp_path, one_thread):
    """A run killed after logging ticks past its last checkpoint, then resumed: TensorBoard's reader sees each
    curve once per tick of the final stats.jsonl, with its values, and the sample grids once per snapshot, although
    the files hold the lost ticks' points too (tensorboard is the default logger when installed)."""
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "4", "--snap", "2", *RING]) == 0
    kept = (out / "checkpoint.safetensors").read_bytes()  # step 4
    assert main(["train", "--out", str(out), "--resume", "--steps", "8", *RING]) == 0
    (out / "checkpoint.safetensors").write_bytes(kept)  # as if killed after step 8's tick, before its checkpoint
    assert main(["train", "--out", str(out), "--resume", "--steps", "10", *RING]) == 0
    stats = _records(out / "stats.jsonl")
    assert [r["step"] for r in stats] == [2, 4, 6, 8, 10]
    assert sorted(_raw_steps(out, "stats/loss_g")) == [64, 128, 192, 192, 256, 256, 320]
    events = _events(out)
    for tag in ("stats/loss_g", "stats/loss_d", "stats/modes", "stats/diversity", "stats/lr_g"):
        assert [(e.step, e.value) for e in events.Scalars(tag)] == \
            [(round(r["kimg"] * 1000), pytest.approx(stat_scalars(r)[tag], rel=1e-6)) for r in stats], tag
    assert [e.step for e in events.Images("samples")] == [0, 128, 256, 320]
    assert [e.step for e in events.Images("reals")] == [0]
    assert len(events.Tensors("config/text_summary")) == 1


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 or "usage:" in err, err
    return err.splitlines()[-1]


def test_logger_choices_and_one_line_errors(tmp_path, capsys, monkeypatch, one_thread):
    """--logger none writes no event files; without the tensorboard package the default is none; a backend asked
    for whose package is missing, or an unknown name, is a one-line error before anything is written."""
    assert main(["train", "--out", str(tmp_path / "none"), "--steps", "2", "--logger", "none", *RING]) == 0
    assert "loggers   none" in capsys.readouterr().out
    assert not list((tmp_path / "none").glob("events.out.tfevents.*"))
    err = _error(capsys, ["train", "--out", str(tmp_path / "x"), "--steps", "2", "--logger", "tensorboard,neptune",
                          *RING])
    assert "--logger" in err and "neptune" in err
    monkeypatch.setitem(sys.modules, "wandb", None)  # importlib finds no such package
    err = _error(capsys, ["train", "--out", str(tmp_path / "x"), "--steps", "2", "--logger", "wandb", *RING])
    assert err.startswith("ganfast train: error: --logger wandb: the 'wandb' package is not installed")
    assert not (tmp_path / "x").exists()
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    assert main(["train", "--out", str(tmp_path / "default"), "--steps", "2", *RING]) == 0
    assert "loggers   none" in capsys.readouterr().out
    assert not list((tmp_path / "default").glob("events.out.tfevents.*"))
    err = _error(capsys, ["train", "--out", str(tmp_path / "y"), "--steps", "2", "--logger", "tensorboard", *RING])
    assert "the 'tensorboard' package is not installed" in err and 'ganfast[tb]' in err
    from ganfast.train.run import build_trainer
    with pytest.raises(ValueError, match="loggers: 'tb' is not one of tensorboard, wandb, mlflow"):
        build_trainer("ring8", str(tmp_path / "api"), loggers=("tb",), progress=False)


def test_metrics_reach_tensorboard_once_per_snapshot(tmp_path, capsys, monkeypatch, one_thread):
    """``ganfast train --metrics``: each metric-<name>.jsonl line is in the event files at its snapshot's nimg
    (fd: one result, metrics/fd100; pr: metrics/pr100/precision and /recall) and lists tensorboard. Then
    ``ganfast metrics`` twice on the run's snapshot (both are named kimg 000000: the second remains): fd200 goes
    to the run's loggers (tensorboard, from its checkpoint) the first time only, fd100 (logged by the training)
    not again; the stats curves stay as they were; ``--logger`` chooses others, and without the package of the
    run's logger it is a one-line error. Digits features: the built-in classifier, trained once per
    test session."""
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--out", str(out), "--model", "dcgan", "--cbase", "4",
                 "--batch-size", "16", "--tick", "2", "--snap", "1", "--steps", "4", "--metrics", "fd100,pr100",
                 "--no-progress"]) == 0
    events = _events(out)
    lines = _records(out / "metric-fd100.jsonl") + _records(out / "metric-pr100.jsonl")
    assert len(lines) == 4 and all(line["loggers"] == ["tensorboard"] for line in lines)
    for line in lines:
        tags = metric_scalars(line)
        assert set(tags) == ({"metrics/fd100"} if line["metric"] == "fd100" else
                             {"metrics/pr100/precision", "metrics/pr100/recall"})
        for tag, value in tags.items():
            assert [e.value for e in events.Scalars(tag) if e.step == round(line["kimg"] * 1000)] == \
                [pytest.approx(value, rel=1e-6)], tag
    stats = [(e.step, e.value) for e in events.Scalars("stats/loss_g")]
    for _ in range(2):
        assert main(["metrics", "--run", str(out), "--metrics", "fd100,fd200"]) == 0
    fd100, fd200 = _records(out / "metric-fd100.jsonl"), _records(out / "metric-fd200.jsonl")
    assert [(line["kimg"], line["loggers"]) for line in fd100] == \
        [(0.032, ["tensorboard"]), (0.064, ["tensorboard"]), (0.064, []), (0.064, [])]
    assert [(line["kimg"], line["loggers"]) for line in fd200] == [(0.064, ["tensorboard"]), (0.064, [])]
    events = _events(out)
    for tag, first in (("metrics/fd100", fd100[:2]), ("metrics/fd200", fd200[:1])):
        assert [(e.step, e.value) for e in events.Scalars(tag)] == \
            [(round(line["kimg"] * 1000), pytest.approx(line["results"]["fd"], rel=1e-6)) for line in first], tag
    assert [(e.step, e.value) for e in events.Scalars("stats/loss_g")] == stats
    assert main(["metrics", "--run", str(out), "--metrics", "fd200", "--logger", "none"]) == 0
    assert _records(out / "metric-fd200.jsonl")[-1]["loggers"] == []
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # the run's logger is gone: a one-line error first
    capsys.readouterr()
    err = _error(capsys, ["metrics", "--run", str(out), "--metrics", "fd200"])
    assert "the 'tensorboard' package is not installed" in err and "trained with --logger tensorboard" in err
    assert len(_records(out / "metric-fd200.jsonl")) == 3
