"""One error root: every package's user-facing error derives from ``jad.utils.errors.UserError``
(and keeps its standard base), so the CLIs print each as one line by catching the root only."""

from __future__ import annotations

import importlib

import pytest

from jad.utils.errors import UserError, user_error_types

ERRORS = [
    ("jad.data.errors", "DatasetError", ValueError),
    ("jad.imaging", "ImageError", ValueError),
    ("jad.metrics.errors", "MetricError", ValueError),
    ("jad.models.convert", "ConversionError", ValueError),
    ("jad.models.pretrained", "WeightsNotFoundError", FileNotFoundError),
    ("jad.models.pretrained", "WeightsMismatchError", ValueError),
    ("jad.serving", "DetectorError", ValueError),
]


@pytest.mark.parametrize("module,name,std", ERRORS)
def test_every_package_error_derives_from_the_root(module, name, std):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, UserError) and issubclass(cls, std)
    assert isinstance(cls("x"), user_error_types())


def test_the_root_imports_nothing_of_jad():
    import ast
    from pathlib import Path

    import jad.utils.errors as errors

    tree = ast.parse(Path(errors.__file__).read_text())
    imported = [
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in (n.names if isinstance(n, ast.Import) else [None])
    ]
    assert imported == ["__future__"], imported
