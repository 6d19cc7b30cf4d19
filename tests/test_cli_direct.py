"""The direct reader of plain command lines agrees with the Typer app, its source.

``gradcalc.cli.direct`` restates the options of the app's formula commands,
``functions`` and ``repl`` (to start without importing Typer); these tests fail
the moment the two differ, and check on corpora of command lines that the
reader builds the very `Invocation` the app builds (or calls the very runner
with the very arguments), or declines and leaves the line to the app.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import inspect
import io
import subprocess
import sys
import typing

import pytest
import typer
from typer.testing import CliRunner

from gradcalc.cli import app as app_module
from gradcalc.cli import direct
from gradcalc.cli.inputs import LIMIT_OPTIONS, Invocation

LIMIT_FIELDS = set(LIMIT_OPTIONS.values())
INVOCATION_FIELDS = set(getattr(Invocation, "_fields", None) or Invocation.__dataclass_fields__)

runner = CliRunner()


def declared_options(command: str) -> dict[str, tuple[str, str]]:
    """The app's options of ``command``: long name -> (parameter, kind).

    Names and flags come from the Click command Typer builds; the kind of value
    from the parameter's annotation (bool, an enum, int with its minimum, str).
    """
    click_command = typer.main.get_command(app_module.app).commands[command]
    signature = inspect.signature(click_command.callback).parameters
    found = {}
    for param in click_command.params:
        if param.param_type_name != "option":
            continue
        (long_name,) = [name for name in param.opts if name.startswith("--")]
        annotation, *extras = typing.get_args(signature[param.name].annotation)
        info = next(e for e in extras if isinstance(e, typer.models.OptionInfo))
        base = next((a for a in typing.get_args(annotation) if a is not type(None)), annotation)
        if param.is_flag:
            kind = direct.FLAG
        elif base is app_module.DType:
            kind = direct.DTYPE
        elif isinstance(base, type) and issubclass(base, enum.Enum):
            assert tuple(choice.value for choice in base) == direct.GRAPH_FORMATS, long_name
            kind = direct.GRAPH_FORMAT
        elif base is int:
            kind = {1: direct.POSITIVE, 0: direct.COUNT}.get(info.min, direct.INTEGER)
        elif base is float:
            assert info.min == 0, long_name  # what direct.NUMBER accepts
            kind = direct.NUMBER
        else:
            assert base is str, (long_name, base)
            kind = direct.TEXT
        found[long_name] = (param.name, kind)
    return found


@pytest.mark.parametrize("command", sorted(direct.OPTIONS))
def test_the_option_table_is_the_apps(command: str) -> None:
    declared = declared_options(command)
    assert set(direct.OPTIONS[command]) == set(declared)
    for option, (field, kind) in direct.OPTIONS[command].items():
        assert kind == declared[option][1], option
        assert field == declared[option][0], option
        assert field in INVOCATION_FIELDS or field in LIMIT_FIELDS, field
    assert tuple(choice.value for choice in app_module.DType) == direct.DTYPES


def typer_invocation(args: list[str], monkeypatch: pytest.MonkeyPatch) -> Invocation | None:
    """What the app hands its runner for ``args`` (None: a usage error or help)."""
    seen: list[Invocation] = []

    def capture(invocation: Invocation) -> int:
        seen.append(invocation)
        return 0

    monkeypatch.setattr(app_module, "run_invocation", capture)
    runner.invoke(app_module.app, args)
    return seen[0] if seen else None


CORPUS = [
    ["3*a**3 - b**2", "a=2", "b=6"],
    ["3*a**3 - b**2", "a=2", "b=6", "--json"],
    ["grad", "x*y", "x=2", "y=3", "--wrt", "x"],
    ["grad", "x*y", "--wrt=x,y", "x=2", "y=3"],
    ["--json", "x**2", "x=[1, 2]"],
    ["-a**2", "a=3"],
    ["-", "a=1"],
    ["sum(x*w)", "x=[1,2]", "w=ones(2)", "--grad-output", "2", "--check", "--graph"],
    ["2*x", "x=1", "--seed", "-3"],
    ["2*x", "x=1", "--seed=+4", "--dtype", "float32"],
    ["2*x", "x=1", "--dtype=float16"],
    ["2*x", "x=1", "--max-iterations", "10", "--max-nesting=5"],
    ["2*x", "x=1", "--max-iterations", "0"],
    ["2*x", "x=1", "--max-iterations", "ten"],
    ["2*x", "x=1", "--seed", "1.5"],
    ["eval", "2 + 3"],
    ["eval", "a*b", "a=2", "b=3", "--json", "--of", "a"],
    ["eval", "a", "a=2", "--wrt", "a"],
    ["eval", "a", "a=2", "--check"],
    ["relu(x)", "x=0", "--check-tolerance", "0.5"],
    ["relu(x)", "x=0", "--check-tolerance=1e-3", "--check", "--json"],
    ["relu(x)", "x=0", "--check-tolerance", "-1"],
    ["relu(x)", "x=0", "--check-tolerance", "nan"],
    ["relu(x)", "x=0", "--check-tolerance", "inf"],
    ["x*2", "x=1", "x=5"],
    ["2*x", "bad binding"],
    ["2*x", "1x=2"],
    ["2*x", "x="],
    ["2*x", "x=1", "--wrt", "1a"],
    ["2*x", "x=1", "--wrt"],
    ["2*x", "x=1", "--unknown"],
    ["2*x", "x=1", "--json=yes"],
    ["2*x", "x=1", "-h"],
    ["2*x", "x=1", "--help"],
    ["2*x", "x=1", "--", "--json"],
    ["graph", "x*x", "x=1"],
    ["hessian", "x**3", "x=1"],
    ["hessian", "sum(x**4)", "x=[1, 2]", "--json", "--wrt", "x", "--of", "x"],
    ["jacobian", "softmax(x)", "x=[1, 2, 3]", "--json", "--seed", "2", "--dtype", "float32"],
    ["jacobian", "w @ x", "w=[[1, 2], [3, 4]]", "x=[5, 6]", "--wrt=x", "--max-iterations", "9"],
    ["explain", "3*a**3 - b**2", "a=2", "b=6", "--json"],
    ["explain", "x", "x=1", "--check"],
    ["jacobian", "x", "-o", "f"],
    ["graph", "x*x + log(z)", "x=1", "z=2", "--json"],
    ["graph", "x*x", "x=1", "--format", "dot", "--grad-output", "2", "--of", "x"],
    ["graph", "x*x", "x=1", "--format=mermaid", "--json"],
    ["graph", "x*x", "x=1", "--format", "gif"],
    ["graph", "x*x", "x=1", "--output", "g.dot"],
    ["graph", "x*x", "x=1", "-f", "dot"],
    ["graph", "x*x", "x=1", "--wrt", "x"],
    ["2*x", "x=1", "--of", "--json"],
    [],
]


@pytest.mark.parametrize("args", CORPUS, ids=lambda a: " ".join(a) or "(none)")
def test_direct_reading_builds_the_apps_invocation_or_declines(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = direct.parse(list(args))
    if mine is None:
        return  # the app reads it, as for every other command line
    assert mine == typer_invocation(list(args), monkeypatch)


def test_the_common_lines_are_read_directly() -> None:
    for args in (CORPUS[0], CORPUS[1], CORPUS[3], CORPUS[5], CORPUS[15]):
        assert direct.parse(list(args)) is not None, args
    for command in ("graph", "jacobian", "hessian", "explain"):
        assert direct.parse([command, "x**3", "x=[1, 2]", "--json"]) is not None, command


def test_the_one_shot_command_does_not_import_typer() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from gradcalc.cli.main import run\n"
        "code = run(['3*a**3 - b**2', 'a=2', 'b=6', '--json'])\n"
        "assert code == 0, code\n"
        "assert 'typer' not in sys.modules and 'click' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"gradients": {"a": 36.0, "b": -12.0}' in done.stdout


@pytest.mark.parametrize("formula", ["3*a +", "sin(a + b", "exp(a)) * b"])
def test_a_syntax_error_is_reported_before_numpy_loads(formula: str) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from gradcalc.cli.main import run\n"
        f"code = run([{formula!r}, 'a=1', 'b=2', '--json'])\n"
        "assert code == 1, code\n"
        "assert 'numpy' not in sys.modules, 'numpy was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"type": "ParseError"' in done.stdout


# ---------------------------------------------------------------- functions, repl


@pytest.mark.parametrize("command", sorted(direct.RUNNER_OPTIONS))
def test_the_runner_option_table_is_the_apps(command: str) -> None:
    declared = declared_options(command)
    assert direct.RUNNER_OPTIONS[command] == declared


RUNNER_SIGNATURES = {name: inspect.signature(direct.runner(name)) for name in direct.RUNNERS}
"""(Read before any test replaces a runner by its stand-in.)"""


def bound(runner: str, args: tuple, kwargs: dict) -> direct.Call:
    """A runner's call with every argument named and defaults filled in, for comparing."""
    signature = RUNNER_SIGNATURES[runner]
    arguments = signature.bind(*args, **kwargs)
    arguments.apply_defaults()
    return direct.Call(runner, dict(arguments.arguments))


