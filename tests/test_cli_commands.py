"""Every command and option through Typer's CliRunner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradcalc.cli.app import app

runner = CliRunner()


def strict(text: str) -> dict:
    def reject(constant: str) -> object:
        raise AssertionError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=reject)


def ok(*args: str, input: str | None = None) -> str:
    result = runner.invoke(app, list(args), input=input)
    assert result.exit_code == 0, result.output
    return result.stdout


def ok_json(*args: str) -> dict:
    return strict(ok(*args, "--json"))


# ---------------------------------------------------------------- grad


def test_grad_is_the_default_command() -> None:
    assert ok("grad", "x*y", "x=2", "y=3", "--json") == ok("x*y", "x=2", "y=3", "--json")


def test_wrt_restricts_and_orders_gradients() -> None:
    out = ok_json("x*y*z", "x=1", "y=2", "z=3", "--wrt", "z,x")
    assert out["gradients"] == {"z": 2.0, "x": 6.0}


def test_wrt_unknown_name_is_a_name_error() -> None:
    result = runner.invoke(app, ["x*y", "x=1", "y=2", "--wrt", "q", "--json"])
    assert result.exit_code == 1
    assert strict(result.stdout)["error"]["type"] == "NameError"


def test_unused_variable_has_zero_gradient_and_is_flagged() -> None:
    out = ok_json("3*a", "a=1", "c=[1, 2]")
    assert out["gradients"] == {"a": 3.0, "c": [0.0, 0.0]}
    assert out["unused"] == ["c"]
    text = ok("3*a", "a=1", "c=[1, 2]")
    assert "c (unused)" in text


def test_of_picks_another_output() -> None:
    out = ok_json("y = x * 3; z = y * y", "x=2", "--of", "y")
    assert (out["value"], out["gradients"], out["output"]) == (6.0, {"x": 3.0}, "y")
    result = runner.invoke(app, ["y = x", "x=1", "--of", "nope", "--json"])
    assert result.exit_code == 1 and strict(result.stdout)["error"]["type"] == "NameError"


def test_grad_output_shape_is_checked() -> None:
    result = runner.invoke(app, ["x * 2", "x=[1, 2]", "--grad-output", "[1, 2, 3]", "--json"])
    assert result.exit_code == 1
    assert strict(result.stdout)["error"]["type"] == "ShapeError"
    out = ok_json("x * 2", "x=[1, 2]", "--grad-output", "[1, 3]")
    assert out["gradients"] == {"x": [2.0, 6.0]}


def test_seed_makes_random_values_repeatable() -> None:
    first = ok_json("sum(randn(3) * a)", "a=1", "--seed", "5")
    again = ok_json("sum(randn(3) * a)", "a=1", "--seed", "5")
    other = ok_json("sum(randn(3) * a)", "a=1", "--seed", "6")
    assert first == again and first["value"] != other["value"]


def test_dtype_float32() -> None:
    out = ok_json("x / 3", "x=1", "--dtype", "float32")
    assert out["dtype"] == "float32" and out["value"] == pytest.approx(1 / 3, rel=1e-6)
    assert out["gradients"]["x"] == pytest.approx(1 / 3, rel=1e-6)


def test_check_reports_agreement_with_finite_differences() -> None:
    out = ok_json("sin(x) * exp(y)", "x=[0.5, 1.5]", "y=0.25", "--check")
    assert set(out["check"]) == {"x", "y"}
    assert all(err < 1e-6 for err in out["check"].values())
    text = ok("sin(x) * exp(y)", "x=0.5", "y=0.25", "--check")
    assert "ok" in text and "MISMATCH" not in text


def test_check_flags_a_kink() -> None:
    result = runner.invoke(app, ["relu(x)", "x=0", "--check", "--json"])
    assert result.exit_code == 1  # a gradient beyond the tolerance fails the command
    out = strict(result.stdout)
    assert out["check"]["x"] > 1e-4 and "--check" in out["note"]
    assert out["check_passed"] is False and out["check_tolerance"] == 1e-4


def test_graph_option_in_text_and_json() -> None:
    text = ok("3*a**3 - b**2", "a=2", "b=6", "--graph")
    assert "SubBackward0" in text and "a (AccumulateGrad)" in text
    out = ok_json("3*a**3 - b**2", "a=2", "b=6", "--graph")
    assert out["graph"]["nodes"][0]["op"] == "SubBackward0"
    assert out["gradients"] == {"a": 36.0, "b": -12.0}


def test_limits_can_be_raised() -> None:
    loop = "s = a\nfor i in range(50):\n    s = s + a\ns"
    low = runner.invoke(app, [loop, "a=1", "--max-iterations", "10", "--json"])
    assert low.exit_code == 1 and strict(low.stdout)["error"]["type"] == "LimitError"
    assert ok_json(loop, "a=1", "--max-iterations", "100")["gradients"] == {"a": 51.0}
    big = runner.invoke(app, ["sum(ones(1000) * a)", "a=1", "--max-elements", "10", "--json"])
    assert big.exit_code == 1 and strict(big.stdout)["error"]["type"] == "LimitError"


def test_binding_values_are_constant_formulas() -> None:
    out = ok_json("sum(x @ w)", "x=arange(6).reshape(2, 3)", "w=ones(3, 1)")
    assert out["value"] == 15.0
    assert out["gradients"]["w"] == [[3.0], [5.0], [7.0]]
    bad = runner.invoke(app, ["x", "x=y + 1", "--json"])
    assert bad.exit_code == 1
    assert strict(bad.stdout)["error"]["type"] == "NameError"


# ---------------------------------------------------------------- eval


def test_eval_prints_value_only() -> None:
    assert ok("eval", "2**10") == "value = 1024.0\n"
    out = ok_json("eval", "x * 2", "x=[1, 2]")
    assert out["value"] == [2.0, 4.0] and out["gradients"] == {}


# ---------------------------------------------------------------- graph


@pytest.mark.parametrize("fmt", ["tree", "json", "dot", "mermaid"])
def test_graph_formats(fmt: str) -> None:
    text = ok("graph", "b = a + a; b * b", "a=3", "--format", fmt)
    if fmt == "json":
        graph = strict(text)
        assert [n["op"] for n in graph["nodes"]][:2] == ["MulBackward0", "AddBackward0"]
        assert graph["nodes"][0]["grad"] == 1.0
        assert len([n for n in graph["nodes"] if n["op"] == "AccumulateGrad"]) == 1
    elif fmt == "dot":
        assert text.startswith("digraph gradcalc {")
    elif fmt == "mermaid":
        assert text.startswith("flowchart TD")
    else:
        assert "MulBackward0" in text and "(shown above)" in text


def test_graph_output_file(tmp_path: Path) -> None:
    target = tmp_path / "g.dot"
    assert ok("graph", "a * 2", "a=1", "-f", "dot", "-o", str(target)) == ""
    assert target.read_text(encoding="utf-8").startswith("digraph")
    svg = tmp_path / "g.svg"
    result = runner.invoke(app, ["graph", "a * 2", "a=1", "-o", str(svg)])
    if shutil.which("dot"):
        assert result.exit_code == 0 and svg.exists()
    else:
        assert result.exit_code == 1 and "Graphviz" in result.stderr


# ---------------------------------------------------------------- jacobian and hessian


def test_jacobian_layout_is_output_then_input() -> None:
    out = ok_json("jacobian", "w @ x", "w=[[1, 2], [3, 4], [5, 6]]", "x=[7, 8]", "--wrt", "x")
    assert out["jacobian"]["x"] == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    squares = ok_json("jacobian", "x**2", "x=[1, 2, 3]")
    assert squares["jacobian"]["x"] == [[2.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 6.0]]
    text = ok("jacobian", "x**2", "x=[1, 2, 3]")
    assert "jacobian" in text


def test_hessian_blocks() -> None:
    out = ok_json("hessian", "x**3 * y", "x=2", "y=3")
    h = out["hessian"]
    assert (h["x"]["x"], h["x"]["y"], h["y"]["x"], h["y"]["y"]) == (36.0, 12.0, 12.0, 0.0)
    vec = ok_json("hessian", "sum(x**4)", "x=[1, 2]")
    assert vec["hessian"]["x"]["x"] == [[12.0, 0.0], [0.0, 48.0]]
    result = runner.invoke(app, ["hessian", "x**2", "x=[1, 2]", "--json"])
    assert result.exit_code == 1 and strict(result.stdout)["error"]["type"] == "ShapeError"


# ---------------------------------------------------------------- functions and repl


def test_functions_lists_the_builtin_table() -> None:
    from gradcalc.builtins import FUNCTIONS

    rows = strict(ok("functions", "--json"))
    assert [row["name"] for row in rows] == list(FUNCTIONS)
    for name in ("exp", "sum", "matmul", "arange", "grad", "detach"):
        assert name in FUNCTIONS
    text = ok("functions")
    assert FUNCTIONS["sum"].signature in text


def test_repl_replays_piped_input() -> None:
    result = runner.invoke(app, ["repl"], input="a = 2\nb = 6\n3*a**3 - b**2\n")
    assert result.exit_code == 0, result.output
    assert "-12" in result.stdout
