"""Plain command lines (one-shot formulas, ``functions``, ``repl``), read without importing Typer.

Why this exists (measured, a quiet 2-core machine, installed copy, medians of
15 interleaved runs): ``python -c "import typer"`` takes 69 ms where ``python
-c pass`` takes 13 ms, while qalc answers the same value and partials in 70
ms. With every command line going through Typer, ``gradcalc '3*a**3 - b**2'
a=2 b=6 --json`` took 95 ms (1.36x qalc, issue 6's W1 target is <= 1.0x)
against 40 ms with a direct read: Typer's import alone is the whole budget.

So this module reads exactly one shape of command line, ``gradcalc
[grad|eval|diff|graph|jacobian|hessian|explain] FORMULA [NAME=VALUE]... [options]``,
when every token is one it fully understands, and returns None for anything
else (``--help``, other commands, an unknown option, a short option, a
malformed value), which the Typer app then parses and explains as it always
does. It is a second reader of one declaration, not a second declaration:
:data:`OPTIONS` restates those commands' options of ``gradcalc.cli.app``, and
``tests/test_cli_direct.py`` fails the moment the two differ (names, flags,
kinds of value), and checks on a corpus of command lines that both build the
same `Invocation`, or that this module declines.

``gradcalc functions [--json]`` and ``gradcalc repl [options]`` (and bare
``gradcalc`` on a terminal, which starts the REPL) are read the same way by
:func:`parse_call`, for the runners of ``gradcalc.cli.run``: their issue 12
targets (functions <= 1.0x ``import numpy``, the REPL's first prompt <= 1.5x)
leave no room for Typer's import either. :data:`RUNNER_OPTIONS` restates their
options, checked against the app's by the same tests.

``gradcalc batch [FILE]... [options]`` is read there too: its issue 12 target (a mixed
batch within 1.5x of a hand-written NumPy worker, start-up included) gave Typer's import
~10% of the whole run (a worker's entire start-up is ``import numpy``).
"""

from __future__ import annotations

import re
import sys
from collections import namedtuple

from gradcalc.cli.inputs import (
    LIMIT_OPTIONS,
    Invocation,
    UsageProblem,
    make_limits,
    parse_bindings,
    parse_names,
)
from gradcalc.limits import BATCH_LIMITS

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

FLAG, TEXT, INTEGER, POSITIVE, DTYPE = "flag", "text", "integer", "positive", "dtype"
NUMBER, GRAPH_FORMAT, COUNT = "number", "graph format", "count"
"""Kinds of option: a flag; a value taken as text; an integer; an integer >= 1; a dtype;
a finite number >= 0; one of `GRAPH_FORMATS`; an integer >= 0."""

_COMMON = {
    "--of": ("of", TEXT),
    "--json": ("json", FLAG),
    "--seed": ("seed", INTEGER),
    "--dtype": ("dtype", DTYPE),
    **{option: (field, POSITIVE) for option, field in LIMIT_OPTIONS.items()},
}
OPTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "grad": {
        **_COMMON,
        "--wrt": ("wrt", TEXT),
        "--grad-output": ("grad_output", TEXT),
        "--graph": ("graph", FLAG),
        "--check": ("check", FLAG),
        "--check-tolerance": ("check_tolerance", NUMBER),
    },
    "eval": _COMMON,
    **{
        command: {**_COMMON, "--wrt": ("wrt", TEXT)}
        for command in ("jacobian", "hessian", "explain")
    },
    "graph": {
        **_COMMON,
        "--grad-output": ("grad_output", TEXT),
        "--format": ("format", GRAPH_FORMAT),
        "--output": ("output", TEXT),
    },
    "diff": {
        "--wrt": ("wrt", TEXT),
        "--json": ("json", FLAG),
        "--dtype": ("dtype", DTYPE),
        "--simplify": ("simplify", TEXT),
        **{option: (field, POSITIVE) for option, field in LIMIT_OPTIONS.items()},
    },
}
"""Per command, each option (its long name) -> (Invocation field, kind of value)."""
RUNNER_OPTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "functions": {"--json": ("json", FLAG)},
    "repl": {
        "--seed": ("seed", INTEGER),
        "--dtype": ("dtype", DTYPE),
        **{option: (field, POSITIVE) for option, field in LIMIT_OPTIONS.items()},
    },
    "batch": {
        "--jobs": ("jobs", COUNT),
        "--progress": ("progress", FLAG),  # (its other spelling, --no-progress: the app's)
        "--force-jobs": ("force_jobs", FLAG),
        "--max-line-bytes": ("max_line_bytes", TEXT),
        "--dask": ("dask", TEXT),
        "--output-dir": ("output_dir", TEXT),
        "--partition-size": ("partition_size", TEXT),
        **{option: (field, POSITIVE) for option, field in LIMIT_OPTIONS.items()},
    },
}
"""The other commands read here, which call a runner (`RUNNERS`): each option -> (the
app's parameter, kind of value)."""
DTYPES = ("float64", "float32")
GRAPH_FORMATS = ("tree", "json", "dot", "mermaid", "svg", "png", "pdf")
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


