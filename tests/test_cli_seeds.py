"""Each seed tutorial's computation in one command, in JSON (golden values) and in text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gradcalc.cli.app import app

runner = CliRunner()


def strict(text: str) -> dict:
    def reject(constant: str) -> object:
        raise AssertionError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=reject)


def run_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1
    return strict(result.stdout)


def test_seed_000_golden_json_exact() -> None:
    result = runner.invoke(app, ["3*a**3 - b**2", "a=2", "b=6", "--json"])
    assert result.exit_code == 0
    assert result.stdout == (
        '{"schema_version": 1, "value": -12.0, "shape": [], "dtype": "float64", '
        '"gradients": {"a": 36.0, "b": -12.0}}\n'
    )
    q = run_json("-3*a**3 + b**2", "a=2", "b=6")
    assert (q["value"], q["gradients"]) == (12.0, {"a": -36.0, "b": 12.0})


def test_seed_000_text() -> None:
    result = runner.invoke(app, ["3*a**3 - b**2", "a=2", "b=6"])
    assert result.exit_code == 0
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["value", "=", "-12.0"] in rows
    assert ["a", "()", "36.0"] in rows and ["b", "()", "-12.0"] in rows


def test_seed_001_vector_output_is_summed_or_seeded() -> None:
    out = run_json("3*a**3 - b**2", "a=[2., 3.]", "b=[6., 4.]")
    assert out["value"] == [-12.0, 65.0] and out["shape"] == [2]
    assert out["gradients"] == {"a": [36.0, 81.0], "b": [-12.0, -8.0]}
    assert out["summed"] is True and "sum" in out["note"]
    seeded = run_json("3*a**3 - b**2", "a=[2., 3.]", "b=[6., 4.]", "--grad-output", "[1., 1.]")
    assert seeded["gradients"] == out["gradients"] and "summed" not in seeded
    half = run_json("3*a**3 - b**2", "a=[2., 3.]", "b=[6., 4.]", "--grad-output", "[0.5, 0]")
    assert half["gradients"] == {"a": [18.0, 0.0], "b": [-6.0, -0.0]}


SEED_001_NETWORK = (
    "x = arange(6).reshape(2, 3) * 1.0\n"
    "target = arange(2, 4).reshape(2, 1) * 1.0\n"
    "output = x.matmul(w)\n"
    "loss = ((output - target)**2).mean()\n"
)


def test_seed_001_network_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "net.gc"
    path.write_text(SEED_001_NETWORK, encoding="utf-8")
    out = run_json(f"@{path}", "w=ones(3, 1)", "--wrt", "w")
    assert out["value"] == 41.0 and out["output"] == "loss"
    assert out["gradients"] == {"w": [[27.0], [37.0], [47.0]]}
    step = run_json(SEED_001_NETWORK + "w - 0.01 * grad(loss, w)", "w=ones(3, 1)", "--wrt", "w")
    np.testing.assert_allclose(step["value"], [[0.73], [0.63], [0.53]])


def test_seed_002_intermediates_and_float32() -> None:
    program = "r1 = x*x + z + log(z); r2 = r1 + sqrt(x); r3 = 100*r1 + log(r2); y = r1 + r2 + r3"
    out = run_json(program, "x=5", "z=3")
    assert out["gradients"]["x"] == pytest.approx(1020.5499, abs=1e-4)
    assert out["gradients"]["z"] == pytest.approx(136.0426, abs=1e-4)
    r2 = 25 + 3 + math.log(3) + math.sqrt(5)
    inner = run_json(program, "x=5", "z=3", "--wrt", "x,r1,r2")
    assert list(inner["gradients"]) == ["x", "r1", "r2"]
    assert inner["gradients"]["r1"] == pytest.approx(102 + 1 / r2)
    f32 = run_json("x*x + z + log(z)", "x=5", "z=3", "--dtype", "float32")
    assert f32["dtype"] == "float32"
    assert f32["gradients"] == {"x": 10.0, "z": pytest.approx(1.3333334)}
    assert run_json("x*x", "x=5", "--of", "x")["value"] == 5.0


def test_seed_003_dot_sum_detach() -> None:
    assert run_json("2 * dot(x, x)", "x=arange(4.0)")["gradients"]["x"] == [0.0, 4.0, 8.0, 12.0]
    assert run_json("x.sum()", "x=arange(4.0)")["gradients"]["x"] == [1.0] * 4
    detached = run_json("y = x * x; u = y.detach(); z = u * x; z.sum()", "x=arange(4.0)")
    assert detached["gradients"]["x"] == [0.0, 1.0, 4.0, 9.0]


SEED_003_CONTROL_FLOW = """\
def f(a):
    b = a * 2
    while b.norm() < 10:
        b = b * 2
    if b.sum() > 0:
        c = b
    else:
        c = 100 * b
    return c
d = f(a)
"""


def test_seed_003_control_flow(tmp_path: Path) -> None:
    path = tmp_path / "f.gc"
    path.write_text(SEED_003_CONTROL_FLOW, encoding="utf-8")
    out = run_json(f"@{path}", "a=0.1986")
    assert out["value"] == pytest.approx(12.7104)
    assert out["gradients"]["a"] == pytest.approx(out["value"] / 0.1986)


def test_seed_004_mean_and_dynamic_graph() -> None:
    v = [[-1.0151, 0.9188, -0.2068], [-1.3705, -1.3533, 0.0913], [-0.2909, -0.4593, -1.0358]]
    out = run_json("z = v**2 + 3; z.mean()", f"v={json.dumps(v)}")
    np.testing.assert_allclose(out["gradients"]["v"], [[2 * x / 9 for x in row] for row in v])
    ones = run_json(
        "x**2", "x=[[-0.6308, 0.0987], [0.2058, -0.3468]]", "--grad-output", "ones(2, 2)"
    )
    np.testing.assert_allclose(ones["gradients"]["x"], [[-1.2616, 0.1974], [0.4116, -0.6936]])
    loop = run_json(
        "y = x * 2\nwhile y.norm() < 1000:\n    y = y * 2\ny",
        "x=[0.4628, -0.3619, 1.6416]",
        "--grad-output",
        "[1, 0.1, 0.01]",
    )
    assert loop["gradients"]["x"] == pytest.approx([1024.0, 102.4, 10.24])
