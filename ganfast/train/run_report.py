"""``ganfast report RUN``: one self-contained HTML page of a run for people who do not run TensorBoard.

The page holds the curves of ``stats.jsonl`` (against kimg) and of each ``metric-<name>.jsonl``, the latest
sample grid with the real images and the untrained generator's samples, the last tick's numbers and the run's
configuration (from its checkpoint). Charts are SVG drawn by matplotlib and pictures are PNG, all embedded as
``data:`` URIs: the file opens anywhere, offline, and can be mailed on its own.
"""
from __future__ import annotations

import base64
import glob
import html
import io
import json
import os
import re
import time

from .._io import atomic_write
from .loggers import scalars_of

# Charts of stats.jsonl: (title, keys); a key a run does not record is left out, a chart with none of them too.
STAT_CHARTS = (
    ("Losses", ("loss_g", "loss_d", "r1")),
    ("Discriminator accuracy and r_t", ("d_real_acc", "d_fake_acc", "rt")),
    ("Augmentation probability", ("aug_p",)),
    ("Learning rates", ("lr_g", "lr_d")),
    ("Gradient norms", ("grad_norm_g", "grad_norm_d")),
    ("Evaluation at each tick", ("fd",)),
    ("Precision, recall, class accuracy", ("precision", "recall", "class_acc")),
    ("2-D mixture: modes covered, high-quality share", ("modes", "hq")),
    ("Sample diversity", ("diversity", "diversity_real")),
    ("Speed (images/s)", ("img_per_s",)),
    ("Peak memory (MiB)", ("peak_rss_mib", "peak_cuda_mib")),
)
_NOT_CURVES = {"tick", "step", "kimg", "time", "sec_per_tick", "sec_per_kimg", "skipped_steps", "collapse_alarm"}


