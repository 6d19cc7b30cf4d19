"""The Typer app: the commands of CONTRACT §2, their options, help and usage errors.

The one argument parser of the command line. Commands are thin: they parse,
build an ``Invocation`` and hand it to ``gradcalc.cli.run``.
``gradcalc FORMULA ...`` means ``gradcalc grad FORMULA ...`` (see
:class:`DefaultToGrad`); bare ``gradcalc`` on a terminal starts the REPL.
Parameter values are converted without pydantic (see :class:`PlainValue`).

No ``from __future__ import annotations`` here: Typer reads every command's
annotations with ``get_type_hints`` to build the app, even for ``--help``, and
evaluating them from strings costs a few milliseconds of each start.
"""

import enum
import functools
import inspect
import sys
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from gradcalc.cli import inputs
from gradcalc.cli.inputs import Invocation, UsageProblem
from gradcalc.cli.run import run_functions, run_invocation, run_program, run_repl
from gradcalc.limits import BATCH_LIMITS


class PlainValue:
    """Converts one parameter's text as its annotation says, as Typer would, without pydantic.

    Typer (0.2x) converts every parameter value with a pydantic ``TypeAdapter``
    built on first use (``param.get_runtime_param().coerce(value, param=, ctx=)``).
    Importing pydantic and building the adapters cost more than a whole one-shot
    run: ``gradcalc '3*a**3 - b**2' a=2 b=6 --json`` took 578 ms with them and
    305 ms without, against 344 ms for ``python -c 'import numpy'`` (medians of
    25 interleaved runs of a ``pip install .`` copy on a heavily loaded 2-core
    machine; lightly loaded: 180 ms, 86 ms, 140 ms). Click has already split
    the arguments; this converts the annotations our commands use (str, int
    with ``min``, enum choices, lists of these, flags) with Typer's messages.
    A parameter of any other type keeps Typer's own conversion.
    """

    SUPPORTED = (str, int, bool)

    def __init__(self, annotation: Any, minimum: float | None) -> None:
        args = typing.get_args(annotation)
        self.item = args[0] if typing.get_origin(annotation) is list and args else annotation
        self.minimum = minimum

    @classmethod
    def handles(cls, annotation: Any) -> bool:
        if typing.get_origin(annotation) is list:
            annotation = (typing.get_args(annotation) or (None,))[0]
        return annotation in cls.SUPPORTED or (
            isinstance(annotation, type) and issubclass(annotation, enum.Enum)
        )

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        many = param.multiple or param.nargs == -1
        if value is None:
            return () if many else None
        if many:
            return [self.one(item, param, ctx) for item in value]
        return self.one(value, param, ctx)

    def one(self, value: Any, param: Any, ctx: Any) -> Any:
        kind = self.item
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            for choice in kind:
                if value is choice or value == choice.value:
                    return choice
            choices = ", ".join(repr(choice.value) for choice in kind)
            raise typer.BadParameter(f"{value!r} is not one of {choices}.", ctx=ctx, param=param)
        if kind is int:
            return self.integer(value, param, ctx)
        if kind is bool:
            if isinstance(value, bool):
                return value
            raise typer.BadParameter(f"{value!r} is not a valid boolean.", ctx=ctx, param=param)
        return str(value)

    def integer(self, value: Any, param: Any, ctx: Any) -> int:
        try:
            number = value if type(value) is int else int(str(value).strip(), 10)
        except ValueError:
            raise typer.BadParameter(
                "Input should be a valid integer, unable to parse string as an integer",
                ctx=ctx,
                param=param,
            ) from None
        if self.minimum is not None and number < self.minimum:
            raise typer.BadParameter(
                f"Input should be greater than or equal to {self.minimum}", ctx=ctx, param=param
            )
        return number


def plain_values(params: Iterable[Any]) -> None:
    """Give each parameter Typer would convert with pydantic a :class:`PlainValue` instead."""
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or not hasattr(param, "get_runtime_param"):
            continue  # a Typer without pydantic conversion: nothing to replace
        info = descriptor.parameter_info
        if PlainValue.handles(descriptor.annotation) and info.max is None and not info.clamp:
            minimum = info.min
            param.get_runtime_param = functools.partial(PlainValue, descriptor.annotation, minimum)


