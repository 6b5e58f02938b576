"""``ganfast report RUN``: one self-contained HTML page (nothing fetched: every picture a data: URI) with the
curves of stats.jsonl and of the metric lines, the latest sample grid and the run's configuration; and the page
as a real browser (headless Chromium) shows it."""
import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser
from xml.etree import ElementTree

import numpy as np
import pytest
import torch
from PIL import Image
from test_train import _noise_zip

from ganfast.cli import main


class _Page(HTMLParser):
    """Tags, their attributes, and the text of each <pre>."""

    def __init__(self):
        super().__init__()
        self.tags, self.pre, self._in_pre = [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_pre = tag == "pre"

    def handle_endtag(self, tag):
        self._in_pre = False

    def handle_data(self, data):
        if self._in_pre:
            self.pre.append(data)


def _data(uri: str) -> bytes:
    return base64.b64decode(uri.split(",", 1)[1])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A class-conditional 16-px run of 4 steps (2 snapshots) and two metric files in the format
    ``ganfast.metrics.report.evaluate_snapshot`` appends (values made up: the page's input is the file)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("report")
    out = root / "run"
    assert main(["train", "--dataset", _noise_zip(root / "d.zip"), "--out", str(out), "--model", "dcgan", "--cbase",
                 "4", "--batch-size", "8", "--tick", "2", "--snap", "1", "--steps", "4", "--cond", "--logger",
                 "none", "--no-progress"]) == 0
    torch.set_num_threads(threads)
    for name, results in (("fid50k_full", [{"fid": 250.5}, {"fid": 180.25}]),
                          ("pr50k3_full", [{"precision": 0.1, "recall": 0.05}, {"precision": 0.3, "recall": 0.2}])):
        lines = [json.dumps({"snapshot": f"network-snapshot-{i:06d}.safetensors", "kimg": 0.016 * (i + 1),
                             "metric": name, "results": r}) for i, r in enumerate(results)]
        (out / f"metric-{name}.jsonl").write_text("\n".join(lines) + "\n")
    with open(out / "stats.jsonl", "a") as f:
        f.write('{"tick": 3, "loss_g": 0.')  # a line torn by a kill: left out
    return out


def test_report_is_one_self_contained_page(run, capsys):
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run / 'report.html'}"
    text = (run / "report.html").read_text()
    page = _Page()
    page.feed(text)
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object")] and "url(" not in text
    links = [a[k] for _, a in page.tags for k in ("src", "href") if k in a]
    assert links and all(link.startswith("data:") for link in links)  # nothing fetched: it opens offline
    images = {a["alt"]: a["src"] for t, a in page.tags if t == "img"}
    for alt, file in (("training data", "reals.png"), ("untrained generator, same latents", "fakes_init.png")):
        assert _data(images[alt]) == (run / file).read_bytes()
    latest = [alt for alt in images if alt.startswith("latest samples")]
    assert latest == ["latest samples, step 4 (G_ema, fixed latents; one row per class)"]
    assert _data(images[latest[0]]) == (run / "samples-0000004.png").read_bytes()
    charts = {alt: ElementTree.fromstring(_data(src)) for alt, src in images.items() if src.startswith(
        "data:image/svg+xml")}
    assert {"fid50k_full", "pr50k3_full", "Losses", "Augmentation probability", "Learning rates",
            "Speed (images/s)"} <= charts.keys()
    svg = _data(images["pr50k3_full"]).decode()
    assert "precision" in svg and "recall" in svg  # the legend's labels (matplotlib keeps text as comments)
    lines = [e for e in charts["Losses"].iter() if e.get("id", "").startswith("line2d_")]
    assert len(lines) >= 2
    config = json.loads("".join(page.pre))
    assert config["config"]["batch_size"] == 8 and config["config"]["cond"] is True
    assert config["run"]["model"] == "dcgan" and config["run"]["dataset"].endswith("d.zip")
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()[:-1]]
    assert f"Last tick ({len(stats)} ticks recorded)" in text
    assert f"<th>loss_g</th><td>{stats[-1]['loss_g']:.5g}</td>" in text
    assert "<th>fid50k_full @ 0.032 kimg</th><td>fid 180.25</td>" in text


def test_report_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["report", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"ganfast report: error: report: {str(tmp_path)!r} is not a run folder (no stats.jsonl) " \
        "(GANFAST_DEBUG=1 shows the traceback)"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (apt-get install chromium)")
def test_report_renders_in_headless_chromium(run, tmp_path):
    """Chromium decodes every picture of the page and draws it: a script added to a copy counts the decoded
    pictures after load and paints a marker square green (all of them) or red; the screenshot shows that
    marker, the curves' colour and more than a blank page's colours."""
    main(["report", str(run), "--out", str(tmp_path / "report.html")])
    text = (tmp_path / "report.html").read_text()
    count = text.count("<img ")
    probe = ("<script>window.addEventListener('load', () => { const all = [...document.images]; "
             "const ok = all.length == %d && all.every(i => i.complete && i.naturalWidth > 0); "
             "const mark = document.createElement('div'); mark.style.cssText = 'position:fixed;top:0;right:0;"
             "width:40px;height:40px;background:' + (ok ? '#00ff00' : '#ff0000'); document.body.append(mark); });"
             "</script></body>" % count)
    (tmp_path / "probe.html").write_text(text.replace("</body>", probe))
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--window-size=1200,2400",
                    f"--screenshot={shot}", (tmp_path / "probe.html").as_uri()], capture_output=True, timeout=120,
                   check=True)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert count >= 10 and pixels.shape == (2400, 1200, 3)
    assert np.all(pixels[5:35, -35:-5] == [0, 255, 0])  # every picture decoded
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 100  # text, grey sample grids, blue/orange curves: not a blank or error page
    blue = np.all(np.abs(pixels.astype(int) - [31, 119, 180]) < 30, axis=-1)  # matplotlib's first line colour
    assert blue.sum() > 200
