"""Executes the "Using jad.ops in your own JAX code" example so the documentation cannot rot."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEADING = "Using jad.ops in your own JAX code"


def _example(path: Path) -> str | None:
    if not path.exists():
        return None
    text = path.read_text()
    at = text.find(HEADING)
    if at < 0:
        return None
    m = re.search(r"```python\n(.*?)```", text[at:], re.S)
    assert m, f"no ```python block after '{HEADING}' in {path}"
    return m.group(1)


def test_the_package_readme_points_to_the_one_copy():
    text = (REPO / "jad/ops/README.md").read_text()
    assert HEADING in text and "```python" not in text  # a pointer, not a second copy


@pytest.mark.parametrize("doc", ["README.md"])
def test_readme_example_runs(doc, capsys):
    code = _example(REPO / doc)
    if code is None:
        pytest.fail(f"{doc} must contain the section '{HEADING}'")
    exec(compile(code, doc, "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "(409,) (784, 1) (1, 224, 224)" in out, out
