"""The Typer app: the commands of CONTRACT §2, their options, help and usage errors.

Commands are thin: they parse, build an ``Invocation`` and hand it to
``gradcalc.cli.run``. ``gradcalc FORMULA ...`` means ``gradcalc grad FORMULA ...``
(see :class:`DefaultToGrad`); bare ``gradcalc`` on a terminal starts the REPL.
This module imports Typer, so ``gradcalc.cli.main`` imports it only when the
fast path cannot handle the arguments.

No ``from __future__ import annotations`` here: Typer reads every command's
annotations with ``get_type_hints`` to build the app, even for ``--help``, and
evaluating them from strings costs a few milliseconds of each start.
"""

import enum
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from gradcalc.cli import inputs
from gradcalc.cli.inputs import Invocation, UsageProblem
from gradcalc.cli.run import run_functions, run_invocation, run_repl


class DefaultToGrad(TyperGroup):
    """A group whose first argument, when it is not a command or a group option, starts ``grad``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
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


class FormulaCommand(TyperCommand):
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
        from gradcalc.cli.main import version

        sys.stdout.write(f"gradcalc {version()}\n")
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
    typer.Option("--check", help="Compare each gradient with central finite differences."),
]
Seed = Annotated[
    int | None,
    typer.Option("--seed", help="Seed for rand/randn.", metavar="N", show_default=False),
]
DTypeOpt = Annotated[DType, typer.Option("--dtype", help="Floating-point type of the computation.")]


def _limit_option(name: str, help_text: str) -> Any:
    return Annotated[
        int | None,
        typer.Option(
            name, min=1, help=help_text, metavar="N", rich_help_panel=LIMITS, show_default=False
        ),
    ]


MaxIterations = _limit_option("--max-iterations", "Raise the limit on loop iterations.")
MaxCallDepth = _limit_option("--max-call-depth", "Raise the limit on nested function calls.")
MaxNesting = _limit_option("--max-nesting", "Raise the limit on bracket nesting.")
MaxElements = _limit_option("--max-elements", "Raise the limit on elements of one tensor.")
MaxGraphNodes = _limit_option("--max-graph-nodes", "Raise the limit on recorded operations.")


def _limits(**values: int | None) -> dict[str, int]:
    return {name: value for name, value in values.items() if value is not None}


def _run(inv: Invocation) -> None:
    code = run_invocation(inv)
    if code:
        raise typer.Exit(code=code)


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
    "  gradcalc graph 'x*x + log(z)' x=5 z=3",
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
    max_iterations: MaxIterations = None,
    max_call_depth: MaxCallDepth = None,
    max_nesting: MaxNesting = None,
    max_elements: MaxElements = None,
    max_graph_nodes: MaxGraphNodes = None,
) -> None:
    """Value and gradients of a formula (the default command).

    Every NAME=VALUE is a differentiable variable; the output is the last
    value the formula computes (or --of NAME). A non-scalar output is
    differentiated as its sum unless --grad-output gives the seed.

    Examples:

      gradcalc grad '3*a**3 - b**2' a=2 b=6

      gradcalc grad '3*a**3 - b**2' a='[2, 3]' b='[6, 4]' --json

      gradcalc grad 'r1 = x*x + z + log(z); y = r1 + sqrt(x)' x=5 z=3 --wrt x,r1 --check
    """
    _run(
        Invocation(
            command="grad",
            formula=formula,
            bindings=inputs.parse_bindings(bindings),
            wrt=inputs.parse_names(wrt),
            of=of,
            grad_output=grad_output,
            json=json,
            graph=graph,
            check=check,
            seed=seed,
            dtype=dtype.value,
            limits=_limits(
                max_iterations=max_iterations,
                max_call_depth=max_call_depth,
                max_nesting=max_nesting,
                max_elements=max_elements,
                max_graph_nodes=max_graph_nodes,
            ),
        )
    )


@app.command("eval", cls=FormulaCommand)
def eval_(
    formula: Formula,
    bindings: Bindings = None,
    of: Of = None,
    json: Json = False,
    seed: Seed = None,
    dtype: DTypeOpt = DType.float64,
    max_iterations: MaxIterations = None,
    max_call_depth: MaxCallDepth = None,
    max_nesting: MaxNesting = None,
    max_elements: MaxElements = None,
    max_graph_nodes: MaxGraphNodes = None,
) -> None:
    """The value of a formula, without gradients.

    Examples:

      gradcalc eval '2**10'

      gradcalc eval 'arange(6).reshape(2, 3) @ w' w='ones(3, 1)'

      gradcalc eval 'randn(3)' --seed 0 --json
    """
    _run(
        Invocation(
            command="eval",
            formula=formula,
            bindings=inputs.parse_bindings(bindings),
            of=of,
            json=json,
            seed=seed,
            dtype=dtype.value,
            limits=_limits(
                max_iterations=max_iterations,
                max_call_depth=max_call_depth,
                max_nesting=max_nesting,
                max_elements=max_elements,
                max_graph_nodes=max_graph_nodes,
            ),
        )
    )


@app.command("graph", cls=FormulaCommand)
def graph_(
    formula: Formula,
    bindings: Bindings = None,
    of: Of = None,
    grad_output: GradOutput = None,
    format: Annotated[
        GraphFormat, typer.Option("--format", "-f", help="How to write the graph.")
    ] = GraphFormat.tree,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Write to this file; .svg, .png or .pdf render DOT with Graphviz's 'dot'.",
            metavar="PATH",
            show_default=False,
        ),
    ] = None,
    seed: Seed = None,
    dtype: DTypeOpt = DType.float64,
    max_iterations: MaxIterations = None,
    max_call_depth: MaxCallDepth = None,
    max_nesting: MaxNesting = None,
    max_elements: MaxElements = None,
    max_graph_nodes: MaxGraphNodes = None,
) -> None:
    """The computation graph, from the output down to the variables.

    Each node is a backward function with PyTorch's name (MulBackward0,
    AccumulateGrad for a variable) with its value and gradient.

    Examples:

      gradcalc graph '3*a**3 - b**2' a=2 b=6

      gradcalc graph 'y = x*x; y + y' x=3 --format mermaid

      gradcalc graph 'sum(tanh(x @ w))' x='ones(2, 3)' w='ones(3, 1)' -o graph.svg
    """
    _run(
        Invocation(
            command="graph",
            formula=formula,
            bindings=inputs.parse_bindings(bindings),
            of=of,
            grad_output=grad_output,
            seed=seed,
            dtype=dtype.value,
            format=format.value,
            output=output,
            limits=_limits(
                max_iterations=max_iterations,
                max_call_depth=max_call_depth,
                max_nesting=max_nesting,
                max_elements=max_elements,
                max_graph_nodes=max_graph_nodes,
            ),
        )
    )


@app.command(cls=FormulaCommand)
def jacobian(
    formula: Formula,
    bindings: Bindings = None,
    wrt: Wrt = None,
    of: Of = None,
    json: Json = False,
    seed: Seed = None,
    dtype: DTypeOpt = DType.float64,
    max_iterations: MaxIterations = None,
    max_call_depth: MaxCallDepth = None,
    max_nesting: MaxNesting = None,
    max_elements: MaxElements = None,
    max_graph_nodes: MaxGraphNodes = None,
) -> None:
    """The Jacobian of the output with respect to each variable.

    Its shape is the output's shape followed by the variable's (PyTorch's layout).

    Examples:

      gradcalc jacobian 'x**2' x='[1, 2, 3]'

      gradcalc jacobian 'w @ x' w='[[1, 2], [3, 4]]' x='[5, 6]' --wrt x

      gradcalc jacobian 'softmax(x)' x='[1, 2, 3]' --json
    """
    _run(
        Invocation(
            command="jacobian",
            formula=formula,
            bindings=inputs.parse_bindings(bindings),
            wrt=inputs.parse_names(wrt),
            of=of,
            json=json,
            seed=seed,
            dtype=dtype.value,
            limits=_limits(
                max_iterations=max_iterations,
                max_call_depth=max_call_depth,
                max_nesting=max_nesting,
                max_elements=max_elements,
                max_graph_nodes=max_graph_nodes,
            ),
        )
    )


@app.command(cls=FormulaCommand)
def hessian(
    formula: Formula,
    bindings: Bindings = None,
    wrt: Wrt = None,
    of: Of = None,
    json: Json = False,
    seed: Seed = None,
    dtype: DTypeOpt = DType.float64,
    max_iterations: MaxIterations = None,
    max_call_depth: MaxCallDepth = None,
    max_nesting: MaxNesting = None,
    max_elements: MaxElements = None,
    max_graph_nodes: MaxGraphNodes = None,
) -> None:
    """The Hessian (second derivatives) of a scalar output.

    One block per pair of variables, of shape a.shape + b.shape.

    Examples:

      gradcalc hessian 'x**3 * y' x=2 y=3

      gradcalc hessian 'sum(x**4)' x='[1, 2]'

      gradcalc hessian 'logsumexp(x)' x='[0, 1, 2]' --json
    """
    _run(
        Invocation(
            command="hessian",
            formula=formula,
            bindings=inputs.parse_bindings(bindings),
            wrt=inputs.parse_names(wrt),
            of=of,
            json=json,
            seed=seed,
            dtype=dtype.value,
            limits=_limits(
                max_iterations=max_iterations,
                max_call_depth=max_call_depth,
                max_nesting=max_nesting,
                max_elements=max_elements,
                max_graph_nodes=max_graph_nodes,
            ),
        )
    )


@app.command()
def batch(
    source: Annotated[
        str,
        typer.Argument(help="A JSON Lines file, or '-' for standard input.", metavar="FILE|-"),
    ] = "-",
    jobs: Annotated[
        int,
        typer.Option("--jobs", "-j", min=0, help="Worker processes (0: one per CPU).", metavar="N"),
    ] = 1,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bar on standard error (default: when it is a terminal).",
            show_default=False,
        ),
    ] = None,
    max_iterations: MaxIterations = None,
    max_call_depth: MaxCallDepth = None,
    max_nesting: MaxNesting = None,
    max_elements: MaxElements = None,
    max_graph_nodes: MaxGraphNodes = None,
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
    """
    from gradcalc.cli.batch import run_batch

    code = run_batch(
        source,
        jobs=jobs,
        progress=progress,
        limits=inputs.make_limits(
            _limits(
                max_iterations=max_iterations,
                max_call_depth=max_call_depth,
                max_nesting=max_nesting,
                max_elements=max_elements,
                max_graph_nodes=max_graph_nodes,
            )
        ),
    )
    if code:
        raise typer.Exit(code=code)


@app.command()
def repl(
    seed: Seed = None,
    dtype: DTypeOpt = DType.float64,
    max_iterations: MaxIterations = None,
    max_call_depth: MaxCallDepth = None,
    max_nesting: MaxNesting = None,
    max_elements: MaxElements = None,
    max_graph_nodes: MaxGraphNodes = None,
) -> None:
    """An interactive session: assignments persist, the last value is shown.

    With standard input not a terminal, the lines read are replayed as a session.

    Examples:

      gradcalc repl

      gradcalc repl --seed 0 --dtype float32

      printf 'a = 2\\nb = 6\\nP = 3*a**3 - b**2\\nP.backward()\\na.grad\\n' | gradcalc repl
    """
    limits = _limits(
        max_iterations=max_iterations,
        max_call_depth=max_call_depth,
        max_nesting=max_nesting,
        max_elements=max_elements,
        max_graph_nodes=max_graph_nodes,
    )
    code = run_repl(seed=seed, dtype=dtype.value, limits=inputs.make_limits(limits))
    if code:
        raise typer.Exit(code=code)


@app.command()
def functions(json: Json = False) -> None:
    """Every built-in function, with its signature and what it does.

    Examples:

      gradcalc functions

      gradcalc functions --json | jq -r '.[].name'
    """
    code = run_functions(json)
    if code:
        raise typer.Exit(code=code)
