"""The W&B and MLflow backends against the real packages, read back with their own formats: W&B offline (the
``.wandb`` transaction logs in the run folder, whose records are wandb's protobuf messages) and MLflow's folder
store (``MlflowClient``: metric histories by step, image artifacts). A resumed run continues every curve without
a duplicated step, and metrics computed afterwards arrive once per snapshot. Both packages are in the test extra;
without them the tests are skipped."""
import glob
import json
import re
import struct

import numpy as np
import pytest
from PIL import Image
from test_loggers import RING, _records

from ganfast.cli import main
from ganfast.train.loggers import stat_scalars

wandb = pytest.importorskip("wandb", reason="wandb (test extra) is not installed")
pytest.importorskip("mlflow", reason="mlflow-skinny (test extra) is not installed")
from mlflow.tracking import MlflowClient  # noqa: E402
from wandb.proto import wandb_internal_pb2  # noqa: E402


@pytest.fixture
def services(tmp_path, monkeypatch):
    """W&B offline with its own folders in the test's, MLflow on the run folder's default store."""
    for name in ("WANDB_MODE", "WANDB_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")  # set by the logger itself; restored (unset) afterwards
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")


def _wandb_records(path: str) -> list:
    """The records of a ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then LevelDB's log format:
    32 KiB blocks of chunks, each a 7-byte header (checksum, length, type: 1 whole, 2 first, 3 middle, 4 last)
    and its bytes; a block's last 6 bytes or fewer are padding."""
    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding up to the next block
            pos += room
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _wandb_rows(run) -> list[dict]:
    """The history rows of every offline W&B run in the run folder (one per process), in order."""
    rows = []
    for path in sorted(glob.glob(str(run / "wandb" / "offline-run-*" / "run-*.wandb"))):
        rows += [{"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in r.history.item}
                 for r in _wandb_records(path) if r.WhichOneof("record_type") == "history"]
    return rows


def _mlflow(run):
    client = MlflowClient(tracking_uri=f"file:{run}/mlruns")
    return client, (run / "mlflow-id.txt").read_text()


def _image_steps(client, run_id: str, key: str) -> list[int]:
    """The steps of the PNGs ``mlflow.log_image`` stored under ``key``."""
    pattern = re.compile(rf"images/{key}\+step\+(\d+)\+timestamp\+\d+\+[0-9a-f-]+\.png")
    return sorted(int(m[1]) for a in client.list_artifacts(run_id, "images") if (m := pattern.fullmatch(a.path)))


def test_resumed_run_continues_wandb_and_mlflow_curves_once(tmp_path, services, one_thread):
    """A run killed after logging two ticks past its checkpoint, then resumed (as in test_loggers): every W&B and
    MLflow curve holds each tick's nimg once, with stats.jsonl's value (training repeats exactly from the
    checkpoint), and each snapshot's sample grid once; W&B's grids are the PNGs of the run folder, MLflow has
    the configuration as parameters. The interrupted process's points stay; the resumed one sends only later
    steps (logger-steps.json)."""
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--snap", "1", "--logger", "wandb,mlflow", *RING]
    assert main([*argv, "--steps", "4"]) == 0
    kept = (out / "checkpoint.safetensors").read_bytes()  # step 4
    assert main([*argv, "--resume", "--steps", "8"]) == 0
    (out / "checkpoint.safetensors").write_bytes(kept)  # as if killed after step 8's tick, before its checkpoint
    assert main([*argv, "--resume", "--steps", "10"]) == 0
    assert json.loads((out / "logger-steps.json").read_text()) == {"wandb": 320, "mlflow": 320}
    stats = _records(out / "stats.jsonl")
    expected = {round(r["kimg"] * 1000): stat_scalars(r) for r in stats}
    assert sorted(expected) == [64, 128, 192, 256, 320]
    rows = _wandb_rows(out)
    assert len(glob.glob(str(out / "wandb" / "offline-run-*"))) == 3
    for tag in ("stats/loss_g", "stats/loss_d", "stats/modes", "stats/lr_g"):
        assert [(row["nimg"], row[tag]) for row in rows if tag in row] == \
            [(step, pytest.approx(values[tag], rel=1e-6)) for step, values in expected.items()], tag
    grids = [row for row in rows if "samples/path" in row]
    assert [row["nimg"] for row in grids] == [0, 64, 128, 192, 256, 320]
    media = glob.glob(str(out / "wandb" / "offline-run-*" / "files" / grids[-1]["samples/path"]))
    assert np.array_equal(np.asarray(Image.open(media[0]).convert("RGB")),
                          np.asarray(Image.open(out / "samples-0000010.png").convert("RGB")))
    client, run_id = _mlflow(out)
    for tag in ("stats/loss_g", "stats/loss_d", "stats/modes", "stats/lr_g"):
        assert [(m.step, m.value) for m in client.get_metric_history(run_id, tag)] == \
            [(step, pytest.approx(values[tag], rel=1e-6)) for step, values in expected.items()], tag
    assert _image_steps(client, run_id, "samples") == [0, 64, 128, 192, 256, 320]
    params = client.get_run(run_id).data.params
    assert params["config.batch_size"] == "32" and params["run.dataset"] == "ring8"


def test_metrics_afterwards_reach_wandb_and_mlflow_once(tmp_path, services, one_thread):
    """``ganfast metrics`` on an earlier snapshot (nimg 32) of a run trained on to nimg 64 with --logger
    wandb,mlflow: fd100 reaches both at 32, below their latest step; again with --logger tensorboard,wandb it
    reaches TensorBoard only (W&B has it). Each backend holds one point, and TensorBoard's training curves
    keep theirs."""
    import shutil

    from test_loggers import _events
    out = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--out", str(out), "--model", "dcgan", "--cbase", "4", "--batch-size",
            "16", "--tick", "2", "--snap", "1", "--logger", "tensorboard,wandb,mlflow", "--no-progress"]
    assert main([*argv, "--steps", "2"]) == 0
    early = tmp_path / "early.safetensors"  # the next snapshot (also kimg 000000) replaces it in the run folder
    shutil.copy(out / "network-snapshot-000000.safetensors", early)
    assert main([*argv, "--resume", "--steps", "4", "--logger", "wandb,mlflow"]) == 0
    shutil.copy(early, out / "early.safetensors")
    for loggers in ([], ["--logger", "tensorboard,wandb"]):
        assert main(["metrics", "--checkpoint", str(out / "early.safetensors"), "--metrics", "fd100", *loggers]) == 0
    lines = _records(out / "metric-fd100.jsonl")
    assert [(line["kimg"], line["loggers"]) for line in lines] == [(0.032, ["wandb", "mlflow"]),
                                                                   (0.032, ["tensorboard"])]
    value = pytest.approx(lines[0]["results"]["fd"], rel=1e-6)
    rows = _wandb_rows(out)
    assert [(row["nimg"], row["metrics/fd100"]) for row in rows if "metrics/fd100" in row] == [(32, value)]
    assert [row["nimg"] for row in rows if "stats/loss_g" in row] == [32, 64]
    client, run_id = _mlflow(out)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "metrics/fd100")] == [(32, value)]
    events = _events(out)
    assert [(e.step, e.value) for e in events.Scalars("metrics/fd100")] == \
        [(32, pytest.approx(lines[1]["results"]["fd"], rel=1e-6))]
    assert [e.step for e in events.Scalars("stats/loss_g")] == [32]  # tensorboard: the first process only
