"""``ganfast train`` in 2 CPU processes (gloo): preemption stops every rank after the same step and the run resumes
bit-exactly under torchrun; a rank that fails ends the whole job at once, and its error names the rank."""
import glob
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import _noise_zip

from ganfast.checkpoint import checkpoint_extra

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
ENDLESS = "1000000"  # steps: such runs end only by a signal or a failure

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="finds torchrun's workers in /proc")


def _env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def _torchrun(*args, script: Path | None = None) -> subprocess.Popen:
    target = [str(script)] if script else ["-m", "ganfast.cli"]
    return subprocess.Popen([*TORCHRUN, *target, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())


def _wait_until(ready, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            stdout, stderr = _kill(proc)
            pytest.fail(f"the run ended (status {proc.returncode}) or took too long:\n{stdout[-2000:]}\n"
                        f"{stderr[-3000:]}")
        time.sleep(0.05)


def _steps_recorded(out: Path) -> list[int]:
    if not (out / "stats.jsonl").exists():
        return []
    return [int(m) for m in re.findall(r'"step": (\d+)', (out / "stats.jsonl").read_text())]


def _children(pid: int) -> list[int]:
    return [int(child) for path in glob.glob(f"/proc/{pid}/task/*/children") for child in open(path).read().split()]


def _workers(launcher: int) -> dict[int, int]:
    """{rank: pid} of a torchrun launcher's worker processes."""
    ranks = {}
    for pid in _children(launcher):
        env = dict(item.split("=", 1) for item in open(f"/proc/{pid}/environ").read().split("\0") if "=" in item)
        ranks[int(env["RANK"])] = pid
    assert sorted(ranks) == [0, 1], ranks
    return ranks


def _kill(proc: subprocess.Popen) -> tuple[str, str]:
    """Kills a job that failed the test: its workers first (torchrun starts them in sessions of their own, so
    they would outlive it), then the process itself; its output."""
    for pid in _children(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()
    return proc.communicate()


def _finish(proc: subprocess.Popen, seconds: float = 90) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        stdout, stderr = _kill(proc)
        pytest.fail(f"the job did not end within {seconds} s (a hang):\n{stdout[-2000:]}\n{stderr[-3000:]}")


def test_sigterm_under_torchrun_stops_every_rank_and_resumes_bit_exactly(tmp_path):
    """SIGTERM to the torchrun launcher (which forwards it to every worker), then, in the resumed run, to rank 1's
    worker alone: each time both ranks finish the same step, rank 0 writes the checkpoint and the workers exit 0.
    The twice-stopped run equals a 2-process run never stopped, tensor for tensor (weights, Adam states, RNG)
    and in its data order; augmentation (p = 0.5) makes the RNG matter."""
    data = _noise_zip(tmp_path / "noise.zip", n=16)
    run = ["--dataset", data, "--model", "dcgan", "--cbase", "4", "--batch-size", "8", "--tick", "2", "--aug", "ada",
           "--p", "0.5", "--device", "cpu", "--no-progress"]
    out = tmp_path / "run"
    proc = _torchrun("train", "--out", out, "--steps", ENDLESS, *run)
    _wait_until(lambda: _steps_recorded(out), proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = _finish(proc)
    # torchrun itself exits 1 on a signal (its SignalException); its workers exited 0 (no ChildFailedError)
    assert proc.returncode == 1 and "ChildFailedError" not in stderr, stderr[-3000:]
    assert "SIGTERM: finishing step" in stdout and "SIGTERM: stopped at step" in stdout, stdout
    first = checkpoint_extra(str(out))["step"]
    assert 0 < first < int(ENDLESS)

    proc = _torchrun("train", "--out", out, "--resume", "--steps", ENDLESS, "--no-progress")
    _wait_until(lambda: max(_steps_recorded(out)) > first, proc)
    os.kill(_workers(proc.pid)[1], signal.SIGTERM)
    stdout, stderr = _finish(proc)
    assert proc.returncode == 0, stderr[-3000:]
    assert f"resumed at step {first} " in stdout and "SIGTERM: stopped at step" in stdout, stdout
    stopped = checkpoint_extra(str(out))
    assert stopped["step"] > first and stopped["world_size"] == 2

    straight = tmp_path / "straight"
    proc = _torchrun("train", "--out", straight, "--steps", stopped["step"], *run)
    stdout, stderr = _finish(proc)
    assert proc.returncode == 0, stderr[-3000:]
    never = checkpoint_extra(str(straight))
    for key in ("step", "nimg", "data_order", "ada"):
        assert stopped[key] == never[key], key
    a, b = load_file(str(out / "checkpoint.safetensors")), load_file(str(straight / "checkpoint.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("opt_d/") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_ctrl_c_on_one_worker_stops_every_rank_as_ctrl_c(tmp_path):
    """A SIGINT that reached one worker only stops all ranks as a Ctrl-C: rank 0 reports it and writes the
    checkpoint, and the workers exit 130 (torchrun, which stops the other workers as soon as one exits non-zero,
    may end one first: all have passed the checkpoint and rank 0's report by then)."""
    out = tmp_path / "run"
    proc = _torchrun("train", "--out", out, "--dataset", "ring8", "--batch-size", "32", "--tick", "2", "--steps",
                     ENDLESS, "--no-progress")
    _wait_until(lambda: _steps_recorded(out), proc)
    os.kill(_workers(proc.pid)[1], signal.SIGINT)
    stdout, stderr = _finish(proc)
    assert "SIGINT: stopped at step" in stdout, stdout + stderr[-3000:]
    assert checkpoint_extra(str(out))["step"] > 0
    assert proc.returncode == 1, stderr[-3000:]
    statuses = re.findall(r"exitcode\s*: (-?\d+)", stderr)  # torchrun's summary: 130, or -15 when it ended a rank
    assert "130" in statuses and set(statuses) <= {"130", "-15"}, stderr[-3000:]


_FAIL_ON_RANK_1 = """
import sys
from ganfast.cli import main
from ganfast.train.trainer import Trainer
train_step = Trainer.train_step

def failing_step(self):
    if self.rank == 1 and self.step == 3:
        raise ValueError("batch 3 is unreadable")
    return train_step(self)

Trainer.train_step = failing_step
sys.exit(main(sys.argv[1:]))
"""


def test_a_rank_failing_mid_run_ends_the_whole_job(tmp_path):
    """Rank 1 raises in its step 3 while rank 0 goes on into the step's gradient all-reduce: the job ends within
    seconds (no rank waits for ever), non-zero, rank 1's one-line error names it, and torchrun's summary lists
    rank 1 with its status."""
    script = tmp_path / "fail.py"
    script.write_text(_FAIL_ON_RANK_1)
    out = tmp_path / "run"
    start = time.monotonic()
    proc = _torchrun("train", "--out", out, "--dataset", "ring8", "--batch-size", "32", "--tick", "1", "--steps",
                     ENDLESS, "--no-progress", script=script)
    _, stderr = _finish(proc, seconds=90)
    assert proc.returncode != 0
    assert "ganfast train: error (rank 1): batch 3 is unreadable" in stderr, stderr[-3000:]
    summary = stderr[stderr.index("Failures:"):]  # rank 1 with its status 2, usually as the root cause
    assert re.search(r"rank\s*: 1 \(local_rank: 1\)\s+exitcode\s*: 2 ", summary), summary
    assert max(_steps_recorded(out), default=0) <= 3 and time.monotonic() - start < 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rank_0_failing_to_decode_stops_the_others_in_one_line(tmp_path):
    """Rank 0 decodes the data set while the other ranks wait; a damaged image makes it fail, and the other rank
    then exits too with a one-line error quoting rank 0's, rather than wait in a barrier until the process
    group's timeout. Launched without torchrun (plain env:// ranks, as other launchers start them), so no agent
    ends the waiting rank: it must end by itself."""
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.png", b"not an image at all")
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "ganfast.cli", "train", "--dataset", str(path), "--out",
                               str(tmp_path / "run"), "--resolution", "16", "--no-progress"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                                       LOCAL_RANK=str(rank)))
             for rank in (0, 1)]
    errors = [_finish(proc, seconds=90)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [2, 2], errors
    for err in errors:  # one line of ganfast's (torch may add warnings of its own), no traceback
        assert "Traceback" not in err and sum(line.startswith("ganfast") for line in err.splitlines()) == 1, err
    assert re.search(r"^ganfast train: error \(rank 0\): dataset: '[^']*a\.png' is not a readable PNG/JPEG image",
                     errors[0], re.M), errors[0]
    assert re.search(r"^ganfast train: error \(rank 1\): rank 0 could not load the data set ", errors[1], re.M), \
        errors[1]
    assert "a.png' is not a readable PNG/JPEG image" in errors[1], errors[1]
