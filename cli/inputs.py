"""Turning command-line text into what the API takes: formulas, bindings, names, limits.

Used by the Typer app and by the direct reader of plain formula commands
(``direct.py``): every command reads its text the same way. Nothing heavy is
imported here.
"""

from __future__ import annotations

import sys
from collections import namedtuple

from gradcalc.limits import DEFAULT_LIMITS, LIMIT_DEFAULTS, Limits

LIMIT_OPTIONS = {f"--{f.replace('_', '-')}": f for f in LIMIT_DEFAULTS}
"""``--max-iterations`` -> ``max_iterations`` (``--timeout`` -> ``timeout``), one option per
Limits field."""


class UsageProblem(Exception):
    """A command-line argument that cannot be used as given (exit code 2)."""


_INVOCATION_DEFAULTS = {
    "bindings": {},  # NAME=VALUE, in order
    "wrt": None,
    "of": None,
    "grad_output": None,
    "json": False,
    "graph": False,
    "check": False,
    "check_tolerance": None,
    "seed": None,
    "dtype": "float64",
    "limits": {},  # Limits fields given as options
    "format": "tree",
    "output": None,
    "simplify": "gradcalc",
}


class Invocation(
    namedtuple(
        "Invocation",
        ["command", "formula", *_INVOCATION_DEFAULTS],
        defaults=_INVOCATION_DEFAULTS.values(),
    )
):
    """Everything a one-shot command needs, however its arguments were parsed: ``command``
    (grad, eval, graph, jacobian, hessian, explain or diff), ``formula`` as given (the
    text, ``-`` for standard input, ``@path`` for a file), then the options.

    Immutable (its dict defaults are shared and never mutated); ``collections.namedtuple``,
    not a dataclass or ``typing.NamedTuple``, which cost milliseconds of start-up.
    """

    __slots__ = ()

    command: str
    formula: str
    bindings: dict[str, str]
    wrt: list[str] | None
    of: str | None
    grad_output: str | None
    json: bool
    graph: bool
    check: bool
    check_tolerance: float | None
    seed: int | None
    dtype: str
    limits: dict[str, int]
    format: str
    output: str | None
    simplify: str

    def make_limits(self) -> Limits:
        return make_limits(self.limits)


def parse_binding(text: str) -> tuple[str, str]:
    """``a=2`` -> ``("a", "2")``; the value is everything after the first ``=``."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise UsageProblem(
            f"expected NAME=VALUE, got {text!r} (e.g. a=2, x='[1, 2]', w='ones(3, 1)')"
        )
    if not value.strip():
        raise UsageProblem(f"{name}= has no value")
    return name, value


def parse_bindings(items: list[str] | None) -> dict[str, str]:
    """NAME=VALUE arguments in order; a name bound twice (``x=1 x=2``) is a usage
    error: which value was meant cannot be guessed."""
    bindings: dict[str, str] = {}
    for item in items or []:
        name, value = parse_binding(item)
        if name in bindings:
            raise UsageProblem(
                f"{name} is bound twice ({name}={bindings[name]} and {name}={value}); "
                "give each variable one value"
            )
        bindings[name] = value
    return bindings


def parse_names(text: str | None) -> list[str] | None:
    """``--wrt a,b`` (or ``a b``) -> ``["a", "b"]``; None when not given."""
    if text is None:
        return None
    names = [name for name in text.replace(",", " ").split() if name]
    for name in names:
        if not name.isidentifier():
            raise UsageProblem(f"--wrt: {name!r} is not a variable name")
    if not names:
        raise UsageProblem("--wrt needs at least one name")
    return names


def read_formula(argument: str) -> str:
    """The formula text: the argument itself, standard input for ``-``, a file for ``@path``."""
    if argument == "-":
        return sys.stdin.read()
    if argument.startswith("@") and len(argument) > 1:
        path = argument[1:]
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UsageProblem(f"cannot read formula file {path!r}: {reason}") from None
    return argument


def make_limits(overrides: dict[str, int], base: Limits = DEFAULT_LIMITS) -> Limits:
    """``base`` (the one-shot defaults, or `BATCH_LIMITS`) with the options given."""
    if not overrides:
        return base
    return base.replace(**overrides)
