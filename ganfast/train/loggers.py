"""Live views of a run: TensorBoard, Weights & Biases and MLflow behind one small interface.

Every backend receives the same things, all indexed by the number of real images shown so far (``nimg``, the step
axis StyleGAN2-ADA's curves use, times 1000): the scalars of each ``stats.jsonl`` record (``stats/<key>``, lists
as ``stats/<key>/<i>``), the results of each metric line (``metrics/<name>`` or ``metrics/<name>/<result>``),
and pictures (``samples`` at each snapshot, ``samples/class<k>`` for the rows of a class-conditional grid,
``reals`` at the start). None of the packages is required by ganfast; asking for one that is missing is a
one-line ValueError.

Resume: a run continued from its checkpoint at ``nimg = N`` opens its backends with ``resume_step = N``.
TensorBoard's writer then marks the event files so that its reader drops every event past N that the
interrupted process wrote (``purge_step``): the curves continue without duplicates. W&B and MLflow cannot drop
points; they reopen the same run (its id is kept in ``wandb-id.txt`` / ``mlflow-id.txt``) and the highest step
the training sent each of them is kept in ``logger-steps.json``: a resumed run sends them only steps above it,
so the points the interrupted process logged after its checkpoint stay, once.

Metrics computed afterwards (``ganfast metrics``) reach the backends with ``resume_step = None``: points added
at their snapshot's step, nothing purged. Each ``metric-<name>.jsonl`` line lists the backends that were sent
its results (``loggers``); a result goes to a backend only if no earlier line of the same snapshot lists it
(:func:`log_metric`), so recomputing a metric adds no second point.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import uuid

import numpy as np

from .._io import atomic_write

BACKENDS = ("tensorboard", "wandb", "mlflow")  # each the name of its package too


def default_loggers() -> list[str]:
    """``ganfast train``'s default: TensorBoard when its package is installed (``pip install "ganfast[tb]"``),
    else none."""
    return ["tensorboard"] if importlib.util.find_spec("tensorboard") is not None else []


def parse_loggers(text: str) -> list[str]:
    """Comma-separated backend names (``none``: no logger); a ValueError naming a name that is not one."""
    names = [n for n in text.replace(" ", "").split(",") if n]
    if names == ["none"]:
        return []
    bad = [n for n in names if n not in BACKENDS]
    if bad or not names:
        raise ValueError(f"expected 'none' or a comma-separated list of {', '.join(BACKENDS)}; got {text!r}")
    return list(dict.fromkeys(names))


def scalars_of(record: dict, prefix: str) -> dict[str, float]:
    """The numbers of a record as ``{prefix/key: value}``: booleans as 0/1, lists of numbers as ``key/<i>``;
    strings, None and non-finite values are left out."""
    out = {}
    for key, value in record.items():
        items = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
        for i, v in items:
            if isinstance(v, (bool, np.bool_)):
                v = int(v)
            if isinstance(v, (int, float, np.number)) and math.isfinite(float(v)):
                out[f"{prefix}/{key}" + ("" if i is None else f"/{i}")] = float(v)
    return out


def stat_scalars(record: dict) -> dict[str, float]:
    """The curves of a ``stats.jsonl`` record as ``stats/<key>``: its scalars and lists of numbers, but not the
    tick, step, kimg (the step axis) or time; ``classes_dropped`` (class indices) as their count."""
    curves = {k: v for k, v in record.items() if k not in ("tick", "step", "kimg", "time")}
    if "classes_dropped" in curves:
        curves["classes_dropped"] = len(curves["classes_dropped"])
    return scalars_of(curves, "stats")


def metric_scalars(record: dict) -> dict[str, float]:
    """A ``metric-<name>.jsonl`` record's results: ``metrics/<name>`` for a single result, else
    ``metrics/<name>/<result>``."""
    values = scalars_of(record.get("results", {}), f"metrics/{record['metric']}")
    if len(values) == 1:
        return {f"metrics/{record['metric']}": next(iter(values.values()))}
    return values


class Logger:
    """What every backend implements; ``step`` is the number of real images shown so far. ``keeps_points``: the
    backend cannot drop points logged before (W&B, MLflow), so a resumed run must not send their steps again."""
    name = ""
    keeps_points = True

    def scalars(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """``image``: uint8 ``(H, W, C)`` with C = 1 or 3."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class TensorBoardLogger(Logger):
    """Event files (``events.out.tfevents.*``) in the run folder; the run's configuration as text at the start."""
    name, keeps_points = "tensorboard", False

    def __init__(self, run_dir: str, resume_step: int | None, config: dict):
        from torch.utils.tensorboard import SummaryWriter
        # Resumed at N: the reader drops the events of steps > N written before (those at N preceded the
        # checkpoint). From step 0: all earlier events of the folder are dropped (a run restarted afresh).
        # None: points added to the curves, nothing dropped.
        purge = None if resume_step is None else resume_step + 1 if resume_step else 0
        self.writer = SummaryWriter(log_dir=run_dir, purge_step=purge)
        if resume_step == 0:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)
        self.writer.flush()

    def scalars(self, values, step):
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def image(self, tag, image, step):
        self.writer.add_image(tag, image, step, dataformats="HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()


def _stored_id(path: str) -> str | None:
    """The run id kept in ``path`` (None: no such file)."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return f.read().strip()


def _store_id(path: str, run_id: str) -> str:
    atomic_write(path, lambda f: f.write(run_id.encode()))
    return run_id


class WandbLogger(Logger):
    """A W&B run in ``<run folder>/wandb``, offline unless ``$WANDB_MODE`` says otherwise; project
    ``$WANDB_PROJECT`` or ``ganfast``; the run folder's name as the run's name. Every value is logged with
    ``nimg`` as its x axis (``define_metric``), not as W&B's own step, which only grows: metrics computed
    afterwards land at their snapshot's ``nimg``."""
    name = "wandb"

    def __init__(self, run_dir: str, resume_step: int | None, config: dict):
        import wandb
        self.wandb = wandb
        id_file = os.path.join(run_dir, "wandb-id.txt")
        run_id = _stored_id(id_file) or _store_id(id_file, uuid.uuid4().hex[:16])
        self.run = wandb.init(dir=run_dir, id=run_id, resume="allow", config=config,
                              name=os.path.basename(os.path.abspath(run_dir)),
                              project=os.environ.get("WANDB_PROJECT", "ganfast"),
                              mode=None if os.environ.get("WANDB_MODE") else "offline")
        self.run.define_metric("nimg")
        self.run.define_metric("*", step_metric="nimg")

    def scalars(self, values, step):
        self.run.log({**values, "nimg": step})

    def image(self, tag, image, step):
        self.run.log({tag: self.wandb.Image(image), "nimg": step})

    def close(self):
        self.run.finish()


class MLflowLogger(Logger):
    """An MLflow run in ``<run folder>/mlruns`` (or ``$MLFLOW_TRACKING_URI``), experiment
    ``$MLFLOW_EXPERIMENT_NAME`` or ``ganfast``; the configuration as parameters (flattened with dots). MLflow 3
    refuses a folder store unless ``$MLFLOW_ALLOW_FILE_STORE`` is true: it is set for the default one."""
    name = "mlflow"

    def __init__(self, run_dir: str, resume_step: int | None, config: dict):
        import mlflow
        self.mlflow = mlflow
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = "file:" + os.path.join(os.path.abspath(run_dir), "mlruns")
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "ganfast"))
        id_file = os.path.join(run_dir, "mlflow-id.txt")
        run_id = _stored_id(id_file)
        if run_id:
            self.run = mlflow.start_run(run_id=run_id)
        else:
            self.run = mlflow.start_run(run_name=os.path.basename(os.path.abspath(run_dir)))
            mlflow.log_params(_flat(config))
            _store_id(id_file, self.run.info.run_id)

    def scalars(self, values, step):
        self.mlflow.log_metrics(dict(values), step=step)

    def image(self, tag, image, step):
        self.mlflow.log_image(image, key=tag.replace("/", "_"), step=step)

    def close(self):
        self.mlflow.end_run()


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


