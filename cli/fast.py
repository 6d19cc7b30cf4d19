"""Parse the common one-shot ``grad`` and ``eval`` invocations (and ``batch``) without Typer.

Typer (with the pydantic it loads to coerce parameters) costs more start-up
time than the whole computation of a small formula. :func:`parse` handles
the arguments of ``gradcalc [grad|eval] FORMULA [NAME=VALUE]... [options]`` when
every token is one it fully understands, and returns ``None`` for anything
else (``--help``, other commands, unknown or malformed options, bad
bindings), so the Typer app, the source of truth for usage and its errors,
handles those exactly as it always does. As in the app, a token starting
with a single '-' that is not ``-h`` is an argument (``-a**2``, ``-`` for stdin).
"""

from __future__ import annotations

import re

from gradcalc.cli.inputs import (
    LIMIT_OPTIONS,
    Invocation,
    UsageProblem,
    make_limits,
    parse_bindings,
    parse_names,
)

COMMANDS = frozenset(
    {"grad", "eval", "graph", "jacobian", "hessian", "explain", "batch", "repl", "functions"}
)
FLAGS = {"--json": "json", "--graph": "graph", "--check": "check"}
VALUED = {"--wrt", "--of", "--grad-output", "--seed", "--dtype", *LIMIT_OPTIONS}
EVAL_FLAGS = {"--json": "json"}
EVAL_VALUED = {"--of", "--seed", "--dtype", *LIMIT_OPTIONS}
DTYPES = ("float64", "float32")
_INTEGER = re.compile(r"[+-]?\d+")


def parse(args: list[str]) -> Invocation | None:
    """An ``Invocation`` for a plain ``grad`` or ``eval`` command line, or ``None`` for Typer."""
    command, flag_names, valued = "grad", FLAGS, VALUED
    if args and args[0] == "eval":
        command, flag_names, valued = "eval", EVAL_FLAGS, EVAL_VALUED
        args = args[1:]
    elif args and args[0] == "grad":
        args = args[1:]
    elif not args or args[0] in COMMANDS:
        return None
    positional: list[str] = []
    options: dict[str, str] = {}
    flags: set[str] = set()
    i = 0
    while i < len(args):
        token = args[i]
        if token.startswith("--") or token == "-h":
            name, eq, inline = token.partition("=")
            if name in flag_names and not eq:
                flags.add(flag_names[name])
            elif name in valued:
                if eq:
                    options[name] = inline
                elif i + 1 < len(args):
                    i += 1
                    options[name] = args[i]
                else:
                    return None
            else:
                return None
        else:
            positional.append(token)
        i += 1
    if not positional:
        return None
    try:
        bindings = parse_bindings(positional[1:])
        wrt = parse_names(options.get("--wrt"))
    except UsageProblem:
        return None
    dtype = options.get("--dtype", "float64")
    if dtype not in DTYPES:
        return None
    seed = None
    if "--seed" in options:
        if not _INTEGER.fullmatch(options["--seed"]):
            return None
        seed = int(options["--seed"])
    limits = {}
    for option, field_name in LIMIT_OPTIONS.items():
        if option in options:
            text = options[option]
            if not _INTEGER.fullmatch(text) or int(text) < 1:
                return None
            limits[field_name] = int(text)
    return Invocation(
        command=command,
        formula=positional[0],
        bindings=bindings,
        wrt=wrt,
        of=options.get("--of"),
        grad_output=options.get("--grad-output"),
        json="json" in flags,
        graph="graph" in flags,
        check="check" in flags,
        seed=seed,
        dtype=dtype,
        limits=limits,
    )


BATCH_FLAGS = {"--progress": True, "--no-progress": False}
BATCH_VALUED = {"--jobs", "-j", *LIMIT_OPTIONS}


def parse_batch(args: list[str]) -> dict | None:
    """``run_batch`` keyword arguments for ``gradcalc batch [FILE|-] [options]``, or ``None``.

    The arguments after ``batch``; ``None`` (anything unusual, ``--help``,
    a bad number) leaves them to the Typer app, as :func:`parse` does.
    """
    positional: list[str] = []
    options: dict[str, str] = {}
    progress = None
    i = 0
    while i < len(args):
        token = args[i]
        if token.startswith("-") and token != "-":
            name, eq, inline = token.partition("=")
            if name in BATCH_FLAGS and not eq:
                progress = BATCH_FLAGS[name]
            elif name in BATCH_VALUED and (eq or i + 1 < len(args)):
                if eq and name == "-j":
                    return None
                if not eq:
                    i += 1
                options["--jobs" if name == "-j" else name] = inline if eq else args[i]
            else:
                return None
        else:
            positional.append(token)
        i += 1
    if len(positional) > 1:
        return None
    jobs = options.pop("--jobs", "1")
    if not _INTEGER.fullmatch(jobs) or int(jobs) < 0:
        return None
    limits = {}
    for option, text in options.items():
        if not _INTEGER.fullmatch(text) or int(text) < 1:
            return None
        limits[LIMIT_OPTIONS[option]] = int(text)
    return {
        "source": positional[0] if positional else "-",
        "jobs": int(jobs),
        "progress": progress,
        "limits": make_limits(limits),
    }
