"""``python -m jad.benchmark all`` and ``readme``: the results mechanism (``jad.benchmarks.report``),
the README rewriter (``jad.benchmarks.readme``) and one smoke run of the suite on its cheap
sub-benchmarks (``jad.benchmarks.suite``). Nothing here asserts a time."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from jad import benchmark
from jad.benchmarks import readme, report, suite
from jad.utils.errors import UserError

REPO_README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(autouse=True)
def _empty_collector():
    report.take()
    yield
    report.take()


def _meta() -> dict:
    return {**report.machine_info(), "command": "python -m jad.benchmark all", "size": "smoke"}


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def test_record_json_round_trip(tmp_path):
    report.record("kernels", "knn k=1", 2.0, "faiss", 3.0, notes="idx==faiss 1.0")
    report.record("kernels", "knn k=1", 2.0, "numpy", 1.0)
    report.record("backbone", "no peer here", 0.5)
    rows = report.take()
    assert report.rows() == []
    assert [r.ratio for r in rows] == [1.5, 0.5, None]
    path = report.write_json(tmp_path / "b.json", rows, _meta())
    doc = json.loads(path.read_text())
    assert doc["rows"][0]["ratio"] == 1.5 and doc["meta"]["size"] == "smoke"
    for key in ("cpu", "cpu_count", "versions", "env", "date"):
        assert key in doc["meta"], key
    back, meta = report.read_json(path)
    assert back == rows and meta["command"] == "python -m jad.benchmark all"


def test_missing_peer_is_a_null_peer_with_a_note(tmp_path):
    a = report.record_missing("kernels", "knn k=1", 1.0, "faiss-cpu")
    b = report.record("pbas", "train step", 1.0, "torch", None)
    for row in (a, b):
        assert row.peer is None and row.peer_s is None and row.ratio is None
    assert "faiss-cpu not installed" in a.notes and "torch" in b.notes
    path = report.write_json(tmp_path / "b.json", report.take(), {})
    doc = json.loads(path.read_text())
    assert doc["rows"][0]["peer"] is None and doc["rows"][0]["peer_s"] is None
    assert report.read_json(path)[0][0] == a


def test_markdown_table():
    rows = [
        report.Row("metrics", "AUROC | AP", 0.25, "sklearn", 2.0, notes="x"),
        report.Row("kernels", "coreset", 1.5e-4, notes="peer torch not installed"),
    ]
    table = report.markdown_table(rows)
    lines = table.strip().split("\n")
    assert lines[0].startswith("| benchmark | case | jad | peer | peer time | peer/jad |")
    assert len(lines) == 4 and lines[1].count("|") == 8
    assert all(line.count(" | ") == 6 for line in lines[:1] + lines[2:])  # 7 cells, "|" escaped
    assert "AUROC \\| AP" in lines[2] and "250.0 ms" in lines[2] and "x8.00" in lines[2]
    assert "150 µs" in lines[3] and "| — | — | — |" in lines[3]
    md = report.markdown_report(rows, _meta())
    assert md.startswith("Machine: ") and "Command: `python -m jad.benchmark all`" in md
    assert table.strip() in md


def test_read_json_rejects_other_files(tmp_path):
    (tmp_path / "x.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not a jad benchmark file"):
        report.read_json(tmp_path / "x.json")


# ---------------------------------------------------------------------------------------------
# readme
# ---------------------------------------------------------------------------------------------

TEXT = (
    "# title\n\n## Performance\n\nhand-written prose.\n\n"
    f"{readme.BEGIN}\nold table | 1 s\n{readme.END}\n\nmore prose.\n\n## Development\n"
)


def test_replace_between_markers_keeps_the_rest():
    new = readme.replace_between_markers(TEXT, "\nNEW\n")
    head, tail = TEXT.split(readme.BEGIN)[0], TEXT.split(readme.END)[1]
    assert new == f"{head}{readme.BEGIN}\nNEW\n{readme.END}{tail}"
    assert "old table" not in new
    assert readme.replace_between_markers(new, "\nNEW\n") == new  # idempotent


@pytest.mark.parametrize(
    "text, match",
    [
        (TEXT.replace(readme.BEGIN, ""), "has no '<!-- bench:begin -->'"),
        (TEXT.replace(readme.END, ""), "has no '<!-- bench:end -->'"),
        (TEXT + readme.END, "has 2 '<!-- bench:end -->'"),
        (f"{readme.END}\n{readme.BEGIN}\n", "before"),
    ],
)
def test_replace_between_markers_errors(text, match):
    with pytest.raises(UserError, match=match) as e:
        readme.replace_between_markers(text, "x")
    assert "## Performance" in str(e.value)  # the message names the fix


def test_update_readme_from_bench_json(tmp_path, capsys):
    rows = [report.Row("kernels", "knn", 1.0, "faiss", 2.0)]
    meta = _meta()
    report.write_json(tmp_path / "bench.json", rows, meta)
    md = tmp_path / "README.md"
    md.write_text(TEXT)
    argv = ["readme", f"--bench={tmp_path / 'bench.json'}", f"--readme={md}"]
    assert benchmark.main(argv) == 0
    new = md.read_text()
    assert new.startswith(TEXT.split(readme.BEGIN)[0]) and new.endswith(TEXT.split(readme.END)[1])
    assert "| kernels | knn | 1.00 s | faiss | 2.00 s | x2.00 |" in new
    assert meta["date"] in new and meta["cpu"] in new and "python -m jad.benchmark all" in new
    assert benchmark.main(argv) == 0 and md.read_text() == new
    assert "already up to date" in capsys.readouterr().out

    md.write_text("# no markers\n")
    assert benchmark.main(argv) == 2
    assert "has no '<!-- bench:begin -->' marker" in capsys.readouterr().err
    assert md.read_text() == "# no markers\n"
    assert benchmark.main(["readme", f"--bench={tmp_path / 'nope.json'}", f"--readme={md}"]) == 2
    assert "not found" in capsys.readouterr().err


def test_repo_readme_has_the_markers():
    text = REPO_README.read_text()
    new = readme.replace_between_markers(text, "\nX\n")
    assert new.index(readme.BEGIN) > text.index("## Performance")
    assert new.index(readme.END) < text.index("## Development")


# ---------------------------------------------------------------------------------------------
# suite
# ---------------------------------------------------------------------------------------------


def test_presets_cover_every_benchmark():
    assert set(suite.ORDER) <= set(benchmark.COMMANDS)
    for preset in suite.PRESETS.values():
        assert set(preset) == set(suite.ORDER)


@pytest.mark.slow  # runs benchmarks end to end
def test_all_smoke_cheap_subset(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = benchmark.main(["all", "--size=smoke", "--only=metrics,kernels", f"--out={out}"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert [r["name"] for r in doc["meta"]["runs"]] == ["kernels", "metrics"]  # suite order
    assert all(r["status"] == "ok" for r in doc["meta"]["runs"])
    rows, meta = report.read_json(out)
    assert {r.benchmark for r in rows} == {"kernels", "metrics"}
    assert meta["size"] == "smoke" and "--only=metrics,kernels" in meta["command"]
    assert meta["versions"]["jax"] and meta["jax_backend"] == "cpu"
    for r in rows:
        assert r.jad_s is not None and r.jad_s > 0, r
        assert r.peer_s is None or math.isclose(r.ratio, r.peer_s / r.jad_s), r
    assert any(r.peer == "sklearn roc_auc_score" for r in rows)
    assert any(r.peer == "numpy" and r.case.startswith("knn") for r in rows)
    md = out.with_suffix(".md").read_text()
    assert md.count("\n| kernels |") + md.count("\n| metrics |") == len(rows)
    assert "knn k=1 bank 2000x64" in capsys.readouterr().out  # the benchmark's own print


def test_all_records_failures_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(suite.PRESETS["smoke"], "kernels", ["--size=no-such-size"])
    monkeypatch.setitem(suite.NEEDS, "metrics", ("jad_no_such_package",))
    out = tmp_path / "bench.json"
    assert suite.main(["--size=smoke", "--only=kernels,metrics", f"--out={out}"]) == 1
    doc = json.loads(out.read_text())
    runs = {r["name"]: r for r in doc["meta"]["runs"]}
    assert runs["kernels"]["status"] == "exit status 2"
    assert runs["metrics"]["status"] == "skipped"
    cases = {(r["benchmark"], r["case"]): r for r in doc["rows"]}
    assert "exit status 2" in cases[("kernels", "(failed)")]["notes"]
    assert "jad_no_such_package not installed" in cases[("metrics", "(all cases)")]["notes"]
    assert "**kernels exit status 2**" in out.with_suffix(".md").read_text()


def test_all_rejects_unknown_names(tmp_path):
    with pytest.raises(SystemExit):
        suite.main(["--only=kernels,nope", f"--out={tmp_path / 'b.json'}"])


@pytest.mark.slow
def test_patchcore_stages_tiny():
    """Every stage gets a row; jad and its peers compute the same things (tiny sizes, ~15 s)."""
    from jad.benchmarks import patchcore

    argv = ["--train-images=2", "--test-images=1", "--image-size=64", "--batch=1", "--repeats=1"]
    assert patchcore.main([*argv, "--peer-steps=5"]) == 0
    rows = report.take()
    stages = ["backbone", "patch aggregation", "fit: features", "fit: coreset", "score: kNN"]
    stages += ["score: maps", "score: PatchCore.predict"]
    for stage in stages:
        assert any(r.case.startswith(stage) and r.jad_s > 0 for r in rows), stage
    notes = " ".join(r.notes for r in rows)
    assert "idx==numpy 1.0000" in notes and "numpy 5/5" in notes
    if patchcore._have("torch"):
        assert "torch[P,N] 5/5" in notes
        found = [re.search(r"max rel diff (?:to torch )?(\S+)", r.notes) for r in rows]
        diffs = [float(m.group(1)) for m in found if m]
        assert len(diffs) == 2 and max(diffs) < 1e-4, diffs


def test_update_reruns_one_benchmark_and_keeps_the_others(tmp_path, monkeypatch):
    """``--update``: the rerun benchmark's rows replace its old ones; the rest are kept."""
    out = tmp_path / "bench.json"
    old = [
        report.Row("kernels", "old kernels row", 1.0, "numpy", 2.0),
        report.Row("metrics", "old metrics row", 3.0),
    ]
    report.write_json(
        out,
        old,
        {
            "command": "first run",
            "date": "d0",
            "runs": [{"name": "kernels", "status": "ok"}, {"name": "metrics", "status": "failed"}],
        },
    )
    monkeypatch.setitem(suite.NEEDS, "metrics", ("jad_no_such_package",))  # rerun = cheap skip
    assert suite.main(["--size=smoke", "--only=metrics", "--update", f"--out={out}"]) == 0
    rows, meta = report.read_json(out)
    cases = {(r.benchmark, r.case) for r in rows}
    assert ("kernels", "old kernels row") in cases and ("metrics", "old metrics row") not in cases
    assert ("metrics", "(all cases)") in cases
    assert [r["name"] for r in meta["runs"]] == ["kernels", "metrics"]
    assert meta["runs"][0]["from_earlier_run"] == "d0" and "first run" in meta["command"]