class Command(TyperCommand):
    """A command whose parameter values are converted by :class:`PlainValue`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        plain_values(self.get_params(ctx))
        return super().parse_args(ctx, args)


class DefaultToGrad(TyperGroup):
    """A group whose first argument, when it is not a command or a group option, starts ``grad``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        plain_values(self.get_params(ctx))
        if args and args[0] not in self.commands and args[0] not in self._group_options(ctx):
            args = ["grad", *args]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # in the order they are declared, not sorted

    def _group_options(self, ctx: Any) -> set[str]:
        names = set(ctx.help_option_names)
        for param in self.get_params(ctx):
            names.update(getattr(param, "opts", ()))
            names.update(getattr(param, "secondary_opts", ()))
        return names


class FormulaCommand(Command):
    """A command whose arguments may start with '-' (``gradcalc '-3*a**3 + b**2' a=2 b=6``).

    Before Click parses, known options (with their values) and anything
    spelled like a long option stay in front; every other token, including a
    formula such as ``-a**2``, goes after a ``--`` in its original order.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self.protect_formulas(ctx, args))

    def protect_formulas(self, ctx: Any, args: list[str]) -> list[str]:
        takes_value: set[str] = set()
        known: set[str] = set(ctx.help_option_names)
        for param in self.get_params(ctx):
            names = [*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ())]
            if param.param_type_name != "option":
                continue
            known.update(names)
            if not getattr(param, "is_flag", False):
                takes_value.update(getattr(param, "opts", ()))
        options: list[str] = []
        positional: list[str] = []
        i = 0
        while i < len(args):
            token = args[i]
            name = token.split("=", 1)[0]
            if token == "--":
                positional.extend(args[i + 1 :])
                break
            if name in known or token.startswith("--"):
                options.append(token)
                if token in takes_value and i + 1 < len(args):
                    options.append(args[i + 1])
                    i += 1
            else:
                positional.append(token)
            i += 1
        return [*options, "--", *positional] if positional else options


class DType(enum.StrEnum):
    float64 = "float64"
    float32 = "float32"


class GraphFormat(enum.StrEnum):
    tree = "tree"
    json = "json"
    dot = "dot"
    mermaid = "mermaid"
    svg = "svg"  # pictures, drawn by Graphviz's dot
    png = "png"
    pdf = "pdf"


def _check_bindings(values: list[str] | None) -> list[str] | None:
    try:
        inputs.parse_bindings(values)
    except UsageProblem as exc:
        raise typer.BadParameter(str(exc)) from None
    return values


def _check_names(value: str | None) -> str | None:
    try:
        inputs.parse_names(value)
    except UsageProblem as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


def _version(value: bool) -> None:
    if value:
        from gradcalc import __version__

        sys.stdout.write(f"gradcalc {__version__}\n")
        raise typer.Exit()


# ---------------------------------------------------------------- shared parameters

FORMULA_HELP = "The formula: its text, '-' to read standard input, or @path to read a file."
LIMITS = "Limits"

Formula = Annotated[str, typer.Argument(help=FORMULA_HELP, metavar="FORMULA", show_default=False)]
Bindings = Annotated[
    list[str] | None,
    typer.Argument(
        help="Variables as NAME=VALUE; VALUE is a number, a list or a constant formula "
        "(a=2, x='[1, 2]', w='ones(3, 1)').",
        metavar="NAME=VALUE",
        callback=_check_bindings,
        show_default=False,
    ),
]
Wrt = Annotated[
    str | None,
    typer.Option(
        "--wrt",
        help="Report gradients only for these names (comma-separated); may name "
        "variables the formula assigns.",
        metavar="NAMES",
        callback=_check_names,
        show_default=False,
    ),
]
Of = Annotated[
    str | None,
    typer.Option(
        "--of",
        help="Use this variable as the output instead of the last value.",
        metavar="NAME",
        show_default=False,
    ),
]
GradOutput = Annotated[
    str | None,
    typer.Option(
        "--grad-output",
        help="Seed of the backward pass for a non-scalar output (a vector-Jacobian product); "
        "default: ones, i.e. the gradient of the sum.",
        metavar="VALUE",
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print one strict JSON object.")]
GraphFlag = Annotated[bool, typer.Option("--graph", help="Also show the computation graph.")]
Check = Annotated[
    bool,
    typer.Option(
        "--check",
        help="Compare each gradient with central finite differences; exit code 1 when one "
        "disagrees beyond --check-tolerance.",
    ),
]
CheckTolerance = Annotated[
    float | None,
    typer.Option(
        "--check-tolerance",
        min=0.0,
        help="Largest relative error --check accepts (magnitudes below 1 compared "
        "absolutely); implies --check. [default: 1e-4]",
        metavar="TOL",
        show_default=False,
    ),
]
Seed = Annotated[
    int | None,
    typer.Option("--seed", help="Seed for rand/randn.", metavar="N", show_default=False),
]
DTypeOpt = Annotated[DType, typer.Option("--dtype", help="Floating-point type of the computation.")]


def _limit_option(name: str, help_text: str) -> Any:
    """A --max-* (or --timeout) option: an integer of at least 1, in the Limits panel."""
    return Annotated[
        int | None,
        typer.Option(
            name, min=1, help=help_text, metavar="N", rich_help_panel=LIMITS, show_default=False
        ),
    ]


LIMIT_OPTIONS = {
    option.removeprefix("--").replace("-", "_"): _limit_option(option, help_text)
    for option, help_text in (
        ("--max-iterations", "Raise the limit on loop iterations."),
        ("--max-call-depth", "Raise the limit on nested function calls."),
        ("--max-nesting", "Raise the limit on bracket nesting."),
        ("--max-elements", "Raise the limit on elements of one tensor."),
        ("--max-graph-nodes", "Raise the limit on recorded operations."),
        ("--max-work", "Raise the limit on elements computed in one run."),
        ("--max-memory", "Memory budget of one run, in MiB (default 512)."),
        ("--timeout", "Seconds one run may take (default 60; batch: 10 per request)."),
    )
}
"""The --max-* options by parameter name, in the order help lists them."""


def _with_limits(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` the --max-* options, declared once here, after its own parameters.

    Typer has no way to share a group of options between commands, and every
    command but ``functions`` takes all five. The wrapper's signature (what
    Typer reads) is the command's without its keyword-only ``limits``, plus one
    parameter per option; the command receives the options given as
    ``limits={name: value}``.
    """
    signature = inspect.signature(command)
    own = [param for name, param in signature.parameters.items() if name != "limits"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=option)
        for name, option in LIMIT_OPTIONS.items()
    ]

    @functools.wraps(command)
    def with_limits(**values: Any) -> None:
        given = {name: values.pop(name) for name in LIMIT_OPTIONS}
        command(**values, limits={name: v for name, v in given.items() if v is not None})

    wrapped_signature = signature.replace(parameters=[*own, *added])
    with_limits.__signature__ = wrapped_signature  # type: ignore[attr-defined]
    return with_limits


