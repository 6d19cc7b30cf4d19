"""Argument handling of the command line: the fast path agrees with Typer, usage errors exit 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gradcalc.cli import app as app_module
from gradcalc.cli import fast, inputs
from gradcalc.cli.app import app
from gradcalc.cli.inputs import Invocation, UsageProblem

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


AGREEING = [
    ["3*a**3 - b**2", "a=2", "b=6"],
    ["grad", "3*a**3 - b**2", "a=2", "b=6", "--json"],
    ["--json", "x*y", "x=[1,2]", "y=3"],
    ["x*y", "x=1", "--wrt", "x,y", "--of", "z", "--check", "--graph"],
    ["x*y", "x=1", "--wrt=x", "--seed=7", "--dtype", "float32"],
    ["x", "x=-1", "--seed", "-3", "--grad-output", "[1, 2]"],
    ["x", "x=1", "x=2", "--max-iterations", "5", "--max-elements=100"],
    ["-", "a=ones(3,1)"],
    ["@formula.txt", "w='ones(3, 1)'", "--json", "--json"],
    ["-3*a**3 + b**2", "a=2", "b=6"],
    ["grad", "-a", "--wrt", "a", "a=1", "--json"],
    ["-x*h", "x=1", "h=2"],
    ["eval", "2**10"],
    ["eval", "x * 2", "x=[1, 2]", "--json", "--of", "x", "--seed=3", "--dtype", "float32"],
    ["eval", "-x", "x=1", "--max-elements", "9"],
]


@pytest.mark.parametrize("args", AGREEING, ids=lambda a: " ".join(a))
def test_fast_path_builds_the_same_invocation_as_typer(
    monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    quick = fast.parse(list(args))
    assert quick is not None
    assert quick == typer_invocation(monkeypatch, args)


DEFERRED = [
    [],
    ["--help"],
    ["grad", "--help"],
    ["eval", "1+1", "--wrt", "x"],
    ["eval", "1+1", "--check"],
    ["eval"],
    ["batch", "-"],
    ["--version"],
    ["x", "--wrt"],  # option without its value
    ["x", "--bogus"],
    ["x", "-h"],
    ["x", "--", "a=1"],
    ["x", "a"],  # binding without '='
    ["x", "1a=2"],
    ["x", "--dtype", "float16"],
    ["x", "--seed", "1.5"],
    ["x", "--max-nesting", "0"],
    ["x", "--json=yes"],
    ["grad"],
    ["--json"],
]


@pytest.mark.parametrize("args", DEFERRED, ids=lambda a: " ".join(a) or "(none)")
def test_fast_path_leaves_everything_else_to_typer(args: list[str]) -> None:
    assert fast.parse(list(args)) is None


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


def test_bindings_keep_order_and_last_value_wins() -> None:
    assert inputs.parse_bindings(["b=1", "a=2", "b=3"]) == {"a": "2", "b": "3"}
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


def test_limits_options_build_limits() -> None:
    inv = fast.parse(["x", "--max-iterations", "7", "--max-call-depth", "9"])
    assert inv is not None
    limits = inv.make_limits()
    assert (limits.max_iterations, limits.max_call_depth) == (7, 9)
    assert Invocation("grad", "x").make_limits() == inputs.make_limits({})


BATCH_AGREEING = [
    [],
    ["-"],
    ["requests.jsonl"],
    ["requests.jsonl", "--jobs", "2"],
    ["--jobs=0", "-", "--no-progress"],
    ["-j", "3", "--progress", "requests.jsonl"],
    ["--max-graph-nodes", "100", "--max-nesting=50", "x.jsonl"],
]


@pytest.mark.parametrize("args", BATCH_AGREEING, ids=lambda a: " ".join(a) or "(none)")
def test_batch_fast_path_agrees_with_typer(
    monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    from gradcalc.cli import batch

    seen: list[dict] = []
    monkeypatch.setattr(
        batch, "run_batch", lambda source, **kw: seen.append({"source": source, **kw}) or 0
    )
    result = runner.invoke(app, ["batch", *args])
    assert result.exit_code == 0, result.output
    assert fast.parse_batch(list(args)) == seen[0]


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["-h"],
        ["a.jsonl", "b.jsonl"],
        ["--jobs", "-1"],
        ["--jobs"],
        ["--jobs", "two"],
        ["-j2"],
        ["--max-nesting", "0"],
        ["--bogus"],
        ["--progress=yes"],
    ],
)
def test_batch_fast_path_leaves_the_rest_to_typer(args: list[str]) -> None:
    assert fast.parse_batch(list(args)) is None
