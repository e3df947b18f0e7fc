"""Packages: every ``jad*`` package, plus the top-level ``configs/`` folder as ``jad.configs``.

The rest of the metadata is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["jad", "jad.*"]), "jad.configs"],
    package_dir={"jad.configs": "configs"},
)
