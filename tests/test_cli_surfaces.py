"""The command line's smaller things from issue 13: which gradients are reported by
default, a name bound twice, ``--check`` failing the command beyond
``--check-tolerance``, hints in the words of their surface (command line, batch,
REPL), and ``:load FILE`` errors at the file's line numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_process import gradcalc as gradcalc_process
from test_repl import json_lines, replay
from typer.testing import CliRunner

from gradcalc import api
from gradcalc.cli import direct
from gradcalc.cli.app import app

runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def json_of(*args: str) -> dict:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def batch(*requests: dict) -> list[dict]:
    result = invoke("batch", "-", input="".join(json.dumps(r) + "\n" for r in requests))
    return [json.loads(line) for line in result.stdout.splitlines()]


# ---------------------------------------------------------------- default wrt


def test_gradients_default_to_the_bound_variables_not_assigned_data() -> None:
    out = json_of("t = ones(3, 2); sum(t * x)", "x=2")
    assert out["gradients"] == {"x": 6.0}
    out = json_of("t = ones(3, 2); sum(t * x)", "x=2", "--wrt", "x,t")
    assert out["gradients"] == {"x": 6.0, "t": [[2.0, 2.0]] * 3}
    out = json_of("t = ones(3, 2); sum(t * x)", "x=2", "--wrt", "t")
    assert list(out["gradients"]) == ["t"]


def test_a_program_binding_nothing_reports_what_it_assigns() -> None:
    out = json_of("a = 2; b = 6; 3*a**3 - b**2")
    assert out["gradients"] == {"a": 36.0, "b": -12.0}


def test_jacobian_hessian_and_batch_default_to_bound_variables_too() -> None:
    assert set(api.jacobian("w = ones(2); w * x", {"x": 3}).jacobian) == {"x"}
    assert set(api.hessian("w = ones(2); sum(w * x**2)", {"x": 3}).hessian) == {"x"}
    (line,) = batch({"id": 1, "formula": "t = ones(2); sum(t * x)", "vars": {"x": 3}})
    assert line["gradients"] == {"x": 2.0}


# ---------------------------------------------------------------- a name bound twice


@pytest.mark.parametrize("command", ["grad", "eval", "jacobian", "graph"])
def test_a_name_bound_twice_is_a_usage_error(command: str) -> None:
    result = invoke(command, "x*2", "x=1", "x=2")
    assert result.exit_code == 2 and result.stdout == ""
    assert "x is bound twice (x=1 and x=2); give each variable one value" in result.stderr
    assert direct.parse([command, "x*2", "x=1", "x=2"]) is None  # the app reports it


def test_a_name_bound_twice_through_the_console_script() -> None:
    run = gradcalc_process("3*a**3 - b**2", "a=2", "b=6", "a=3", "--json")
    assert run.returncode == 2 and run.stdout == ""
    assert "a is bound twice (a=2 and a=3)" in run.stderr and "Traceback" not in run.stderr


# ---------------------------------------------------------------- --check


def test_check_exits_1_when_a_gradient_disagrees() -> None:
    result = invoke("relu(x)", "x=0", "--check")
    assert result.exit_code == 1
    assert "MISMATCH" in result.stdout and "beyond 0.0001" in result.stdout
    smooth = invoke("sin(x) * y", "x=0.5", "y=2", "--check")
    assert smooth.exit_code == 0 and "ok" in smooth.stdout


def test_check_tolerance_decides_and_the_json_says_so() -> None:
    result = invoke("relu(x)", "x=0", "--check-tolerance", "0.6", "--json")  # implies --check
    assert result.exit_code == 0
    out = json.loads(result.stdout)
    assert out["check"] == {"x": 0.5} and out["check_passed"] is True
    assert out["check_tolerance"] == 0.6
    result = invoke("relu(x)", "x=0", "--check", "--check-tolerance", "0.4", "--json")
    out = json.loads(result.stdout)
    assert result.exit_code == 1 and out["check_passed"] is False
    assert "beyond 0.4" in out["note"]
    assert direct.parse(["relu(x)", "x=0", "--check-tolerance", "0.4"]).check is True


def test_check_through_the_console_script_and_help() -> None:
    run = gradcalc_process("relu(x)", "x=0", "--check", "--json")
    assert run.returncode == 1 and json.loads(run.stdout)["check_passed"] is False
    run = gradcalc_process("x**2", "x=3", "--check", "--json")
    assert run.returncode == 0 and json.loads(run.stdout)["check_passed"] is True
    help_text = " ".join(invoke("grad", "--help").stdout.split())
    assert "--check-tolerance" in help_text and "[default: 1e-4]" in help_text
    assert "exit code 1" in help_text


def test_names_the_formula_defines_are_not_checked_and_do_not_fail() -> None:
    result = invoke("r = x * x; r + 1", "x=3", "--wrt", "x,r", "--check", "--json")
    out = json.loads(result.stdout)
    assert result.exit_code == 0 and out["check"]["r"] is None and out["check_passed"] is True


def test_batch_and_api_take_a_check_tolerance() -> None:
    first, second, third = batch(
        {"id": 1, "formula": "relu(x)", "vars": {"x": 0}, "check": True},
        {"id": 2, "formula": "relu(x)", "vars": {"x": 0}, "check_tolerance": 0.75},
        {"id": 3, "formula": "x", "vars": {"x": 0}, "check_tolerance": -1},
    )
    assert first["check_passed"] is False and second["check_passed"] is True
    assert first["note"].startswith("request 'check': gradient disagrees")
    assert third["error"]["type"] == "ValueError" and "check_tolerance" in third["error"]["message"]
    result = api.evaluate("x**3", {"x": 2}, check=True, check_tolerance=1e-9)
    assert result.check_passed is True and result.check_tolerance == 1e-9
    assert api.evaluate("x**3", {"x": 2}).check_passed is None


# ---------------------------------------------------------------- hints name their surface


def test_an_undefined_name_is_hinted_in_the_words_of_each_surface() -> None:
    result = invoke("x * y", "x=2")
    assert "bind it on the command line: y=2" in result.stderr
    (line,) = batch({"id": 1, "formula": "x * y", "vars": {"x": 2}})
    assert line["error"]["hint"].startswith('add it to the request\'s vars ("vars": {"y": 2})')
    _, _, err, _ = replay("x = 2\nx * y\n")
    assert "hint: assign it first: y = 2" in err and "command line" not in err


def test_batch_errors_name_request_keys_not_options() -> None:
    lines = batch(
        {"id": 1, "formula": "x*2", "vars": {"x": 2}, "wrt": ["q"]},
        {"id": 2, "formula": "x*2", "vars": {"x": [1, 2]}, "grad_output": [1, 2, 3]},
        {"id": 3, "formula": "x*2", "vars": {"x": 2}, "of": "z"},
    )
    messages = [line["error"]["message"] for line in lines]
    assert messages[0] == (
        "input line 1: request 'wrt' names 'q', which is neither bound nor defined by the formula"
    )
    assert "request 'grad_output' has shape (3,)" in messages[1]
    assert "request 'of' names 'z'" in messages[2]
    assert all("--" not in json.dumps(line) for line in lines)
    assert "--wrt names 'q'" in invoke("x*2", "x=2", "--wrt", "q").stderr


# ---------------------------------------------------------------- :load FILE


def test_load_reports_errors_at_the_files_lines_and_names_it(tmp_path: Path) -> None:
    session_file = tmp_path / "session.gc"
    session_file.write_text("a = 2\nb = 3\n\nc = a * q\nd = 1\n")
    code, _, err, session = replay(f"x = 1\ny = 2\n:load {session_file}\n")
    assert code == 1
    assert f"NameError: 'q' is not defined ({session_file}, line 4, column 9)" in " ".join(
        err.split()
    )
    assert "c = a * q" in err and "x" in session.names and "a" not in session.names
    code, out, _, _ = replay(f"x = 1\n:json\n:load {session_file}\n")
    error = json_lines(out)[-1]["error"]
    assert (error["line"], error["column"], error["file"]) == (4, 9, str(session_file))


def test_errors_in_piped_input_still_name_the_input_line() -> None:
    _, _, err, _ = replay("x = 1\ny = 2\n\nz = x * q\n")
    assert "(line 4, column 9)" in err