def _exit_with(code: int) -> None:
    """End the command with a runner's exit code (0 lets Typer exit normally)."""
    if code:
        raise typer.Exit(code=code)


def _run_formula(
    command: str,
    formula: str,
    bindings: list[str] | None,
    dtype: DType,
    limits: dict[str, int],
    wrt: str | None = None,
    **options: Any,
) -> None:
    """Run a one-shot formula command: its parsed options become an `Invocation`."""
    invocation = Invocation(
        command=command,
        formula=formula,
        bindings=inputs.parse_bindings(bindings),
        wrt=inputs.parse_names(wrt),
        dtype=dtype.value,
        limits=limits,
        **options,
    )
    _exit_with(run_invocation(invocation))


# ---------------------------------------------------------------- the app

app = typer.Typer(
    name="gradcalc",
    cls=DefaultToGrad,
    help="Values and gradients of formulas, from the shell.\n\n"
    "gradcalc FORMULA [NAME=VALUE]... is short for gradcalc grad FORMULA [NAME=VALUE]...; "
    "with no arguments on a terminal it starts the interactive session.\n\n"
    "Examples:\n\n"
    "  gradcalc '3*a**3 - b**2' a=2 b=6\n\n"
    "  gradcalc 'sum(x**2)' x='[1, 2, 3]' --json\n\n"
    "  gradcalc graph 'x*x + log(z)' x=5 z=3\n\n"
    "  gradcalc diff '3*a**3 - b**2'",
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def gradcalc_main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Values and gradients of formulas, from the shell."""
    if ctx.invoked_subcommand is not None:
        return
    if sys.stdin.isatty() and sys.stdout.isatty():
        code = run_repl()
        raise typer.Exit(code=code)
    sys.stderr.write(
        "Usage: gradcalc FORMULA [NAME=VALUE]...  (or: gradcalc COMMAND ...)\n"
        "No formula given. Example: gradcalc '3*a**3 - b**2' a=2 b=6\n"
        "Try 'gradcalc --help' for help.\n"
    )
    raise typer.Exit(code=2)


@app.command(cls=FormulaCommand)
@_with_limits
def grad(
    formula: Formula,
    bindings: Bindings = None,
    wrt: Wrt = None,
    of: Of = None,
    grad_output: GradOutput = None,
    json: Json = False,
    graph: GraphFlag = False,
    seed: Seed = None,
    dtype: DTypeOpt = DType.float64,
    check: Check = False,
    check_tolerance: CheckTolerance = None,
    *,
    limits: dict[str, int],
) -> None:
    """Value and gradients of a formula (the default command).

    Every NAME=VALUE is a differentiable variable; the output is the last
    value the formula computes (or --of NAME). A non-scalar output is
    differentiated as its sum unless --grad-output gives the seed.

    Examples:

      gradcalc grad '3*a**3 - b**2' a=2 b=6

      gradcalc grad '3*a**3 - b**2' a='[2, 3]' b='[6, 4]' --json

      gradcalc grad 'r1 = x*x + z + log(z); y = r1 + sqrt(x)' x=5 z=3 --wrt x,r1 --check

      gradcalc grad 'sum(exp(x))' x='[1, 2]' --check-tolerance 1e-6

    Gradients are reported for the NAME=VALUE variables (or, with none, for the
    variables the formula assigns); --wrt names others, intermediates included.
    --check exits with code 1 when a gradient disagrees with finite differences.
    """
    _run_formula(
        "grad",
        formula,
        bindings,
        dtype,
        limits,
        wrt,
        of=of,
        grad_output=grad_output,
        json=json,
        graph=graph,
        check=check or check_tolerance is not None,
        check_tolerance=check_tolerance,
        seed=seed,
    )


@app.command("eval", cls=FormulaCommand)
@_with_limits
def eval_(
    formula: Formula,
    bindings: Bindings = None,
    of: Of = None,
    json: Json = False,
    seed: Seed = None,
    dtype: DTypeOpt = DType.float64,
    *,
    limits: dict[str, int],
) -> None:
    """The value of a formula, without gradients.

    Examples:

      gradcalc eval '2**10'

      gradcalc eval 'arange(6).reshape(2, 3) @ w' w='ones(3, 1)'

      gradcalc eval 'randn(3)' --seed 0 --json
    """
    _run_formula("eval", formula, bindings, dtype, limits, of=of, json=json, seed=seed)


@app.command("graph", cls=FormulaCommand)
@_with_limits
def graph_(
    formula: Formula,
    bindings: Bindings = None,
    of: Of = None,
    grad_output: GradOutput = None,
    format: Annotated[
        GraphFormat,
        typer.Option(
            "--format",
            "-f",
            help="How to write the graph: a tree, JSON, DOT or Mermaid text, or a picture "
            "(svg, png, pdf; drawn by Graphviz's 'dot').",
        ),
    ] = GraphFormat.tree,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Write to this file; .svg, .png or .pdf render DOT with Graphviz's 'dot'; "
            ".dot, .mmd and .json choose that format.",
            metavar="PATH",
            show_default=False,
        ),
    ] = None,
    json: Annotated[
        bool, typer.Option("--json", help="Same as --format json (strict JSON).")
    ] = False,
    seed: Seed = None,
    dtype: DTypeOpt = DType.float64,
    *,
    limits: dict[str, int],
) -> None:
    """The computation graph, from the output down to the variables.

    Each node is a backward function with PyTorch's name (MulBackward0,
    AccumulateGrad for a variable) with its value and gradient.

    Examples:

      gradcalc graph '3*a**3 - b**2' a=2 b=6

      gradcalc graph 'y = x*x; y + y' x=3 --format mermaid

      gradcalc graph 'sum(tanh(x @ w))' x='ones(2, 3)' w='ones(3, 1)' -o graph.svg

      gradcalc graph 'exp(-a) * b' a=1 b=2 -o graph.mmd
    """
    if json:
        format = GraphFormat.json
    _run_formula(
        "graph",
        formula,
        bindings,
        dtype,
        limits,
        of=of,
        grad_output=grad_output,
        seed=seed,
        format=format.value,
        output=output,
    )


@app.command(cls=FormulaCommand)
@_with_limits
def jacobian(
    formula: Formula,
    bindings: Bindings = None,
    wrt: Wrt = None,
    of: Of = None,
    json: Json = False,
    seed: Seed = None,
    dtype: DTypeOpt = DType.float64,
    *,
    limits: dict[str, int],
) -> None:
    """The Jacobian of the output with respect to each variable.

    Its shape is the output's shape followed by the variable's (PyTorch's layout).

    Examples:

      gradcalc jacobian 'x**2' x='[1, 2, 3]'

      gradcalc jacobian 'w @ x' w='[[1, 2], [3, 4]]' x='[5, 6]' --wrt x

      gradcalc jacobian 'softmax(x)' x='[1, 2, 3]' --json
    """
    _run_formula("jacobian", formula, bindings, dtype, limits, wrt, of=of, json=json, seed=seed)


@app.command(cls=FormulaCommand)
@_with_limits
def explain(
    formula: Formula,
    bindings: Bindings = None,
    wrt: Wrt = None,
    of: Of = None,
    json: Json = False,
    seed: Seed = None,
    dtype: DTypeOpt = DType.float64,
    *,
    limits: dict[str, int],
) -> None:
    """The backward pass step by step: how the chain rule builds each gradient.

    First the forward pass (each operation, what it computes, its value), then
    the backward pass in the order it runs: for each operation the gradient
    arriving from above, each input's local derivative, and their product (the
    contribution); finally each variable's gradient as the sum of the
    contributions that reached it.

    Examples:

      gradcalc explain '3*a**3 - b**2' a=2 b=6

      gradcalc explain 'y = x*x; y + y' x=3

      gradcalc explain 'sum(tanh(x @ w))' x='ones(2, 3)' w='ones(3, 1)' --json
    """
    _run_formula("explain", formula, bindings, dtype, limits, wrt, of=of, json=json, seed=seed)


Simplify = Annotated[
    str,
    typer.Option(
        "--simplify",
        help="Simplifier: gradcalc (its own, the default) or sympy (needs the optional "
        "extra gradcalc[sympy]).",
        metavar="gradcalc|sympy",
    ),
]


@app.command(cls=FormulaCommand)
@_with_limits
def diff(
    formula: Formula,
    bindings: Bindings = None,
    wrt: Wrt = None,
    json: Json = False,
    dtype: DTypeOpt = DType.float64,
    simplify: Simplify = "gradcalc",
    *,
    limits: dict[str, int],
) -> None:
    """Each variable's derivative as a formula, simplified (valid gradcalc input).

    Every free name is differentiated unless --wrt picks some. Shared parts of a
    long derivative are printed once as named lines (t1 = ...). Formulas that
    branch on values (if, while, comparisons, relu, %...) need a point
    (NAME=VALUE): the derivative is then that of the branch taken there, and a
    note says so. Vectors: elementwise formulas differentiate elementwise.

    Examples:

      gradcalc diff '3*a**3 - b**2'

      gradcalc diff 'exp(-a)*sin(b)' --wrt a --json

      gradcalc diff 'a**2 if a > 0 else -a' a=2

      gradcalc diff 'x**2*sin(x)' x='[1, 2, 3]' --simplify sympy
    """
    _run_formula("diff", formula, bindings, dtype, limits, wrt, json=json, simplify=simplify)


@app.command(cls=FormulaCommand)
@_with_limits
def hessian(
    formula: Formula,
    bindings: Bindings = None,
    wrt: Wrt = None,
    of: Of = None,
    json: Json = False,
    seed: Seed = None,
    dtype: DTypeOpt = DType.float64,
    *,
    limits: dict[str, int],
) -> None:
    """The Hessian (second derivatives) of a scalar output.

    One block per pair of variables, of shape a.shape + b.shape.

    Examples:

      gradcalc hessian 'x**3 * y' x=2 y=3

      gradcalc hessian 'sum(x**4)' x='[1, 2]'

      gradcalc hessian 'logsumexp(x)' x='[0, 1, 2]' --json
    """
    _run_formula("hessian", formula, bindings, dtype, limits, wrt, of=of, json=json, seed=seed)


@app.command(cls=Command)
@_with_limits
def batch(
    sources: Annotated[
        list[str] | None,
        typer.Argument(
            help="JSON Lines files (or quoted globs), in order; '-' (the default) reads "
            "standard input.",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=0,
            help="Worker processes (0: one per core; at most one per core unless --force-jobs).",
            metavar="N",
        ),
    ] = 1,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bar on standard error (default: when it is a terminal that "
            "standard output is not).",
            show_default=False,
        ),
    ] = None,
    force_jobs: Annotated[
        bool, typer.Option("--force-jobs", help="Use --jobs N even beyond the cores available.")
    ] = False,
    max_line_bytes: Annotated[
        str | None,
        typer.Option(
            "--max-line-bytes",
            help="Longest request line (default 16MiB); a longer one is an error line.",
            metavar="SIZE",
        ),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            "--dask",
            help="Run on a Dask cluster: a scheduler (tcp://HOST:8786) or 'local' "
            "(--jobs worker processes). Needs: pip install 'gradcalc[dask]'.",
            metavar="ADDRESS",
        ),
    ] = None,
    output_dir: Annotated[
        str | None,
        typer.Option(
            "--output-dir",
            help="With --dask: one results file per input partition, written by the workers "
            "(their names sort in input order).",
            metavar="DIR",
        ),
    ] = None,
    partition_size: Annotated[
        str | None,
        typer.Option(
            "--partition-size",
            help="With --dask: largest partition (default: 8MiB, less to keep every worker busy).",
            metavar="SIZE",
        ),
    ] = None,
    *,
    limits: dict[str, int],
) -> None:
    """Many requests, one JSON object per line in and out, in input order.

    Each line is {"id": ..., "formula": ..., "vars": {...}, "wrt": [...],
    "of": ..., "grad_output": ...}; each output line echoes the id. A bad
    line gives an error line and the batch goes on; the exit code is 1 if
    any line failed.

    Examples:

      echo '{"id": 1, "formula": "3*a**3 - b**2", "vars": {"a": 2, "b": 6}}' | gradcalc batch

      gradcalc batch requests.jsonl --jobs 4 > results.jsonl

      gradcalc batch requests.jsonl | jq -c 'select(.error)'

      gradcalc batch 'requests-*.jsonl' --dask local --jobs 4 > results.jsonl

      gradcalc batch 'requests-*.jsonl' --dask tcp://scheduler:8786 --output-dir results/
    """
    from gradcalc.cli import distributed  # (its runner read when called: tests replace it)

    _exit_with(
        distributed.run_batch_files(
            sources or ["-"],
            dask=dask,
            jobs=jobs,
            force_jobs=force_jobs,
            output_dir=output_dir,
            partition_size=partition_size,
            max_line_bytes=max_line_bytes,
            progress=progress,
            limits=inputs.make_limits(limits, BATCH_LIMITS),
        )
    )


@app.command(cls=Command)
@_with_limits
def repl(
    seed: Seed = None,
    dtype: DTypeOpt = DType.float64,
    *,
    limits: dict[str, int],
) -> None:
    """An interactive session: assignments persist, the last value is shown.

    With standard input not a terminal, the lines read are replayed as a session.

    Examples:

      gradcalc repl

      gradcalc repl --seed 0 --dtype float32

      printf 'a = 2\\nb = 6\\nP = 3*a**3 - b**2\\nP.backward()\\na.grad\\n' | gradcalc repl
    """
    _exit_with(run_repl(seed=seed, dtype=dtype.value, limits=inputs.make_limits(limits)))


@app.command("run", cls=Command)
@_with_limits
def run_(
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="The program file, or - for standard input.")
    ],
    seed: Seed = None,
    *,
    limits: dict[str, int],
) -> None:
    """Run a program as `python FILE` would: PyTorch autograd snippets with `import torch`.

    Only what print() writes reaches standard output; the first error stops the program
    with its line and column in FILE (exit code 1). Programs have Python's values and
    built-ins (print, range, len, zip, enumerate...), str.format and f-strings, and import
    torch, torch.nn.functional, torch.autograd and math from gradcalc; never Python's
    own modules, eval or attributes beyond the Python API's.

    Examples:

      gradcalc run tutorial.py

      printf 'import torch\\nprint(torch.ones(2) * 3)\\n' | gradcalc run -

      gradcalc run train.py --seed 0 --max-iterations 100000000
    """
    _exit_with(run_program(file, seed=seed, limits=inputs.make_limits(limits)))


@app.command(cls=Command)
def functions(json: Json = False) -> None:
    """Every built-in function, with its signature and what it does.

    Examples:

      gradcalc functions

      gradcalc functions --json | jq -r '.[].name'
    """
    _exit_with(run_functions(json))