_CLASSES = {cls.name: cls for cls in (TensorBoardLogger, WandbLogger, MLflowLogger)}
STEPS_FILE = "logger-steps.json"


class Loggers(Logger):
    """The backends of a run, each given everything. ``steps_file``: training's bookkeeping (``logger-steps.json``,
    the highest step sent to each backend that keeps points), read when opened; such a backend is not sent a
    step at or below its stored one (a resumed run's ticks the interrupted process logged already). None: no
    bookkeeping (metrics added afterwards)."""

    def __init__(self, backends: list[Logger], steps_file: str | None = None):
        self.backends, self.steps_file = backends, steps_file
        self.sent: dict[str, int] = {}
        if steps_file and os.path.isfile(steps_file):
            with open(steps_file) as f:
                self.sent = json.load(f)
        self.floor = {b.name: self.sent.get(b.name, -1) for b in backends}

    def _each(self, step: int):
        """The backends that take ``step``; the bookkeeping notes it."""
        takers = [b for b in self.backends if step > self.floor[b.name]]
        noted = [b.name for b in takers if b.keeps_points and step > self.sent.get(b.name, -1)]
        if self.steps_file and noted:
            self.sent.update(dict.fromkeys(noted, step))
            atomic_write(self.steps_file, lambda f: f.write(json.dumps(self.sent).encode()))
        return takers

    def scalars(self, values, step):
        if values:
            for backend in self._each(step):
                backend.scalars(values, step)

    def image(self, tag, image, step):
        for backend in self._each(step):
            backend.image(tag, image, step)

    def close(self):
        for backend in self.backends:
            backend.close()


