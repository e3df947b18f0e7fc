"""jad.utils.atomic: all-or-nothing files and folders, strict JSON."""

import json
import math

import numpy as np
import pytest

from jad.utils import atomic


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


def test_atomic_file_replaces_only_on_success(tmp_path):
    p = tmp_path / "a.txt"
    atomic.write_text(p, "old\n")
    with pytest.raises(RuntimeError):
        with atomic.atomic_file(p, "w") as f:
            f.write("half of the new")
            raise RuntimeError("disk full")
    assert p.read_text() == "old\n"
    assert _siblings(p) == ["a.txt"]  # the temporary file is gone
    atomic.write_bytes(p, b"new")
    assert p.read_bytes() == b"new" and _siblings(p) == ["a.txt"]


def test_atomic_file_rejects_append_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic.atomic_file(tmp_path / "x", "a"):
            pass


def test_write_json_is_strict_and_names_the_bad_key(tmp_path):
    p = tmp_path / "results.json"
    atomic.write_json(p, {"ok": 1})
    with pytest.raises(ValueError, match=r"non-finite number at timings\.cat\.rate"):
        atomic.write_json(p, {"timings": {"cat": {"rate": float("nan")}}})
    with pytest.raises(ValueError, match=r"at x\[1\]"):
        atomic.write_json(p, {"x": [1.0, np.float32(np.inf)]})
    assert json.loads(p.read_text()) == {"ok": 1}  # the earlier file is intact
    atomic.write_json(p, {"a": np.float32(0.5), "b": np.arange(3), "c": tmp_path})
    back = json.loads(p.read_text())
    assert back == {"a": 0.5, "b": [0, 1, 2], "c": str(tmp_path)}
    assert all(math.isfinite(v) for v in back["b"])


def test_atomic_dir_creates_replaces_and_restores(tmp_path):
    out = tmp_path / "weights"
    with atomic.atomic_dir(out) as tmp:
        (tmp / "v").write_text("1")
    assert (out / "v").read_text() == "1"
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_dir(out) as tmp:
            (tmp / "v").write_text("2")
            raise KeyboardInterrupt
    assert (out / "v").read_text() == "1"  # the old folder is untouched
    with atomic.atomic_dir(out) as tmp:
        (tmp / "w").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["w"]  # replaced as a whole
    assert _siblings(out) == ["weights"]  # no temporary or old folders left


def test_atomic_dir_keeps_a_twin_that_finished_first(tmp_path):
    out = tmp_path / "prepared"
    with atomic.atomic_dir(out, keep_existing=lambda p: (p / "done").exists()) as tmp:
        (tmp / "mine").write_text("x")
        out.mkdir()  # another process finished while we were writing
        (out / "done").write_text("theirs")
    assert sorted(p.name for p in out.iterdir()) == ["done"]
    assert _siblings(out) == ["prepared"]
