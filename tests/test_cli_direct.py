"""The direct reader of plain grad/eval command lines agrees with the Typer app, its source.

``gradcalc.cli.direct`` restates the options of the app's grad and eval
commands (to start without importing Typer); these tests fail the moment the
two differ, and check on a corpus of command lines that the reader builds the
very `Invocation` the app builds, or declines and leaves the line to the app.
"""

from __future__ import annotations

import enum
import inspect
import typing

import pytest
import typer
from typer.testing import CliRunner

from gradcalc.cli import app as app_module
from gradcalc.cli import direct
from gradcalc.cli.inputs import LIMIT_OPTIONS, Invocation

LIMIT_FIELDS = set(LIMIT_OPTIONS.values())

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
            kind = direct.POSITIVE if info.min == 1 else direct.INTEGER
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
        assert field in Invocation.__dataclass_fields__ or field in LIMIT_FIELDS, field
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
