"""The plain one-shot formula command, read without importing Typer.

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
"""

from __future__ import annotations

import re

from gradcalc.cli.inputs import (
    LIMIT_OPTIONS,
    Invocation,
    UsageProblem,
    parse_bindings,
    parse_names,
)

FLAG, TEXT, INTEGER, POSITIVE, DTYPE = "flag", "text", "integer", "positive", "dtype"
NUMBER, GRAPH_FORMAT = "number", "graph format"
"""Kinds of option: a flag; a value taken as text; an integer; an integer >= 1; a dtype;
a finite number >= 0; one of `GRAPH_FORMATS`."""

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
DTYPES = ("float64", "float32")
GRAPH_FORMATS = ("tree", "json", "dot", "mermaid", "svg", "png", "pdf")
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def parse(args: list[str]) -> Invocation | None:
    """The `Invocation` of a plain formula command line (a command of `OPTIONS`), or None
    for the Typer app."""
    command = "grad"
    if args and args[0] in OPTIONS:
        command, args = args[0], args[1:]
    elif args and args[0].isidentifier():
        return None  # another command (or a formula that is a bare name): Typer tells which
    declared = OPTIONS[command]
    positional: list[str] = []
    given: dict[str, str | bool] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if token.startswith("--") or token == "-h":
            name, eq, inline = token.partition("=")
            kind = declared.get(name, (None, None))[1]
            if kind is None or (kind == FLAG and eq):
                return None
            if kind == FLAG:
                given[name] = True
            elif eq:
                given[name] = inline
            elif i + 1 < len(args):
                i += 1
                given[name] = args[i]
            else:
                return None
        else:
            positional.append(token)  # a formula may start with '-': gradcalc '-a**2' a=3
        i += 1
    if not positional:
        return None
    return _invocation(command, positional, given, declared)


def _invocation(
    command: str,
    positional: list[str],
    given: dict[str, str | bool],
    declared: dict[str, tuple[str, str]],
) -> Invocation | None:
    fields: dict = {"limits": {}}
    for option, value in given.items():
        field, kind = declared[option]
        if kind in (INTEGER, POSITIVE):
            if not _INTEGER.fullmatch(str(value)) or (kind == POSITIVE and int(value) < 1):
                return None
            value = int(value)
        elif (kind == DTYPE and value not in DTYPES) or (
            kind == GRAPH_FORMAT and value not in GRAPH_FORMATS
        ):
            return None
        elif kind == NUMBER:
            if not _NUMBER.fullmatch(str(value)):
                return None
            value = float(value)
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
