"""Progress: a moving tqdm bar when stderr is a terminal, a status line now and then when it is not,
nothing with -q; and a real `golf run` on a pseudo-terminal shows its training steps with loss and tokens/s."""

import fcntl
import io
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

from golf import progress
from golf.progress import Progress


def test_status_lines_off_a_terminal(monkeypatch):
    monkeypatch.setenv(progress.QUIET_ENV, "")
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)  # every update writes its line
    out = io.StringIO()
    with Progress("train", total=3, unit="step", file=out) as bar:
        for step in range(3):
            bar.update(1, loss=f"{4 - step:.1f}")
    assert out.getvalue().splitlines() == ["golf: train 1/3 step loss=4.0", "golf: train 2/3 step loss=3.0",
                                           "golf: train 3/3 step loss=2.0"]  # the last one not repeated


def test_status_lines_are_rate_limited_and_the_last_is_always_written(monkeypatch):
    monkeypatch.setenv(progress.QUIET_ENV, "")
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 3600.0)
    out = io.StringIO()
    with Progress("eval", total=500, unit="window", file=out) as bar:
        for _ in range(500):
            bar.update(1)
    assert out.getvalue().splitlines() == ["golf: eval 1/500 window", "golf: eval 500/500 window"]


def test_quiet_writes_nothing(monkeypatch):
    monkeypatch.setenv(progress.QUIET_ENV, "1")
    out = io.StringIO()
    with Progress("train", total=2, file=out) as bar:
        bar.update(2)
    assert out.getvalue() == ""


def test_golf_run_on_a_terminal_shows_a_moving_bar(tmp_path, tiny_dataset):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a fresh pty is 0 columns wide
    cmd = [sys.executable, "-m", "golf", "run", "--preset", "tiny", "--data", str(tiny_dataset),
           "--out", str(tmp_path / "run"), "-s", "train.max_steps=40", "-s", "train.batch_tokens=1024",
           "-s", "train.seq_len=64", "-s", "data.max_val_tokens=2048", "-s", "train.checkpoint=false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL,
                            env={**{k: v for k, v in os.environ.items()
                                    if k not in (progress.QUIET_ENV, progress.STATUS_ENV)},
                                 "OMP_NUM_THREADS": "1"})  # 2 threads on a shared 2-core CI crawl
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 300)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(timeout=300) == 0, seen.decode(errors="replace")[-2000:]
    text = seen.decode(errors="replace")
    train = [part for part in text.split("\r") if part.startswith("train:")]
    assert len(train) >= 3, text[-2000:]  # redrawn in place, several times
    assert "/40" in train[-1] and "loss=" in train[-1] and "tok_s=" in train[-1], train[-1]
    assert "eval" in text  # the official pass has its own bar


def test_a_study_cell_reports_through_its_status_file(monkeypatch, tmp_path):
    """Inside a notebook kernel (GOLF_PROGRESS_STATUS set) a loop writes its status line to the file, and
    the study runner's watch_status shows that line on the study's own bar."""
    monkeypatch.setenv(progress.QUIET_ENV, "")
    monkeypatch.setattr(progress, "STATUS_INTERVAL_S", 0.0)
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    status = tmp_path / ".cell.status"
    out = io.StringIO()
    study_bar = Progress("study s", total=1, unit="cell", file=out)
    monkeypatch.setenv(progress.STATUS_ENV, str(status))
    cell_out = io.StringIO()
    with progress.watch_status(study_bar, status):
        with Progress("train", total=2, unit="step", file=cell_out) as bar:  # what the kernel runs
            bar.update(1, loss="5.0")
            assert status.read_text() == "train 1/2 step loss=5.0"
            deadline = time.monotonic() + 10
            while "now=train 1/2 step loss=5.0" not in out.getvalue() and time.monotonic() < deadline:
                time.sleep(0.01)
    assert cell_out.getvalue() == ""  # nothing on the kernel's stderr, so nothing in the executed notebook
    assert "golf: study s 0/1 cell now=train 1/2 step loss=5.0" in out.getvalue().splitlines()
    assert not status.exists()
