"""Fuzzing what a user or a controller hands over: inventories, experiment files, variant
specs and job specs. Each test generates at least 500 inputs with hypothesis; every one
must end in a valid result or a clear error (a :class:`TslmError` with a message), never
in any other exception. Each test prints how many inputs it tried and how they ended.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.jobs import Workdir, read_spec
from agent.meters import KNOWN_METER_KINDS
from orchestrator.experiment import build_experiment
from orchestrator.inventory import parse_inventory
from tasks.compression.spec import METHODS, parse_variant
from tasks.errors import TslmError

EXAMPLES = 600
MINIMUM = 500
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=24),
    st.sampled_from(["", " ", "all", "..", "../x", "/etc/passwd", "~", "{x}", "%s", "\x00"]),
)


def tree(keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
        max_leaves=16,
    )


def mapping_of(
    known: dict[str, st.SearchStrategy[Any]], required: tuple[str, ...] = ()
) -> st.SearchStrategy[dict]:
    """Dicts of known fields: half of them clean (plausible values only, ``required``
    present), half dirty (unknown keys, wild values, required fields left out)."""
    names = list(known)
    wild = tree(st.text(max_size=8))
    clean = st.fixed_dictionaries(
        {name: known[name] for name in required},
        optional={name: known[name] for name in names if name not in required},
    )
    dirty = st.dictionaries(
        st.one_of(st.sampled_from(names), st.text(max_size=10)), wild, max_size=4
    ).flatmap(
        lambda extra: st.fixed_dictionaries(
            {}, optional={name: known[name] | wild for name in names}
        ).map(lambda doc: {**extra, **doc})
    )
    return st.one_of(clean, dirty)


def fuzz(strategy: st.SearchStrategy[Any], check: Callable[[Any], Any], label: str) -> Counter[str]:
    """Run ``check`` on generated inputs; count how each ended (never a stray exception)."""
    outcomes: Counter[str] = Counter()

    @FUZZ
    @given(strategy)
    def run(value: Any) -> None:
        try:
            check(value)
        except TslmError as exc:
            assert exc.message.strip(), f"an error without a message for {value!r}"
            outcomes["clear error"] += 1
        else:
            outcomes["valid"] += 1

    run()
    total = sum(outcomes.values())
    print(f"\nfuzz {label}: {total} inputs: {dict(outcomes)}")
    assert total >= MINIMUM, outcomes
    return outcomes


# --------------------------------------------------------------------------- inventories

NAMES = st.one_of(
    st.sampled_from(["pi4", "pi5", "local", "all", "lab", "x" * 70]), st.text(max_size=8)
)
METER = mapping_of(
    {
        "kind": st.sampled_from([*KNOWN_METER_KINDS, "um26c"]),
        "port": st.sampled_from(["/dev/rfcomm0", "/dev/ttyUSB0"]),
        "prot": st.just("/dev/ttyUSB0"),
        "baudrate": st.sampled_from([9600, "9600", "fast"]),
        "hwmon_name": st.sampled_from(["ina226", ""]),
        "sysfs_root": st.just("/"),
        "vcgencmd": st.just("/usr/bin/vcgencmd"),
        "domain": st.just("intel-rapl:0"),
    },
    required=("kind",),
)
DEVICE = mapping_of(
    {
        "host": st.sampled_from(["pi4.local", "192.0.2.1", ""]),
        "user": st.sampled_from(["pi", ""]),
        "port": st.integers(min_value=-5, max_value=70000),
        "transport": st.sampled_from(["ssh", "local", "telnet"]),
        "board": st.sampled_from(["raspberrypi4", "raspberrypi5", "generic", "pi6"]),
        "tags": st.lists(NAMES, max_size=3),
        "meter": METER,
        "python": st.just("~/.tslm/venv/bin/python3"),
        "workdir": st.just("~/.tslm"),
        "connect_timeout_s": st.floats(),
        "torch_index": st.sampled_from(["https://download.pytorch.org/whl/cpu", "ftp://x"]),
        "torch_version": st.sampled_from(["2.13.0", "latest"]),
    },
    required=("host",),
)
INVENTORY = st.one_of(
    mapping_of(
        {
            "devices": st.dictionaries(NAMES, DEVICE, max_size=3),
            "defaults": DEVICE,
            "groups": st.dictionaries(NAMES, st.lists(NAMES, max_size=3), max_size=2),
        }
    ).map(lambda doc: yaml.safe_dump(doc, allow_unicode=True)),
    st.text(max_size=200),  # not even YAML, or YAML of any shape
)


def test_fuzz_inventories() -> None:
    outcomes = fuzz(INVENTORY, lambda text: parse_inventory(text, "inv.yaml"), "inventories")
    assert outcomes["valid"] and outcomes["clear error"]


# --------------------------------------------------------------------------- experiments

VARIANT_TEXT = st.one_of(
    st.builds(
        lambda method, items: ":".join([method, *items]),
        st.sampled_from([*METHODS, "TT", "svd ", "lora"]),
        st.lists(
            st.builds(
                lambda k, v: f"{k}={v}",
                st.sampled_from(
                    [
                        *("rank", "eps", "ratio", "shape", "head", "impl", "keep", "center"),
                        *("alloc", "bits", "x", ""),
                    ]
                ),
                st.sampled_from(
                    [
                        *("8", "4,8", "0", "-1", "0.4", "2", "1e309", "nan", "8x8x9", "4x4x6x6"),
                        *("0x8", "tied", "keep-dense", "tensorly", "auto", "true", "maybe", ""),
                    ]
                ),
            ),
            max_size=4,
        ),
    ),
    st.text(max_size=30),
)
TASK = st.one_of(
    st.dictionaries(
        st.sampled_from(["generate", "perplexity", "next-token", "choice", "last-word", "x"]),
        mapping_of(
            {
                "num_queries": st.integers(min_value=-2, max_value=10**6),
                "max_new_tokens": st.integers(min_value=-2, max_value=10**6),
                "window": st.integers(min_value=-2, max_value=10**6),
                "stride": st.integers(min_value=-2, max_value=10**6),
                "text": st.sampled_from(["builtin", "builtin:dialogue", "builtin:nope"]),
                "data": st.sampled_from(["hellaswag", "/etc/passwd", "../x.jsonl"]),
                "limit": st.integers(min_value=-2, max_value=100),
                "on": st.sampled_from(["controller", "device", "moon"]),
            }
        ),
        min_size=1,
        max_size=2,
    ),
    st.text(max_size=12),
)
EXPERIMENT = st.one_of(
    mapping_of(
        {
            "name": st.text(max_size=12),
            "model": st.sampled_from(["default", "smollm2", "/nonexistent.gguf"]),
            "variants": st.lists(VARIANT_TEXT, max_size=3),
            "tasks": st.lists(TASK, max_size=3),
            "repetitions": st.integers(min_value=-2, max_value=100),
            "warmup": st.integers(min_value=-2, max_value=100),
            "idle_seconds": st.floats(),
            "window": mapping_of(
                {"min_fresh_samples": st.integers(-2, 50), "min_seconds": st.floats()}
            ),
            "threads": st.integers(min_value=-2, max_value=64),
            "embedding_mode": st.sampled_from(["on-the-fly", "materialized", "lazy"]),
            "max_duration_s": st.floats(),
        }
    ).map(lambda doc: yaml.safe_dump(doc, allow_unicode=True)),
    st.text(max_size=200),
)


def test_fuzz_experiment_files(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"

    def check(text: str) -> None:
        path.write_text(text)
        build_experiment(file=path)

    outcomes = fuzz(EXPERIMENT, check, "experiment files")
    assert outcomes["valid"] and outcomes["clear error"]


# --------------------------------------------------------------------------- variants


def test_fuzz_variant_specs() -> None:
    outcomes = fuzz(VARIANT_TEXT, parse_variant, "variant specs")
    assert outcomes["valid"] and outcomes["clear error"]


# --------------------------------------------------------------------------- job specs

SHA = "a" * 64
GOOD_JOB = {
    "spec_version": 1,
    "job_id": "job-1",
    "run_id": "r",
    "variant": "dense",
    "model": {"path": "models/m.gguf", "sha256": SHA},
    "artifact": None,
    "tasks": [{"name": "generate"}],
}
JOB = st.one_of(
    mapping_of(
        {
            "spec_version": st.sampled_from([1, 2, "1", True]),
            "job_id": st.sampled_from(["job-1", "..", "../x", "a/b", "", "x" * 200]),
            "run_id": st.text(max_size=8),
            "variant": VARIANT_TEXT,
            "model": mapping_of(
                {
                    "path": st.sampled_from(["models/m.gguf", "../m", "/etc/passwd", "~/m"]),
                    "sha256": st.sampled_from([SHA, "A" * 64, "a" * 63, ""]),
                    "name": st.text(max_size=8),
                }
            ),
            "artifact": st.none() | mapping_of({"path": st.just("a/x"), "sha256": st.just(SHA)}),
            "tasks": st.lists(
                mapping_of({"name": st.sampled_from(["generate", "choice", "x"]), "params": TASK}),
                max_size=2,
            ),
            "repetitions": st.integers(-2, 100),
            "warmup": st.integers(-2, 100),
            "idle_seconds": st.floats(),
            "meter": METER,
            "threads": st.integers(-2, 64),
            "seq_start": st.integers(-2, 10),
            "record_samples": st.booleans(),
            "embedding_mode": st.sampled_from(["on-the-fly", "materialized", "lazy"]),
        }
    ).map(lambda doc: json.dumps({**GOOD_JOB, **doc})),
    st.text(max_size=200),
)


def test_fuzz_job_specs(tmp_path: Path) -> None:
    workdir = Workdir.open(tmp_path / "wd")
    (workdir.root / "models").mkdir()
    (workdir.root / "models" / "m.gguf").write_bytes(b"GGUF")
    path = tmp_path / "job.json"

    def check(text: str) -> None:
        path.write_text(text)
        read_spec(str(path), workdir)

    outcomes = fuzz(JOB, check, "job specs")
    assert outcomes["valid"] and outcomes["clear error"]


@pytest.mark.parametrize("text", ["", "null", "[]", '{"devices": {"pi4": {"meter": 1}}}'])
def test_shapes_that_once_slipped_through(text: str) -> None:
    with pytest.raises(TslmError):
        parse_inventory(text, "inv.yaml")