def typer_call(args: list[str], monkeypatch: pytest.MonkeyPatch) -> direct.Call | None:
    """The runner the app calls for ``args``, with its arguments (None: usage error or help)."""
    seen: list[direct.Call] = []
    for name, module in direct.RUNNERS.items():

        def capture(*a: object, _name: str = name, **kw: object) -> int:
            seen.append(bound(_name, a, kw))
            return 0

        # the app's own reference, or (batch: imported when called) the runner's module's
        owner = app_module if hasattr(app_module, name) else importlib.import_module(module)
        monkeypatch.setattr(owner, name, capture)
    runner.invoke(app_module.app, args)
    return seen[0] if seen else None


def direct_call(args: list[str]) -> direct.Call | None:
    call = direct.parse_call(list(args))
    return None if call is None else bound(call.runner, (), call.arguments)


CALL_CORPUS = [
    ["functions"],
    ["functions", "--json"],
    ["functions", "--json", "--json"],
    ["functions", "--json=1"],
    ["functions", "-h"],
    ["functions", "--help"],
    ["functions", "extra"],
    ["functions", "--seed", "1"],
    ["functions", "--", "--json"],
    ["repl"],
    ["repl", "--seed", "0", "--dtype", "float32"],
    ["repl", "--seed=-7", "--dtype=float64"],
    ["repl", "--seed", "+3", "--seed", "4"],
    ["repl", "--seed", "1.5"],
    ["repl", "--seed"],
    ["repl", "--dtype", "float16"],
    ["repl", "--max-iterations", "1000000000", "--max-graph-nodes", "1000000000"],
    ["repl", "--timeout=5", "--max-memory", "64", "--max-work", "10"],
    ["repl", "--max-nesting", "0"],
    ["repl", "--max-call-depth", "-1"],
    ["repl", "--json"],
    ["repl", "-s", "1"],
    ["repl", "file.gc"],
    ["repl", "--help"],
    ["repl", "-h"],
    ["repl", "--"],
    ["Repl"],
    ["--version"],
    ["batch"],
    ["batch", "-"],
    ["batch", "requests.jsonl", "--jobs", "1"],
    ["batch", "a.jsonl", "b.jsonl", "--jobs=0", "--force-jobs", "--progress"],
    ["batch", "a.jsonl", "--jobs", "-1"],
    ["batch", "a.jsonl", "--jobs", "two"],
    ["batch", "a.jsonl", "-j", "2"],
    ["batch", "a.jsonl", "--no-progress"],
    ["batch", "a.jsonl", "--max-line-bytes", "1MiB", "--max-iterations", "10", "--timeout=3"],
    ["batch", "a.jsonl", "--max-work", "0"],
    ["batch", "a-*.jsonl", "--dask", "local", "--partition-size", "64k", "--output-dir", "out"],
    ["batch", "--jobs", "2", "--", "-weird.jsonl"],
    ["batch", "-weird.jsonl"],
    ["batch", "--seed", "1"],
    ["batch", "--help"],
]


