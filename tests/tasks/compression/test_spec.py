"""Variant specs: parsing, normalisation, slugs, errors, and the method registry."""

from __future__ import annotations

import re

import pytest

from tasks.compression import METHODS, get_method, parse_variant
from tasks.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("dense", "dense"),
        ("tt:rank=8:shape=8x8x9", "tt:rank=8:shape=8x8x9"),
        ("TT:shape=8X8X9:rank=8", "tt:rank=8:shape=8x8x9"),
        ("tt:rank=1,8,8,1", "tt:rank=8"),
        ("tt:rank=4,8", "tt:rank=4,8"),
        ("tt:eps=0.40", "tt:eps=0.4"),
        ("tt:ratio=2.0", "tt:ratio=2"),
        ("tt:rank=8:head=keep-dense:impl=batched", "tt:rank=8"),
        ("tt:rank=8:impl=tensorly:head=tied", "tt:rank=8:head=tied:impl=tensorly"),
        ("svd:ratio=2", "svd:ratio=2"),
        ("int8", "int:bits=8"),
        ("int:bits=4:group=64", "int:bits=4:group=64"),
        ("int8:head=tied", "int:bits=8:head=tied"),
        ("gguf:type=Q8_0", "gguf:type=q8_0"),
        ("tt:rank=8:shape=8x8x9:cores=int6", "tt:rank=8:shape=8x8x9:cores=int6"),
        ("tt:rank=8:cores=fp32", "tt:rank=8"),
    ],
)
def test_canonical_form(text: str, canonical: str) -> None:
    spec = parse_variant(text)
    assert spec.canonical == canonical
    assert parse_variant(spec.canonical) == spec


def test_slug_is_filesystem_safe() -> None:
    for text in ("tt:rank=4,8:shape=8x8x9", "tt:eps=0.25:head=tied", "svd:ratio=1.5", "dense"):
        slug = parse_variant(text).slug
        assert re.fullmatch(r"[A-Za-z0-9._-]+", slug), slug
    assert parse_variant("tt:rank=4,8").slug != parse_variant("tt:rank=48").slug


def test_values_and_defaults() -> None:
    spec = parse_variant("tt:rank=8:shape=8x8x9")
    assert spec.get("rank") == (8,)
    assert spec.get("shape") == (8, 8, 9)
    assert spec.get("eps") is None
    assert spec.head == "keep-dense"
    assert spec.get("impl") == "batched"
    assert spec.needs_artifact
    assert not parse_variant("dense").needs_artifact


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("tx:rank=8", "did you mean 'tt'"),
        ("tt:rnak=8", "did you mean 'rank'"),
        ("svd:eps=0.3", "has no key 'eps'"),
        ("tt:rank", "not key=value"),
        ("tt:rank=0", "rank='0' is invalid"),
        ("tt:eps=1.5", "eps='1.5' is invalid"),
        ("tt:shape=8x1x72", "shape='8x1x72' is invalid"),
        ("tt:rank=8:ratio=2", "only one of"),
        ("tt:rank=8:rank=4", "given twice"),
        ("tt:head=both", "must be one of keep-dense/tied"),
        ("int8:bits=4", "key 'bits' given twice"),
        ("int:bits=0", "bits='0' is invalid: must be from 2 to 8"),
        ("int:bits=9", "bits='9' is invalid: must be from 2 to 8"),
        ("int:bits=four", "must be a whole number from 2 to 8"),
        ("int:group=64", "int needs bits="),
        ("int:bits=4:group=1", "group='1' is invalid"),
        ("int:bits=4:grop=64", "did you mean 'group'"),
        ("svd:ratio=2:cores=int8", "method 'svd' has no key 'cores'"),
        ("int:bits=4:cores=int8", "method 'int' has no key 'cores'"),
        ("tt:rank=8:cores=int5", "must be one of fp32/int8/int6/int4"),
        ("tt:rank=8:impl=tensorly:cores=int8", "leave impl at batched"),
        ("gguf", "gguf needs type="),
        ("gguf:type=q2_k", "must be one of q8_0/q4_0/q4_1"),
        ("", "empty variant"),
    ],
)
def test_errors_say_what_is_wrong(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_variant(text)
    assert needle in str(info.value)


def test_unknown_method_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_variant("quantum")
    assert all(name in info.value.hint for name in METHODS)


def test_every_registered_method_imports_and_has_the_interface() -> None:
    for name in METHODS:
        module = get_method(name)
        assert callable(module.compress) and callable(module.build_embedding), name
