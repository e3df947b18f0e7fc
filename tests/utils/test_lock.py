"""One writer per workdir: a second run on a locked workdir says who holds it and exits; a lock
left by a dead process is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from jadtest import REPO

from jad.utils.errors import UserError
from jad.utils.lock import LOCK_FILE, workdir_lock

HOLD = """
import sys, time
from jad.utils.lock import workdir_lock
with workdir_lock(sys.argv[1], "holder"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_second_holder_is_refused_and_names_the_first(tmp_path):
    with workdir_lock(tmp_path / "w", "first run"):
        with pytest.raises(UserError, match=rf"in use by process {os.getpid()} .*first run"):
            with workdir_lock(tmp_path / "w", "second run"):
                pass
    with workdir_lock(tmp_path / "w", "third run"):  # released: free again
        assert json.loads((tmp_path / "w" / LOCK_FILE).read_text())["what"] == "third run"


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "w")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"process {holder.pid} .*holder"):
            with workdir_lock(tmp_path / "w"):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert json.loads((tmp_path / "w" / LOCK_FILE).read_text())["pid"] == holder.pid  # stale
    with workdir_lock(tmp_path / "w", "after the kill"):
        pass


def test_train_on_a_workdir_in_use_is_one_error_line(tmp_path, small_synthetic):
    """Two ``jad.train`` on one workdir: the second prints one line naming the holder, exits
    non-zero and writes nothing (the first, here a process holding the lock, is untouched)."""
    w = tmp_path / "w"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(w)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.time()
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "jad.train",
                "--config=configs/patchcore_synthetic.py:tiny",
                f"--workdir={w}",
                f"--config.data.root={small_synthetic}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"in use by process {holder.pid}" in errors[0], p.stderr
    assert sorted(x.name for x in w.iterdir()) == [LOCK_FILE], list(w.iterdir())
    assert time.time() - t0 < 300