@pytest.mark.parametrize("args", CALL_CORPUS, ids=" ".join)
def test_direct_reading_calls_the_apps_runner_or_declines(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = direct_call(args)
    if mine is None:
        return  # the app reads it
    assert mine == typer_call(list(args), monkeypatch)


def test_functions_repl_and_batch_lines_are_read_directly() -> None:
    for args in (CALL_CORPUS[0], CALL_CORPUS[1], CALL_CORPUS[9], CALL_CORPUS[10], CALL_CORPUS[16]):
        assert direct.parse_call(list(args)) is not None, args
    for args in (CALL_CORPUS[28], CALL_CORPUS[30], CALL_CORPUS[31], CALL_CORPUS[36]):
        assert direct.parse_call(list(args)) is not None, args
    for args in (["functions", "--help"], ["repl", "-h"], ["repl", "x"], ["batch", "-j1"], ["2*x"]):
        assert direct.parse_call(args) is None, args
    assert direct.parse(["functions", "--json"]) is None  # not a formula command


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_bare_gradcalc_starts_the_repl_on_a_terminal_as_the_app_does(
    terminal: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = Terminal if terminal else io.StringIO
    monkeypatch.setattr(sys, "stdin", stream())
    monkeypatch.setattr(sys, "stdout", stream())
    mine = direct_call([])
    seen: list[direct.Call] = []

    def capture(*a: object, **kw: object) -> int:
        seen.append(bound("run_repl", a, kw))
        return 0

    monkeypatch.setattr(app_module, "run_repl", capture)
    with contextlib.suppress(SystemExit):
        app_module.app(args=[], prog_name="gradcalc")
    if terminal:
        assert mine is not None and [mine] == seen
    else:
        assert mine is None and seen == []


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        (["functions", "--json"], "", '"name": "sigmoid"'),
        (["functions"], "", "sigmoid"),
        (["repl", "--seed", "0"], "a = 2\nb = 6\nP = 3*a**3 - b**2\nP.backward()\na.grad\n", "36"),
        (["batch", "--jobs", "1"], '{"id": 7, "formula": "2*x", "vars": {"x": 3}}\n', '"id": 7'),
    ],
)
def test_runner_commands_do_not_import_typer(args: list[str], stdin: str, expected: str) -> None:
    code = (
        "import sys\n"
        "from gradcalc.cli.main import run\n"
        f"code = run({args!r})\n"
        "assert code == 0, code\n"
        "assert 'typer' not in sys.modules and 'click' not in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=stdin, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