class Call(namedtuple("Call", ["runner", "arguments"])):
    """A command line read for a runner other than `run_invocation`: the runner's name (one
    of `RUNNERS`: ``run_functions``, ``run_repl``, ``run_batch_files``) and its keyword
    arguments, as the app passes them. (``collections.namedtuple``: ``typing`` costs
    milliseconds to import.)"""

    __slots__ = ()

    runner: str
    arguments: dict[str, Any]


class _Declined(Exception):
    """A token not fully understood here: the Typer app reads the command line."""


def parse(args: list[str]) -> Invocation | None:
    """The `Invocation` of a plain formula command line (a command of `OPTIONS`), or None
    for the Typer app."""
    command = "grad"
    if args and args[0] in OPTIONS:
        command, args = args[0], args[1:]
    elif args and args[0].isidentifier():
        return None  # another command (or a formula that is a bare name): Typer tells which
    declared = OPTIONS[command]
    try:
        positional, given = _read(args, declared)
        if not positional:
            return None
        return _invocation(command, positional, given, declared)
    except _Declined:
        return None


def parse_call(args: list[str]) -> Call | None:
    """The runner `Call` of ``gradcalc functions [--json]``, ``gradcalc repl [options]``,
    ``gradcalc batch [FILE]... [options]`` or bare ``gradcalc`` on a terminal (the REPL, as
    the app starts it), or None for the app."""
    if not args:
        return Call("run_repl", {}) if on_terminal() else None
    declared = RUNNER_OPTIONS.get(args[0])
    if declared is None:
        return None
    try:
        positional, given = _read(args[1:], declared)
    except _Declined:
        return None
    values = {declared[option][0]: value for option, value in given.items()}
    limits = {field: values.pop(field) for field in LIMIT_OPTIONS.values() if field in values}
    if args[0] == "batch":
        if any(source.startswith("-") and source != "-" for source in positional):
            return None  # a short option (-j 2), or a name the app refuses as one
        arguments = {"sources": positional or ["-"], **values}
        return Call("run_batch_files", {**arguments, "limits": make_limits(limits, BATCH_LIMITS)})
    if positional:
        return None  # neither functions nor repl takes arguments: the app says so
    if args[0] == "functions":
        return Call("run_functions", {"as_json": values.get("json", False)})
    arguments = {"seed": values.get("seed"), "dtype": values.get("dtype", DTYPES[0])}
    return Call("run_repl", {**arguments, "limits": make_limits(limits)})


RUNNERS = {
    "run_functions": "gradcalc.cli.run",
    "run_repl": "gradcalc.cli.run",
    "run_batch_files": "gradcalc.cli.distributed",
}
"""Each runner a `Call` names -> its module."""


def runner(name: str) -> Any:
    """The runner function a `Call` names, its module imported now (``gradcalc.cli.run``
    does not import ``batch``'s modules, which import it)."""
    import importlib

    return getattr(importlib.import_module(RUNNERS[name]), name)


def on_terminal() -> bool:
    """What the app's callback asks before starting the REPL for bare ``gradcalc``."""
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):  # no stream, or a closed one: the app explains
        return False


def _read(
    args: list[str], declared: dict[str, tuple[str, str]]
) -> tuple[list[str], dict[str, Any]]:
    """The positional tokens, and each option given (the last time) with its value converted;
    raises `_Declined` at the first token not fully understood."""
    positional: list[str] = []
    given: dict[str, Any] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if token.startswith("--") or token == "-h":
            name, eq, inline = token.partition("=")
            kind = declared.get(name, (None, None))[1]
            if kind is None or (kind == FLAG and eq):
                raise _Declined
            if kind == FLAG:
                given[name] = True
            elif eq:
                given[name] = _value(kind, inline)
            elif i + 1 < len(args):
                i += 1
                given[name] = _value(kind, args[i])
            else:
                raise _Declined
        else:
            positional.append(token)  # a formula may start with '-': gradcalc '-a**2' a=3
        i += 1
    return positional, given


def _value(kind: str, text: str) -> Any:
    """An option's text as the app converts it (raises `_Declined` where it would refuse)."""
    if kind in (INTEGER, POSITIVE, COUNT):
        if not _INTEGER.fullmatch(text):
            raise _Declined
        number = int(text)
        if (kind == POSITIVE and number < 1) or (kind == COUNT and number < 0):
            raise _Declined
        return number
    if kind == NUMBER:
        if not _NUMBER.fullmatch(text):
            raise _Declined
        return float(text)
    if (kind == DTYPE and text not in DTYPES) or (
        kind == GRAPH_FORMAT and text not in GRAPH_FORMATS
    ):
        raise _Declined
    return text


def _invocation(
    command: str,
    positional: list[str],
    given: dict[str, Any],
    declared: dict[str, tuple[str, str]],
) -> Invocation | None:
    fields: dict = {"limits": {}}
    for option, value in given.items():
        field = declared[option][0]
        if field in LIMIT_OPTIONS.values():
            fields["limits"][field] = value
        else:
            fields[field] = value
    if command == "graph" and fields.pop("json", False):
        fields["format"] = "json"  # graph's --json is --format json, as in the app
    if fields.get("check_tolerance") is not None:
        fields["check"] = True  # --check-tolerance implies --check, as in the app
    try:
        fields["bindings"] = parse_bindings(positional[1:])
        fields["wrt"] = parse_names(fields.get("wrt"))
    except UsageProblem:
        return None
    return Invocation(command=command, formula=positional[0], **fields)
