"""Progress while golf works: a tqdm bar on a terminal, a status line now and then otherwise, nothing with -q.

Every long loop (training steps, TTT epochs and chunks, evaluation windows, GPTQ layers, downloads and
extraction, study cells) reports through `Progress`, so there is one switch and one output format:

    with Progress("train", total=cfg.max_steps, unit="step") as bar:
        for step in ...:
            bar.update(1, loss=f"{loss:.3f}", tok_s=f"{rate:,.0f}")

Where it goes: stderr, so `--json` output on stdout stays one parseable object. On a terminal it is a tqdm
bar that redraws in place. When stderr is not a terminal (a log file, CI, a pipe) a redrawn bar would be
noise, so it writes one plain line, `golf: train 120/800 step loss=4.131 tok_s=41,230`, at most every
`LINE_INTERVAL_S` seconds per loop, plus the final one.

Silence: `golf -q` (or `GOLF_QUIET=1` in the environment) turns all of it off. It is an environment
variable, not a module flag, because the notebooks `golf study run` executes run in kernel processes that
inherit the runner's environment.

Study cells: a bar inside a notebook kernel would land in the executed notebook. The runner sets
`GOLF_PROGRESS_STATUS=<file>` for the kernel instead; there each loop writes its latest status line to
that file (replaced atomically, at most once a second), and the runner shows it beside the study's own
bar (`watch_status`), so a cell that trains for minutes still shows its steps.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

QUIET_ENV = "GOLF_QUIET"
STATUS_ENV = "GOLF_PROGRESS_STATUS"
LINE_INTERVAL_S = 5.0  # non-terminal output: at most one status line per loop this often (and the last)
STATUS_INTERVAL_S = 1.0  # a study cell's status file: rewritten at most this often


def set_quiet(flag: bool) -> None:
    """Silence (or restore) every progress display of this process and of the processes it starts."""
    if flag:
        os.environ[QUIET_ENV] = "1"
    else:
        os.environ.pop(QUIET_ENV, None)


def is_quiet() -> bool:
    return os.environ.get(QUIET_ENV, "") not in ("", "0")


class Progress:
    """One loop's progress: `update(n, **status)` after each step, `close()` (or `with`) at the end."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "it", file: TextIO | None = None,
                 scale_bytes: bool = False, enabled: bool = True):
        self.desc, self.total, self.unit = desc, total, unit
        self.n = 0
        self.status: dict[str, Any] = {}
        self.file = file if file is not None else sys.stderr
        self.enabled = enabled and not is_quiet()
        self.scale_bytes = scale_bytes  # show n and total as kB / MB (downloads)
        self._status_file = os.environ.get(STATUS_ENV) or None
        self._interval = STATUS_INTERVAL_S if self._status_file else LINE_INTERVAL_S
        self._bar = None
        self._last_line = -float("inf")
        self._printed: tuple | None = None  # (n, status) of the last line written
        if self.enabled and not self._status_file and _is_terminal(self.file):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="B" if scale_bytes else unit,
                             unit_scale=scale_bytes, file=self.file, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1, **status: Any) -> None:
        self.n += n
        self.status.update(status)
        if not self.enabled:
            return
        if self._bar is not None:
            if status:
                self._bar.set_postfix(self.status, refresh=False)
            self._bar.update(n)
        elif time.monotonic() - self._last_line >= self._interval:
            self._line()

    def _line(self) -> None:
        self._last_line = time.monotonic()
        self._printed = (self.n, tuple(self.status.items()))
        count = _amount(self.n, self.scale_bytes) + (f"/{_amount(self.total, self.scale_bytes)}"
                                                     if self.total is not None else "")
        unit = "" if self.scale_bytes else f" {self.unit}"
        extra = "".join(f" {k}={v}" for k, v in self.status.items())
        if self._status_file:
            _replace_text(self._status_file, f"{self.desc} {count}{unit}{extra}")
        else:
            print(f"golf: {self.desc} {count}{unit}{extra}", file=self.file, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.n and self._printed != (self.n, tuple(self.status.items())):  # the final state, once
            self._line()
        self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_terminal(f: TextIO) -> bool:
    try:
        return f.isatty()
    except (AttributeError, ValueError):
        return False


def _amount(n: int | None, scale_bytes: bool) -> str:
    if not scale_bytes or n is None:
        return str(n)
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _replace_text(path: str, text: str) -> None:
    """Write a status file so that a reader sees the old line or the new one, never half of one."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:  # progress must never break the work it reports on
        pass


@contextmanager
def watch_status(bar: Progress, path: Path, key: str = "now") -> Iterator[None]:
    """While the block runs (a notebook kernel working), show the latest line of the kernel's status file
    `path` as `bar`'s `key` field, polled every STATUS_INTERVAL_S; the file is removed afterwards."""
    stop = threading.Event()

    def poll() -> None:
        last = None
        while not stop.wait(STATUS_INTERVAL_S):
            try:
                line = path.read_text().strip()
            except OSError:
                continue
            if line and line != last:
                bar.update(0, **{key: line})
                last = line

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.status.pop(key, None)
        path.unlink(missing_ok=True)
