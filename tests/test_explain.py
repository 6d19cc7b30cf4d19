"""Explain mode: both passes step by step, and the chain rule's sums adding up."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gradcalc.cli.app import app
from gradcalc.explain import explain
from gradcalc.jsonio import explanation_to_json

runner = CliRunner()

CASES = [
    ("3*a**3 - b**2", {"a": 2, "b": 6}),
    ("y = x*x; z = y + y; z*x", {"x": 1.5}),  # a node used twice, a variable used three times
    ("sin(x)*exp(-x) + x/(1 + x)", {"x": 0.7}),
    ("2 - x + 2**x - (-x)", {"x": 1.25}),  # rsub, rpow, neg
    ("sum(x**2 * w)", {"x": [1.0, -2.0, 3.0], "w": 0.5}),  # broadcast of a 0-d input
    ("mean((x @ w - t)**2)", {"x": "arange(6).reshape(2, 3)", "w": "ones(3, 1)", "t": [[2], [3]]}),
    ("softmax(x)[0] * norm(x)", {"x": [0.5, -1.0, 2.0]}),
    ("sum(a[1:] * b) * a[0] + where(a > 1, a, b).sum()", {"a": [1.0, 2.0], "b": [3.0]}),
    ("relu(x) + abs(x) + maximum(x, y)", {"x": [-1.0, 2.0], "y": [0.5, 0.5]}),
]


@pytest.mark.parametrize(("formula", "bindings"), CASES)
def test_contributions_add_up_to_each_gradient(formula: str, bindings: dict) -> None:
    explained = explain(formula, bindings)
    variables = explained.variables()
    assert set(variables) == set(bindings)
    for name, node in variables.items():
        parts = [value for _, value in explained.contributions_to(node)]
        assert parts, name
        total = np.sum(np.stack([np.asarray(p, dtype=float) for p in parts]), axis=0)
        np.testing.assert_allclose(total, explained.result.gradients[name], rtol=1e-12)


@pytest.mark.parametrize(("formula", "bindings"), CASES)
def test_each_step_is_local_times_upstream(formula: str, bindings: dict) -> None:
    explained = explain(formula, bindings)
    for step in explained.backward:
        assert step.to, step
        for part in step.to:
            if part.local is None:
                assert part.describe
                continue
            expected = np.asarray(part.local) * np.asarray(step.upstream)
            np.testing.assert_allclose(part.contribution, expected, rtol=1e-12, atol=1e-300)


def test_forward_order_lists_inputs_first_and_names_fragments() -> None:
    explained = explain("3*a**3 - b**2", {"a": 2, "b": 6})
    rows = [(s.id, s.op, s.inputs, s.expr, float(s.value)) for s in explained.forward]
    assert rows == [
        (0, "leaf", [], "a", 2.0),
        (1, "PowBackward0", [0], "a**3", 8.0),
        (2, "MulBackward0", [1], "3*a**3", 24.0),
        (3, "leaf", [], "b", 6.0),
        (4, "PowBackward0", [3], "b**2", 36.0),
        (5, "SubBackward0", [2, 4], "3*a**3 - b**2", -12.0),
    ]
    for step in explained.forward:
        assert all(i < step.id for i in step.inputs)


def test_backward_runs_in_the_engines_order_from_the_output() -> None:
    explained = explain("y = x*x; z = y + y; z*x", {"x": 1.5})
    order = [step.node for step in explained.backward]
    assert order[0] == explained.forward[-1].id
    position = {node: i for i, node in enumerate(order)}
    for step in explained.backward:  # a node runs after every consumer sent it its gradient
        for part in step.to:
            if part.input in position:
                assert position[part.input] > position[step.node]


def test_seed_formula_numbers() -> None:
    explained = explain("3*a**3 - b**2", {"a": 2, "b": 6})
    by_node = {step.node: step for step in explained.backward}
    power = by_node[1]
    assert float(power.upstream) == 3.0
    assert float(power.to[0].local) == 12.0  # d(a**3)/da = 3*a**2
    assert float(power.to[0].contribution) == 36.0
    assert [float(v) for _, v in explained.contributions_to(3)] == [-12.0]


def test_json_shape_and_strictness() -> None:
    payload = explanation_to_json(explain("log(x) * y", {"x": 0.0, "y": [1.0, 2.0]}))
    text = json.dumps(payload, allow_nan=False)  # raises on a bare NaN or Infinity
    back = json.loads(text)
    assert back["schema_version"] == 1
    assert {"value", "shape", "dtype", "gradients", "forward", "backward", "totals"} <= set(back)
    assert back["forward"][0] == {
        "id": 0, "op": "leaf", "name": "x", "inputs": [], "expr": "x", "shape": [],
        "value": 0.0,
    }  # fmt: skip
    assert back["totals"]["x"]["contributions"][0]["value"] == "Infinity"
    step = back["backward"][0]
    assert {"node", "op", "expr", "upstream", "to"} <= set(step)


def test_large_tensors_are_written_by_shape_only() -> None:
    payload = explanation_to_json(explain("sum(x*x)", {"x": "ones(2000)"}), max_elements=1000)
    leaf = payload["forward"][0]
    assert leaf["shape"] == [2000] and leaf["value"] is None


def test_no_variables_gives_empty_passes() -> None:
    explained = explain("2 + 3")
    assert explained.forward == [] and explained.backward == []
    assert float(explained.result.value) == 5.0


def test_cli_text_and_json() -> None:
    text = runner.invoke(app, ["explain", "3*a**3 - b**2", "a=2", "b=6"])
    assert text.exit_code == 0, text.output
    out = text.stdout
    for piece in ("forward pass", "backward pass", "PowBackward0", "3*a**3 - b**2", "36.0"):
        assert piece in out
    assert "d/da" in out and "= 36.0" in out
    assert "\x1b[" not in out  # no colour codes when not a terminal
    as_json = runner.invoke(app, ["explain", "x*x", "x=3", "--json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout)["gradients"] == {"x": 6.0}


def test_cli_errors_exit_1_with_json_error() -> None:
    bad = runner.invoke(app, ["explain", "x*", "x=1", "--json"])
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["error"]["type"] == "ParseError"
    unbound = runner.invoke(app, ["explain", "x*y", "x=1"])
    assert unbound.exit_code == 1 and "Traceback" not in unbound.output


def test_explain_help_has_examples() -> None:
    shown = runner.invoke(app, ["explain", "--help"])
    assert shown.exit_code == 0 and "gradcalc explain '3*a**3 - b**2' a=2 b=6" in shown.stdout


@pytest.mark.parametrize(
    ("suffix", "first"), [(".dot", "digraph"), (".mmd", "flowchart"), (".json", "{")]
)
def test_graph_output_suffix_chooses_the_format(tmp_path: Path, suffix: str, first: str) -> None:
    target = tmp_path / f"g{suffix}"
    done = runner.invoke(app, ["graph", "exp(-a)*b", "a=1", "b=2", "-o", str(target)])
    assert done.exit_code == 0, done.output
    text = target.read_text()
    assert text.startswith(first)
    if suffix != ".json":
        assert "value: 0.367879" in text and "grad: 2.0" in text  # micrograd-style labels


def test_graph_json_flag() -> None:
    done = runner.invoke(app, ["graph", "a*b", "a=1", "b=2", "--json"])
    assert done.exit_code == 0
    assert json.loads(done.stdout)["nodes"][0]["op"] == "MulBackward0"


def test_graph_picture_formats_need_a_file_or_graphviz(tmp_path: Path) -> None:
    no_file = runner.invoke(app, ["graph", "a*b", "a=1", "b=2", "--format", "png"])
    assert no_file.exit_code == 2 and "-o NAME.png" in no_file.output
    target = tmp_path / "g.svg"
    no_dot = runner.invoke(
        app, ["graph", "a*b", "a=1", "b=2", "-o", str(target)], env={"PATH": str(tmp_path)}
    )
    assert no_dot.exit_code == 1 and "Graphviz" in no_dot.output and not target.exists()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_graph_svg_to_standard_output_and_png_by_format(tmp_path: Path) -> None:
    shown = runner.invoke(app, ["graph", "a*b", "a=1", "b=2", "--format", "svg"])
    assert shown.exit_code == 0 and "<svg" in shown.stdout
    target = tmp_path / "picture"
    drawn = runner.invoke(app, ["graph", "a*b", "a=1", "b=2", "-f", "png", "-o", str(target)])
    assert drawn.exit_code == 0 and target.read_bytes().startswith(b"\x89PNG")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_graph_picture_renders(tmp_path: Path) -> None:
    target = tmp_path / "g.svg"
    done = runner.invoke(app, ["graph", "a*b + a", "a=1", "b=2", "-o", str(target)])
    assert done.exit_code == 0, done.output
    assert "<svg" in target.read_text()


SEED_TEXT = """\
value = -12.0
forward pass: each operation and its value

 #   node           computes        value
 ────────────────────────────────────────
 0   variable       a               2.0
 1   PowBackward0   a**3            8.0
 2   MulBackward0   3*a**3          24.0
 3   variable       b               6.0
 4   PowBackward0   b**2            36.0
 5   SubBackward0   3*a**3 - b**2   -12.0