def check_loggers(names: list[str]) -> None:
    """A one-line ValueError naming the first backend whose package is not installed."""
    for name in names:
        if name not in _CLASSES:
            raise ValueError(f"loggers: {name!r} is not one of {', '.join(BACKENDS)}")
        if importlib.util.find_spec(name) is None:
            install = {"tensorboard": 'tensorboard (pip install "ganfast[tb]")',
                       "mlflow": "mlflow-skinny (or mlflow)"}.get(name, name)
            raise ValueError(f"--logger {name}: the {name!r} package is not installed: pip install {install}, "
                             f"or leave {name} out")


def open_loggers(names: list[str], run_dir: str, resume_step: int | None = 0, config: dict | None = None) -> Loggers:
    """The backends ``names`` for the run in ``run_dir``, continuing at ``resume_step`` images (0: a run from
    its start; None: points added afterwards, see :func:`log_metric`); ``config`` is shown (TensorBoard text,
    W&B config, MLflow parameters) for a run from its start."""
    check_loggers(names)
    backends: list[Logger] = []
    try:
        for name in names:
            backends.append(_CLASSES[name](run_dir, resume_step, config or {}))
    except BaseException:  # those already open are closed (their files flushed) before the error goes on
        Loggers(backends).close()
        raise
    return Loggers(backends, None if resume_step is None else os.path.join(run_dir, STEPS_FILE))


def log_metric(loggers: Loggers, record: dict, earlier: list[dict]) -> list[str]:
    """Sends a ``metric-<name>.jsonl`` record's results at its snapshot's step (``kimg`` × 1000) to each backend
    of ``loggers`` that no line of ``earlier`` (the file's lines so far) of the same snapshot lists under
    ``loggers``; returns the names of those it went to (the new line's ``loggers``)."""
    done = {name for line in earlier if line.get("kimg") == record["kimg"] for name in line.get("loggers", ())}
    takers = [b for b in loggers.backends if b.name not in done]
    values = metric_scalars(record)
    for backend in takers:
        backend.scalars(values, round(record["kimg"] * 1000))
    return [b.name for b in takers]
