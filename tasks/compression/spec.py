"""Variant specs: ``METHOD[:key=value...]`` strings parsed into :class:`VariantSpec`.

The table of methods and their keys lives here (standard library only), so the controller
can validate a spec without importing torch; the compute for each method lives in its own
module, imported lazily through :func:`tasks.compression.get_method`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks.errors import ConfigError

HEAD_POLICIES = ("keep-dense", "tied")
TT_IMPLS = ("batched", "tensorly")
#: storage of TT cores: float32, or K-bit codes with a float16 scale and minimum per core
TT_CORES = ("fp32", "int8", "int6", "int4")
#: bit widths of ``int:bits=K``
INT_BITS = tuple(range(2, 9))
#: GGUF block formats the ``gguf`` method stores (quantised by the gguf package)
GGUF_TYPES = ("q8_0", "q4_0", "q4_1")
#: spellings that stand for a method with preset keys
ALIASES: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "int8": ("int", (("bits", "8"),)),
    "nf4": ("codebook", (("book", "nf"), ("bits", "4"), ("group", "64"))),
}
#: how a ratio= budget is shared among rows: one error bound for all, by marginal gain in
#: total squared error, or by marginal gain weighted by each token's expected frequency
TT_ALLOCS = ("uniform", "adaptive", "weighted")
KEEP_AUTO = "auto"
#: where ``mixed`` takes each token's importance from
IMPORTANCE = ("model", "counts", "uniform")
#: the average bits per weight ``mixed:bits=`` may ask for (float32 is 32)
MIXED_BITS = (1.0, 16.0)
MIXED_GROUPS = ("32", "64", "128")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be >= 1")
    return value


def _rank(text: str) -> tuple[int, ...]:
    """A rank cap: one integer for every bond, or a comma-separated list per bond."""
    ranks = tuple(_positive_int(part) for part in text.split(","))
    if len(ranks) >= 3 and ranks[0] == 1 and ranks[-1] == 1:
        ranks = ranks[1:-1]  # tensorly style, boundary ranks included: 1,4,4,1
    if len(set(ranks)) == 1:
        ranks = ranks[:1]
    return ranks


def _shape(text: str) -> tuple[int, ...]:
    dims = tuple(_positive_int(part) for part in text.lower().split("x"))
    if len(dims) < 2 or any(d < 2 for d in dims):
        raise ValueError("needs at least two factors, each >= 2 (e.g. 8x8x9)")
    return dims


def _unit_float(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError("must be in [0, 1)")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0.0 or value != value or value == float("inf"):
        raise ValueError("must be a positive number")
    return value


def _keep(text: str) -> int | str:
    """``keep=N`` (rows kept dense, N >= 0) or ``keep=auto``."""
    if text.lower() == KEEP_AUTO:
        return KEEP_AUTO
    value = int(text)
    if value < 0:
        raise ValueError("must be a number of rows >= 0, or auto")
    return value


def _bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError("must be true or false")


def _format_bool(value: bool) -> str:
    return "true" if value else "false"


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in options:
            raise ValueError(f"must be one of {'/'.join(options)}")
        return text.lower()

    return parse


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"must be a whole number from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}")
        return value

    return parse


def _group(text: str) -> int:
    value = int(text)
    if value < 2:
        raise ValueError("must be a number of values >= 2 that divides the hidden size")
    return value


def _format(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return format(value, ".10g")
    return str(value)


@dataclass(frozen=True)
class KeySpec:
    """One ``key=value`` option of a method: parser, default (None: unset) and help."""

    parse: Callable[[str], Any]
    help: str
    default: Any = None
    format: Callable[[Any], str] = _format


def _format_shape(value: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in value)


def _check_tt(values: dict[str, Any]) -> str | None:
    """Key combinations of ``tt`` that parse but mean nothing."""
    if values.get("keep") == KEEP_AUTO and "ratio" not in values:
        return "keep=auto chooses the dense rows for a parameter budget: it needs ratio="
    if values.get("alloc") and "ratio" not in values:
        return f"alloc={values['alloc']} shares a parameter budget among rows: it needs ratio="
    if values.get("impl") == "tensorly" and (
        values.get("keep") or values.get("center") or values.get("alloc")
    ):
        return "keep, center and alloc run on the batched implementation only"
    if values.get("cores", "fp32") != "fp32" and values.get("impl") == "tensorly":
        return "cores= quantises the batched implementation's cores; leave impl at batched"
    return None


def _mixed_bits(text: str) -> float:
    value = float(text)
    low, high = MIXED_BITS
    if not low <= value <= high:
        raise ValueError(f"must be between {low:g} and {high:g} bits per weight")
    return value


def _power(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 2.0:
        raise ValueError("must be between 0 and 2")
    return value


def _check_codebook(values: dict[str, Any]) -> str | None:
    """``codebook`` needs a book and bits, and a group whose codebook leaves a saving."""
    if "book" not in values or "bits" not in values:
        return "codebook needs book= (nf or kmeans) and bits= (2 to 8), e.g. book=nf:bits=4"
    bits, group = int(values["bits"]), values.get("group")
    if group is None:
        return None  # a row: checked against the hidden size when compressing
    side = 16.0 * (1 << bits) if values["book"] == "kmeans" else 16.0
    per_weight = bits + side / group
    if per_weight >= 16.0:
        smallest = int(side / (16.0 - bits)) + 1
        return (
            f"book={values['book']}:bits={bits}:group={group} stores {per_weight:g} bits per "
            f"weight ({32.0 / per_weight:.3g}x float32), no smaller than float16; use "
            f"group={smallest} or more, or fewer bits"
        )
    return None


def _check_mixed(values: dict[str, Any]) -> str | None:
    """``mixed`` needs a budget, and one the format can meet (with its smallest rows)."""
    bits = values.get("bits")
    if bits is None:
        return "mixed needs bits= (the average bits per weight, e.g. bits=4)"
    group = int(values.get("group", 64))
    # the cheapest row: 2-bit codes, a 16-bit scale and offset per group, a 2-bit width tag
    floor = 2.0 + 32.0 / group
    if bits < floor:
        return (
            f"bits={bits:g} cannot be met: with group={group} the cheapest row takes "
            f"more than {floor:g} bits per weight; the closest achievable ratio is about "
            f"{32.0 / floor:.3g}x (bits={floor:g}); ask for more bits or a larger group"
        )
    return None


_HEAD = KeySpec(
    _choice(HEAD_POLICIES), "LM head policy when the embedding is tied to it", default="keep-dense"
)


@dataclass(frozen=True)
class MethodInfo:
    """A registered compression method: the module that implements it and its keys."""

    name: str
    module: str
    summary: str
    keys: dict[str, KeySpec]
    #: keys of which at most one may be given
    exclusive: tuple[frozenset[str], ...] = ()
    #: checks across keys: values (non-default ones) -> a problem in words, or None
    check: Callable[[dict[str, Any]], str | None] | None = None


#: The registry: user-facing method name -> method, in the order help lists them.
METHODS: dict[str, MethodInfo] = {
    "dense": MethodInfo(
        "dense",
        "tasks.compression.dense",
        "the original embedding table (identity; no artifact)",
        {},
    ),
    "tt": MethodInfo(
        "tt",
        "tasks.compression.tt",
        "per-token tensor train (TT-SVD of every row reshaped to a tensor)",
        {
            "rank": KeySpec(_rank, "TT rank cap: one value or one per bond (8 or 4,8)"),
            "eps": KeySpec(_unit_float, "relative error bound per row, Oseledets' delta"),
            "ratio": KeySpec(_positive_float, "target compression ratio of the table"),
            "shape": KeySpec(
                _shape, "tensor shape of a row, product = hidden size (8x8x9)", format=_format_shape
            ),
            "head": _HEAD,
            "impl": KeySpec(
                _choice(TT_IMPLS), "batched (ours) or tensorly (per-row loop)", default="batched"
            ),
            "keep": KeySpec(
                _keep,
                "rows of the N tokens most frequent in the calibration "
                "text kept exact, or auto (N chosen with the ranks for ratio=)",
                default=0,
            ),
            "center": KeySpec(
                _bool,
                "subtract the mean row before decomposing (stored)",
                default=False,
                format=_format_bool,
            ),
            "cores": KeySpec(
                _choice(TT_CORES),
                "storage of the cores: fp32, or int8/int6/int4 codes with a float16 scale "
                "and minimum per core of each token",
                default="fp32",
            ),
            "alloc": KeySpec(
                _choice(TT_ALLOCS),
                "ratio= budget: one error bound for every "
                "row (uniform), per-row ranks minimising the total squared "
                "error (adaptive), or that error weighted by calibration-text "
                "token frequency (weighted)",
                default="uniform",
            ),
            "metric": KeySpec(
                _choice(("l2", "layer0")),
                "error the decomposition minimises: plain (l2), or with channels weighted "
                "by the gain of the first layer's norm (layer0; a per-channel scale is "
                "stored to undo the weighting)",
                default="l2",
            ),
        },
        exclusive=(frozenset({"ratio", "rank"}), frozenset({"ratio", "eps"})),
        check=_check_tt,
    ),
    "svd": MethodInfo(
        "svd",
        "tasks.compression.svd",
        "whole-table truncated SVD (rank from the parameter budget)",
        {
            "rank": KeySpec(_positive_int, "rank of the factorisation"),
            "ratio": KeySpec(_positive_float, "target compression ratio of the table"),
            "metric": KeySpec(
                _choice(("l2", "layer0")),
                "error the factorisation minimises: plain squared error (l2), or as the "
                "first layer's RMS norm sees a row: divided by the row's root mean square, "
                "channels weighted by the norm's gain (layer0)",
                default="l2",
            ),
            "head": _HEAD,
        },
        exclusive=(frozenset({"ratio", "rank"}),),
    ),
    "int": MethodInfo(
        "int",
        "tasks.compression.scalar",
        "affine K-bit quantisation per row or per group, float16 scale and minimum "
        "(int8 = int:bits=8)",
        {
            "bits": KeySpec(
                _int_range(INT_BITS[0], INT_BITS[-1]),
                f"bits per value, {INT_BITS[0]} to {INT_BITS[-1]}",
            ),
            "group": KeySpec(
                _group,
                "values per scale and minimum (a divisor of the hidden size; default: a row)",
            ),
            "head": _HEAD,
        },
        check=lambda values: None if "bits" in values else "int needs bits= (2 to 8)",
    ),
    "gguf": MethodInfo(
        "gguf",
        "tasks.compression.ggufq",
        "a GGUF block format of llama.cpp, quantised by the gguf package",
        {
            "type": KeySpec(_choice(GGUF_TYPES), f"block format: {', '.join(GGUF_TYPES)}"),
            "head": _HEAD,
        },
        check=lambda values: (
            None if "type" in values else f"gguf needs type= ({', '.join(GGUF_TYPES)})"
        ),
    ),
    "mixed": MethodInfo(
        "mixed",
        "tasks.compression.mixed",
        "per-token widths (2/3/4 bits in groups, or 8 bits) under an average bit budget, "
        "spent where the model's own token probabilities say it matters",
        {
            "bits": KeySpec(_mixed_bits, "average stored bits per weight, scales included"),
            "group": KeySpec(
                lambda t: int(_choice(MIXED_GROUPS)(t)),
                "channels per group of the 2-4 bit rows (32/64/128)",
                default=64,
            ),
            "importance": KeySpec(
                _choice(IMPORTANCE),
                "token importance: the model's mean probability on the calibration "
                "text (model), calibration counts + 1 (counts), or none (uniform)",
                default="model",
            ),
            "power": KeySpec(
                _power,
                "exponent applied to the importance (1: as measured; below 1 flattens it, "
                "sparing rare tokens the narrowest widths)",
                default=0.5,
            ),
            "metric": KeySpec(
                _choice(("l2", "layer0")),
                "error the allocation minimises: plain squared error (l2), or as the "
                "first layer's RMS norm sees a row: divided by the row's mean square, "
                "channels weighted by the norm's squared gain (layer0)",
                default="layer0",
            ),
            "head": _HEAD,
        },
        check=_check_mixed,
    ),
    "codebook": MethodInfo(
        "codebook",
        "tasks.compression.codebook",
        "K-bit codes into non-uniform levels per group: NormalFloat levels scaled by the "
        "group's largest magnitude (nf; nf4 = book=nf:bits=4:group=64), or levels fitted "
        "to the group by k-means (kmeans)",
        {
            "book": KeySpec(_choice(("nf", "kmeans")), "the levels: nf or kmeans"),
            "bits": KeySpec(_int_range(INT_BITS[0], INT_BITS[-1]), "bits per code, 2 to 8"),
            "group": KeySpec(
                _group,
                "values per scale (nf) or codebook (kmeans); a divisor of the hidden size "
                "(default: a row)",
            ),
            "head": _HEAD,
        },
        check=_check_codebook,
    ),
    "fp16": MethodInfo("fp16", "tasks.compression.floats", "the table in float16", {"head": _HEAD}),
    "bf16": MethodInfo(
        "bf16", "tasks.compression.floats", "the table in bfloat16", {"head": _HEAD}
    ),
}

_SLUG_BAD = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class VariantSpec:
    """A parsed, validated variant. ``params`` holds the keys set to non-default values."""

    method: str
    params: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        """Value of ``key``, else the method's default for it, else ``default``."""
        for name, value in self.params:
            if name == key:
                return value
        spec = METHODS[self.method].keys.get(key)
        if spec is not None and spec.default is not None:
            return spec.default
        return default

    @property
    def info(self) -> MethodInfo:
        return METHODS[self.method]

    @property
    def canonical(self) -> str:
        """Normalised spec: keys in table order, defaults and formatting normalised away."""
        keys = self.info.keys
        parts = [self.method]
        for name, value in self.params:
            if value == keys[name].default:
                continue
            parts.append(f"{name}={keys[name].format(value)}")
        return ":".join(parts)

    @property
    def slug(self) -> str:
        """File-system and job-id safe form of :attr:`canonical` (letters, digits, . _ -)."""
        text = self.canonical.replace(":", "_").replace("=", "-").replace(",", ".")
        return _SLUG_BAD.sub("-", text)

    @property
    def needs_artifact(self) -> bool:
        """False for the identity variant ``dense``: it runs the unmodified model."""
        return self.method != "dense"

    @property
    def needs_calibration(self) -> bool:
        """True when the method orders tokens by their frequency in the calibration text."""
        return (
            bool(self.get("keep"))
            or self.get("alloc") == "weighted"
            or self.get("importance") == "counts"
        )

    @property
    def needs_layer0_gain(self) -> bool:
        """True when the method measures errors as the first layer's norm sees them."""
        return self.method in ("mixed", "svd", "tt") and self.get("metric") == "layer0"

    @property
    def needs_importance(self) -> bool:
        """True when the method weighs tokens by the model's own probabilities."""
        return self.method == "mixed" and self.get("importance") == "model"

    @property
    def head(self) -> str:
        return self.get("head", "keep-dense")

    def __str__(self) -> str:
        return self.canonical


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_variant(spec: str) -> VariantSpec:
    """Parse ``METHOD[:key=value...]`` (e.g. ``tt:rank=8:shape=8x8x9``) into a VariantSpec.

    Raises :class:`ConfigError` naming the unknown method or key, with the valid ones.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(
            "empty variant spec", hint=f"write METHOD[:key=value...]; methods: {', '.join(METHODS)}"
        )
    method, *items = spec.strip().split(":")
    method = method.strip().lower()
    if method in ALIASES:
        method, preset = ALIASES[method]
        items = [f"{k}={v}" for k, v in preset] + items  # a preset key given again is refused
    if method not in METHODS:
        raise ConfigError(
            f"variant {spec!r}: unknown method '{method}'"
            f"{_did_you_mean(method, [*METHODS, *ALIASES])}",
            hint=f"valid methods: {', '.join([*METHODS, *ALIASES])}",
        )
    info = METHODS[method]
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().lower()
        if not sep or not key or not raw.strip():
            raise ConfigError(
                f"variant {spec!r}: '{item}' is not key=value",
                hint=f"keys of '{method}': {', '.join(info.keys) or '(none)'}",
            )
        if key not in info.keys:
            valid = ", ".join(info.keys) or "(none)"
            raise ConfigError(
                f"variant {spec!r}: method '{method}' has no key '{key}'"
                f"{_did_you_mean(key, list(info.keys))}",
                hint=f"keys of '{method}': {valid}",
            )
        if key in values:
            raise ConfigError(f"variant {spec!r}: key '{key}' given twice")
        try:
            values[key] = info.keys[key].parse(raw.strip())
        except ValueError as exc:
            raise ConfigError(
                f"variant {spec!r}: {key}={raw.strip()!r} is invalid: {exc}",
                hint=info.keys[key].help,
            ) from exc
    for group in info.exclusive:
        both = sorted(group & set(values))
        if len(both) > 1:
            raise ConfigError(
                f"variant {spec!r}: give only one of {' and '.join(both)}",
                hint="ratio picks the truncation itself from the parameter budget",
            )
    explicit_values = {k: v for k, v in values.items() if v != info.keys[k].default}
    problem = info.check(explicit_values) if info.check is not None else None
    if problem is not None:
        raise ConfigError(
            f"variant {spec!r}: {problem}", hint=f"keys of '{method}': {', '.join(info.keys)}"
        )
    order = list(info.keys)
    # a key set to its default is the same variant as the key left out
    explicit = {k: v for k, v in values.items() if v != info.keys[k].default}
    params = tuple(sorted(explicit.items(), key=lambda kv: order.index(kv[0])))
    return VariantSpec(method=method, params=params)


def describe_methods() -> str:
    """One line per method with its keys, for help texts and error hints."""
    lines = []
    for info in METHODS.values():
        keys = ", ".join(info.keys) or "no keys"
        lines.append(f"{info.name}: {info.summary} [{keys}]")
    return "\n".join(lines)
