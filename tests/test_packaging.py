"""Packaging metadata: setting up prints no deprecation warning of the project's making."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

from packaging.licenses import canonicalize_license_expression
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def test_the_license_is_an_spdx_expression() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    license_ = project["project"]["license"]
    assert isinstance(license_, str), "project.license must be an SPDX string, not a table"
    assert canonicalize_license_expression(license_) == license_
    # setuptools reads an SPDX string from version 77 on
    (setuptools,) = [
        Requirement(r)
        for r in project["build-system"]["requires"]
        if Requirement(r).name == "setuptools"
    ]
    assert not setuptools.specifier.contains("76.9")


def test_setuptools_reads_the_metadata_without_warnings() -> None:
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "license" in m.lower() or "deprecat" in m.lower()], messages
    assert dist.metadata.license_expression == "Apache-2.0"