def read_jsonl(path: str) -> list[dict]:
    """The records of a JSON-lines file; a torn last line (a run killed while writing it) is left out."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _chart(title: str, series: dict[str, tuple[list[float], list[float]]], xlabel: str = "kimg",
           log: bool = False) -> str:
    """A line chart as an SVG ``data:`` URI (``log``: a log y axis where every value is positive)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5.2, 3.0))
    ax = fig.subplots()
    for label, (x, y) in series.items():
        ax.plot(x, y, label=label, marker="o" if len(x) < 30 else None, markersize=3, linewidth=1.4)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    if log and all(v > 0 for _, y in series.values() for v in y):
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend(fontsize=8)
    else:
        ax.set_ylabel(next(iter(series)), fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def _png(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def _series(records: list[dict], keys, x_key: str = "kimg") -> dict:
    out = {}
    for key in keys:
        points = [(r[x_key], r[key]) for r in records if isinstance(r.get(key), (int, float))
                  and not isinstance(r.get(key), bool) and r[key] == r[key]]
        if points:
            out[key] = ([p[0] for p in points], [p[1] for p in points])
    return out


def stat_charts(stats: list[dict]) -> list[tuple[str, str]]:
    """``(title, data URI)`` of each chart of ``STAT_CHARTS`` the records fill, then one for each other scalar."""
    charts, shown = [], set()
    for title, keys in STAT_CHARTS:
        series = _series(stats, keys)
        shown.update(keys)
        if series:
            charts.append((title, _chart(title, series, log=title.startswith("Evaluation"))))
    others = sorted({k for r in stats for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                    - shown - _NOT_CURVES)
    for key in others:
        charts.append((key, _chart(key, _series(stats, [key]))))
    return charts


def metric_charts(metrics: dict[str, list[dict]]) -> list[tuple[str, str]]:
    """One chart per metric: each of its numeric results against the snapshots' kimg."""
    charts = []
    for name, records in sorted(metrics.items()):
        rows = [{"kimg": r.get("kimg", 0), **scalars_of(r.get("results", {}), "r")} for r in records]
        keys = sorted({k for r in rows for k in r if k != "kimg"})
        series = {k[2:]: v for k, v in _series(rows, keys).items()}
        if series:
            charts.append((name, _chart(name, series)))
    return charts


def _step_of(path: str) -> int:
    return int(re.search(r"(\d+)\.png$", path).group(1))


def _config(run_dir: str) -> dict | None:
    """The run's definition and TrainConfig from its checkpoint (else its latest network snapshot)."""
    from ..checkpoint import CHECKPOINT_NAME, checkpoint_extra
    files = [os.path.join(run_dir, CHECKPOINT_NAME)] + \
        sorted(glob.glob(os.path.join(run_dir, "network-snapshot-*.safetensors")), reverse=True)
    for path in files:
        if os.path.isfile(path):
            extra = checkpoint_extra(path)
            return {"file": os.path.basename(path), "step": extra.get("step"), "kimg": extra.get("nimg", 0) / 1000,
                    "run": extra.get("run"), "config": extra.get("config")}
    return None


def _table(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows) + \
        "</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; border-bottom: 1px solid #ccc; margin-top: 1.6em; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #555; }
img.chart { width: 520px; } img.pixels { image-rendering: pixelated; max-width: 540px; border: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; } th, td { border: 1px solid #ddd; padding: 2px 8px; }
th { text-align: left; background: #f4f4f4; } pre { background: #f6f6f6; padding: 8px; font-size: 0.8em; }
.note { color: #777; }
"""


def write_report(run_dir: str, out: str | None = None) -> str:
    """Writes the HTML page of the run in ``run_dir`` to ``out`` (default ``<run_dir>/report.html``, atomically)
    and returns its path. A ValueError when ``run_dir`` is not a run folder (no ``stats.jsonl``)."""
    stats_path = os.path.join(run_dir, "stats.jsonl")
    if not os.path.isfile(stats_path):
        raise ValueError(f"report: {run_dir!r} is not a run folder (no stats.jsonl)")
    stats = read_jsonl(stats_path)
    metrics = {os.path.basename(p)[len("metric-"):-len(".jsonl")]: read_jsonl(p)
               for p in sorted(glob.glob(os.path.join(run_dir, "metric-*.jsonl")))}
    config = _config(run_dir)
    name = os.path.basename(os.path.abspath(run_dir))
    parts = [f"<h1>ganfast run {html.escape(name)}</h1>",
             f"<p class='note'>{html.escape(os.path.abspath(run_dir))}; page written "
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}</p>"]
    pictures = []
    samples = sorted(glob.glob(os.path.join(run_dir, "samples-*.png")), key=_step_of)
    if samples:
        pictures.append((f"latest samples, step {_step_of(samples[-1])} (G_ema, fixed latents"
                         + ("; one row per class" if config and (config["config"] or {}).get("cond") else "")
                         + ")", samples[-1]))
    for file, caption in (("fakes_init.png", "untrained generator, same latents"), ("reals.png", "training data")):
        if os.path.isfile(os.path.join(run_dir, file)):
            pictures.append((caption, os.path.join(run_dir, file)))
    if pictures:
        parts.append("<h2>Samples</h2><div class='grid'>" + "".join(
            f"<figure><img class='pixels' alt='{html.escape(c)}' src='{_png(p)}'><figcaption>{html.escape(c)}"
            "</figcaption></figure>" for c, p in pictures) + "</div>")
    for title, charts in (("Metrics (network snapshots)", metric_charts(metrics)),
                          ("Training curves (stats.jsonl)", stat_charts(stats))):
        if charts:
            parts.append(f"<h2>{title}</h2><div class='grid'>" + "".join(
                f"<figure><img class='chart' alt='{html.escape(t)}' src='{uri}'></figure>" for t, uri in charts)
                + "</div>")
    if metrics:
        rows = [(f"{n} @ {r.get('kimg', 0):g} kimg", ", ".join(f"{k} {_fmt(v)}" for k, v in r["results"].items()))
                for n, records in sorted(metrics.items()) for r in records[-1:]]
        parts += ["<h2>Latest metric values</h2>", _table(rows)]
    last = stats[-1] if stats else {}
    if last:
        shown = [(k, _fmt(v)) for k, v in last.items() if not isinstance(v, list) and k != "time"]
        parts += [f"<h2>Last tick ({len(stats)} ticks recorded)</h2>", _table(shown)]
    parts.append("<h2>Configuration</h2>")
    if config is None:
        parts.append("<p class='note'>no checkpoint in this folder yet: the configuration is stored with the first "
                     "one</p>")
    else:
        parts += [f"<p class='note'>from {html.escape(config['file'])} (step {config['step']}, "
                  f"{config['kimg']:g} kimg)</p>",
                  "<pre>" + html.escape(json.dumps({"run": config["run"], "config": config["config"]}, indent=2))
                  + "</pre>"]
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>ganfast run {html.escape(name)}</title><style>{_STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    out = out or os.path.join(run_dir, "report.html")
    atomic_write(out, lambda f: f.write(page.encode()))
    return out
