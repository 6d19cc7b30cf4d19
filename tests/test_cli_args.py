"""Argument handling of the command line (the Typer app, its one parser); usage errors exit 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gradcalc.cli import app as app_module
from gradcalc.cli import inputs
from gradcalc.cli.app import app
from gradcalc.cli.inputs import Invocation, UsageProblem
from gradcalc.limits import BATCH_LIMITS, Limits

runner = CliRunner()


def typer_invocation(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> Invocation | None:
    """The Invocation the Typer app builds for ``args`` (None if Typer rejected them)."""
    seen: list[Invocation] = []
    monkeypatch.setattr(app_module, "run_invocation", lambda inv: seen.append(inv) or 0)
    result = runner.invoke(app, args)
    if result.exit_code != 0:
        return None
    assert len(seen) == 1, result.output
    return seen[0]


PARSED = [
    (["3*a**3 - b**2", "a=2", "b=6"], "grad", "3*a**3 - b**2", {"bindings": {"a": "2", "b": "6"}}),
    (
        ["grad", "3*a**3 - b**2", "a=2", "b=6", "--json"],
        "grad",
        "3*a**3 - b**2",
        {"bindings": {"a": "2", "b": "6"}, "json": True},
    ),
    (
        ["--json", "x*y", "x=[1,2]", "y=3"],
        "grad",
        "x*y",
        {"bindings": {"x": "[1,2]", "y": "3"}, "json": True},
    ),
    (
        ["x*y", "x=1", "--wrt", "x,y", "--of", "z", "--check", "--graph"],
        "grad",
        "x*y",
        {"bindings": {"x": "1"}, "wrt": ["x", "y"], "of": "z", "graph": True, "check": True},
    ),
    (
        ["x*y", "x=1", "--wrt=x", "--seed=7", "--dtype", "float32"],
        "grad",
        "x*y",
        {"bindings": {"x": "1"}, "wrt": ["x"], "seed": 7, "dtype": "float32"},
    ),
    (
        ["x", "x=-1", "--seed", "-3", "--grad-output", "[1, 2]"],
        "grad",
        "x",
        {"bindings": {"x": "-1"}, "grad_output": "[1, 2]", "seed": -3},
    ),
    (
        ["x", "x=1", "y=2", "--max-iterations", "5", "--max-elements=100"],
        "grad",
        "x",
        {"bindings": {"x": "1", "y": "2"}, "limits": {"max_iterations": 5, "max_elements": 100}},
    ),
    (["-", "a=ones(3,1)"], "grad", "-", {"bindings": {"a": "ones(3,1)"}}),
    (
        ["@formula.txt", "w='ones(3, 1)'", "--json", "--json"],
        "grad",
        "@formula.txt",
        {"bindings": {"w": "'ones(3, 1)'"}, "json": True},
    ),
    (
        ["-3*a**3 + b**2", "a=2", "b=6"],
        "grad",
        "-3*a**3 + b**2",
        {"bindings": {"a": "2", "b": "6"}},
    ),
    (
        ["grad", "-a", "--wrt", "a", "a=1", "--json"],
        "grad",
        "-a",
        {"bindings": {"a": "1"}, "wrt": ["a"], "json": True},
    ),
    (["-x*h", "x=1", "h=2"], "grad", "-x*h", {"bindings": {"x": "1", "h": "2"}}),
    (["eval", "2**10"], "eval", "2**10", {}),
    (
        ["eval", "x * 2", "x=[1, 2]", "--json", "--of", "x", "--seed=3", "--dtype", "float32"],
        "eval",
        "x * 2",
        {"bindings": {"x": "[1, 2]"}, "of": "x", "json": True, "seed": 3, "dtype": "float32"},
    ),
    (
        ["eval", "-x", "x=1", "--max-elements", "9"],
        "eval",
        "-x",
        {"bindings": {"x": "1"}, "limits": {"max_elements": 9}},
    ),
    (
        ["graph", "x*x", "x=3", "-f", "mermaid", "--of", "x", "--max-nesting", "7"],
        "graph",
        "x*x",
        {"bindings": {"x": "3"}, "of": "x", "format": "mermaid", "limits": {"max_nesting": 7}},
    ),
    (
        ["jacobian", "x**2", "x=[1, 2]", "--wrt", "x", "--json"],
        "jacobian",
        "x**2",
        {"bindings": {"x": "[1, 2]"}, "wrt": ["x"], "json": True},
    ),
]
"""Command lines, and the Invocation the app builds for each (fields other than the defaults)."""


@pytest.mark.parametrize(
    ("args", "command", "formula", "fields"), PARSED, ids=lambda a: " ".join(a)
)
def test_the_app_builds_the_invocation(
    monkeypatch: pytest.MonkeyPatch, args: list[str], command: str, formula: str, fields: dict
) -> None:
    assert typer_invocation(monkeypatch, args) == Invocation(command, formula, **fields)


@pytest.mark.parametrize(
    "args",
    [
        ["x", "a"],
        ["x", "1a=2"],
        ["x", "--dtype", "float16"],
        ["x", "--seed", "1.5"],
        ["x", "--max-nesting", "0"],
        ["x", "--bogus"],
        ["x", "--wrt"],
        ["x", "--wrt", "a,,1b"],
        ["grad"],
        ["graph", "x", "x=1", "--format", "png"],
        ["batch", "-", "--jobs", "-1"],
        ["x", "x=1", "x=2"],  # a name bound twice
        ["eval", "x", "x=1", "y=0", "x=1"],
        ["x", "x=1", "--check-tolerance", "-0.1"],
    ],
)
def test_usage_errors_exit_2_on_stderr(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_formulas_may_start_with_a_dash_but_long_options_are_checked() -> None:
    result = runner.invoke(app, ["eval", "-h*2", "h=3"])
    assert (result.exit_code, result.stdout) == (0, "value = -6.0\n")
    result = runner.invoke(app, ["eval", "x", "--jsn", "x=1"])
    assert result.exit_code == 2 and "No such option: --jsn" in result.stderr
    result = runner.invoke(app, ["eval", "--", "-x", "x=1"])
    assert (result.exit_code, result.stdout) == (0, "value = -1.0\n")


def test_bare_command_without_a_terminal_is_a_usage_error() -> None:
    result = runner.invoke(app, [])
    assert result.exit_code == 2
    assert "No formula given" in result.stderr


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("gradcalc ")


@pytest.mark.parametrize(
    "command", ["grad", "eval", "graph", "jacobian", "hessian", "batch", "repl", "functions"]
)
def test_every_command_has_help_with_examples(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.stdout
    assert result.stdout.count("gradcalc ") >= 3  # usage line and at least two examples


def test_top_level_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("grad", "eval", "graph", "jacobian", "hessian", "batch", "repl", "functions"):
        assert command in result.stdout


def test_bindings_keep_order_and_a_name_bound_twice_is_refused() -> None:
    assert list(inputs.parse_bindings(["b=1", "a=2"]).items()) == [("b", "1"), ("a", "2")]
    with pytest.raises(UsageProblem, match=r"b is bound twice \(b=1 and b=3\)"):
        inputs.parse_bindings(["b=1", "a=2", "b=3"])
    assert inputs.parse_binding("x=a=b") == ("x", "a=b")
    for bad in ["a", "=2", "1x=2", "a b=1", "a="]:
        with pytest.raises(UsageProblem):
            inputs.parse_binding(bad)


def test_names_accept_commas_and_spaces() -> None:
    assert inputs.parse_names("a,b c") == ["a", "b", "c"]
    assert inputs.parse_names(None) is None
    with pytest.raises(UsageProblem):
        inputs.parse_names(",")


def test_formula_from_file_and_missing_file(tmp_path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("3*a\n", encoding="utf-8")
    assert inputs.read_formula(f"@{path}") == "3*a\n"
    assert inputs.read_formula("a@b") == "a@b"
    with pytest.raises(UsageProblem, match="cannot read"):
        inputs.read_formula(f"@{tmp_path / 'missing.txt'}")


def test_missing_formula_file_exits_2() -> None:
    result = runner.invoke(app, ["grad", "@/nonexistent/formula.txt", "a=1"])
    assert result.exit_code == 2
    assert "cannot read formula file" in result.stderr


def test_limits_options_build_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    inv = typer_invocation(monkeypatch, ["x", "--max-iterations", "7", "--max-call-depth", "9"])
    assert inv is not None
    limits = inv.make_limits()
    assert (limits.max_iterations, limits.max_call_depth) == (7, 9)
    assert Invocation("grad", "x").make_limits() == inputs.make_limits({})


BATCH_PARSED = [
    ([], {}),
    (["-"], {}),
    (["requests.jsonl"], {"source": "requests.jsonl"}),
    (["requests.jsonl", "--jobs", "2"], {"source": "requests.jsonl", "jobs": 2}),
    (["--jobs=0", "-", "--no-progress"], {"jobs": 0, "progress": False}),
    (
        ["-j", "3", "--progress", "requests.jsonl"],
        {"source": "requests.jsonl", "jobs": 3, "progress": True},
    ),
    (
        ["--max-graph-nodes", "100", "--max-nesting=50", "x.jsonl"],
        {"source": "x.jsonl", "limits": Limits(max_graph_nodes=100, max_nesting=50, timeout=10)},
    ),
    (["--timeout", "3", "x.jsonl"], {"source": "x.jsonl", "limits": Limits(timeout=3)}),
    (["--max-line-bytes", "1MiB", "--force-jobs"], {"max_line_bytes": 1 << 20, "force_jobs": True}),
]


@pytest.mark.parametrize(("args", "given"), BATCH_PARSED, ids=lambda a: " ".join(a) or "(none)")
def test_batch_arguments(monkeypatch: pytest.MonkeyPatch, args: list[str], given: dict) -> None:
    from gradcalc.cli import batch

    seen: list[dict] = []
    monkeypatch.setattr(
        batch, "run_batch", lambda source, **kw: seen.append({"source": source, **kw}) or 0
    )
    result = runner.invoke(app, ["batch", *args])
    assert result.exit_code == 0, result.output
    defaults = {"source": "-", "jobs": 1, "progress": None, "limits": BATCH_LIMITS}
    defaults |= {"max_line_bytes": 16 << 20, "force_jobs": False}
    assert seen == [defaults | given]


@pytest.mark.parametrize(
    "args",
    [
        ["a.jsonl", "b.jsonl"],
        ["--jobs", "-1"],
        ["--jobs"],
        ["--jobs", "two"],
        ["--max-nesting", "0"],
        ["--bogus"],
        ["--progress=yes"],
    ],
)
def test_bad_batch_arguments_exit_2(args: list[str]) -> None:
    result = runner.invoke(app, ["batch", *args])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "--dtype", "float16"], "'float16' is not one of 'float64', 'float32'."),
        (["x", "--seed", "1.5"], "Input should be a valid integer"),
        (["x", "--max-nesting", "0"], "Input should be greater than or equal to 1"),
        (["batch", "--jobs", "two"], "Input should be a valid integer"),
        (["graph", "x", "-f", "gif"], "'gif' is not one of 'tree', 'json', 'dot', 'mermaid'"),
    ],
)
def test_value_errors_name_the_option(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "Invalid value for" in result.stderr and message in result.stderr


def test_one_shot_commands_convert_values_without_pydantic() -> None:
    """Typer's pydantic conversion costs more than a one-shot run (see app.PlainValue)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from gradcalc.cli.main import run\n"
        "codes = [run(['3*a**3 - b**2', 'a=2', 'b=6', '--json']),\n"
        "         run(['batch', '--jobs', '1', '--max-nesting', '9', '/dev/null']),\n"
        "         run(['graph', 'x*x', 'x=3', '-f', 'dot', '--seed', '2'])]\n"
        "assert codes == [0, 0, 0], codes\n"
        "print('pydantic' in sys.modules, 'numpy' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["False", "False"]  # a scalar graph needs no NumPy