backward pass: contribution = local derivative × upstream gradient

 #   node                           upstream   to   local   contribution
 ───────────────────────────────────────────────────────────────────────
 5   SubBackward0 (3*a**3 - b**2)   1.0        #2   1.0     1.0
                                               #4   -1.0    -1.0
 4   PowBackward0 (b**2)            -1.0       #3   12.0    -12.0
 2   MulBackward0 (3*a**3)          1.0        #1   3.0     3.0
 1   PowBackward0 (a**3)            3.0        #0   12.0    36.0

gradients: the contributions reaching each variable, added
d/da = 36.0 (from #1)
d/db = -12.0 (from #4)
"""


def test_seed_formula_text_snapshot() -> None:
    shown = runner.invoke(app, ["explain", "3*a**3 - b**2", "a=2", "b=6"], env={"COLUMNS": "100"})
    assert shown.exit_code == 0
    assert "\n".join(line.rstrip() for line in shown.stdout.split("\n")) == SEED_TEXT


def test_long_passes_show_their_ends_and_count_the_rest() -> None:
    program = "y = x\nfor i in range(300):\n    y = sin(y) + x\ny"
    shown = runner.invoke(app, ["explain", program, "x=0.5"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    out = shown.stdout
    assert out.count("more (--json lists every step)") == 2
    assert "… (" in out and "more) = " in out  # d/dx spells out its first terms only
    assert len(out.splitlines()) < 200
    full = json.loads(runner.invoke(app, ["explain", program, "x=0.5", "--json"]).stdout)
    assert len(full["forward"]) == 601 and len(full["backward"]) == 600  # x, then sin and + x300
