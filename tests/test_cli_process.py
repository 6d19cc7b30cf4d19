"""The installed entry point as a user runs it: exit codes, stdout vs stderr, pipes, colour."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gradcalc.cli import main as main_module

ENTRY = shutil.which("gradcalc", path=str(Path(sys.executable).parent)) or shutil.which("gradcalc")
GRADCALC = [ENTRY] if ENTRY else [sys.executable, "-m", "gradcalc"]
SEED_JSON = (
    '{"schema_version": 1, "value": -12.0, "shape": [], "dtype": "float64", '
    '"gradients": {"a": 36.0, "b": -12.0}}\n'
)


def gradcalc(*args: str, stdin: str | None = None, env: dict | None = None):
    environment = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | (env or {})
    return subprocess.run(
        [*GRADCALC, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )


def strict(text: str) -> dict:
    def reject(constant: str) -> object:
        raise AssertionError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=reject)


def test_seed_formula_json_exact_and_exit_0() -> None:
    run = gradcalc("3*a**3 - b**2", "a=2", "b=6", "--json")
    assert (run.returncode, run.stdout, run.stderr) == (0, SEED_JSON, "")


def test_python_dash_m_is_the_same_program() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gradcalc", "grad", "3*a**3 - b**2", "a=2", "b=6", "--json"],
        capture_output=True,
        text=True,
    )
    assert (run.returncode, run.stdout) == (0, SEED_JSON)


def test_text_output_has_no_escape_codes_when_piped() -> None:
    run = gradcalc("3*a**3 - b**2", "a=2", "b=6")
    assert run.returncode == 0
    assert "\x1b" not in run.stdout
    assert "36.0" in run.stdout


@pytest.mark.parametrize("formula", ["3*(a", "a +* b", '__import__("os")', "x.__class__"])
def test_bad_formulas_exit_1_without_traceback(formula: str) -> None:
    run = gradcalc(formula, "a=1", "b=2", "x=3")
    assert run.returncode == 1
    assert run.stdout == ""
    assert "Traceback" not in run.stderr and run.stderr.strip()
    as_json = gradcalc(formula, "a=1", "b=2", "x=3", "--json")
    assert as_json.returncode == 1
    error = strict(as_json.stdout)["error"]
    assert error["type"] in {"ParseError", "NameError", "TypeError", "ValueError"}
    assert as_json.stderr == ""


def test_parse_error_shows_the_caret() -> None:
    run = gradcalc("a +* b", "a=1", "b=2")
    lines = run.stderr.splitlines()
    assert lines[0].startswith("ParseError: ")
    source, caret = lines[1], lines[2]
    assert source.strip() == "a +* b"
    assert source[caret.index("^")] == "*"
    error = strict(gradcalc("a +* b", "a=1", "b=2", "--json").stdout)["error"]
    assert (error["line"], error["column"]) == (1, 4)


MALFORMED = [
    "",
    "   ",
    "(" * 5000 + "a" + ")" * 5000,
    "\x01",
    "1e999999 * a",
    "a" + "+a" * 30_000,
    "a.b.c.d",
    "def f(:",
    "while True: a = a + 1",
    "arange(10**12)",
    "λ + a",
    "'string'",
    "a[1000]",
    "[[1, 2], [3]]",
    "f(*a)",
    "import os",
    "lambda: 1",
]


@pytest.mark.parametrize("formula", MALFORMED, ids=range(len(MALFORMED)))
def test_no_input_produces_a_traceback(formula: str) -> None:
    run = gradcalc(formula, "a=1", "--json", "--max-iterations", "1000")
    assert run.returncode in (0, 1), run.stderr
    assert "Traceback" not in run.stderr and run.stderr == ""
    payload = strict(run.stdout)
    assert ("error" in payload) == (run.returncode == 1)
    text = gradcalc(formula, "a=1", "--max-iterations", "1000")
    assert text.returncode == run.returncode
    assert "Traceback" not in text.stderr


def test_nul_bytes_from_stdin_are_a_formula_error() -> None:
    run = gradcalc("-", "a=1", "--json", stdin="a +\x00 1\n")
    assert run.returncode == 1 and run.stderr == ""
    assert strict(run.stdout)["error"]["type"] == "ParseError"


def test_non_finite_results_are_results() -> None:
    run = gradcalc("1/a + log(-a) + 10**10**10", "a=0", "--json")
    assert run.returncode == 0
    payload = strict(run.stdout)
    assert payload["value"] in ("NaN", "Infinity")
    assert "not finite" in payload["note"]


def test_formula_from_stdin_and_from_file(tmp_path: Path) -> None:
    assert gradcalc("-", "a=2", "b=6", "--json", stdin="3*a**3 - b**2\n").stdout == SEED_JSON
    path = tmp_path / "seed.gc"
    path.write_text("3*a**3 - b**2\n", encoding="utf-8")
    assert gradcalc(f"@{path}", "a=2", "b=6", "--json").stdout == SEED_JSON
    missing = gradcalc(f"@{tmp_path / 'nope.gc'}", "a=1")
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_usage_errors_exit_2() -> None:
    for args in (["3*a", "a"], ["3*a", "--nope"], ["graph", "a", "a=1", "--format", "x"], []):
        run = gradcalc(*args, stdin="")
        assert run.returncode == 2, args
        assert run.stdout == "" and "Traceback" not in run.stderr


def test_closed_pipe_ends_quietly() -> None:
    chain = "y = x\nfor i in range(20000):\n    y = y * 1.0001\ny"
    command = [*GRADCALC, "graph", chain, "x=1", "--format", "mermaid"]
    pipeline = " ".join(_quote(part) for part in command) + " | head -1"
    run = subprocess.run(["sh", "-c", pipeline], capture_output=True, text=True, timeout=120)
    assert run.stdout == "flowchart TD\n"
    assert run.stderr == ""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_colour_only_on_a_terminal_and_not_with_no_color() -> None:
    pexpect = pytest.importorskip("pexpect")

    def on_terminal(env: dict[str, str]) -> str:
        child = pexpect.spawn(
            GRADCALC[0],
            [*GRADCALC[1:], "a +* b", "a=1", "b=2"],
            env=env,
            encoding="utf-8",
            timeout=60,
        )
        output = child.read()
        child.close()
        assert child.exitstatus == 1
        return output

    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm-256color"
    assert "\x1b[" in on_terminal(env)
    assert "\x1b" not in on_terminal({**env, "NO_COLOR": "1"})


def test_an_internal_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gradcalc import api

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(api, "evaluate", broken)
    monkeypatch.setattr(api, "evaluate_json", broken)
    assert main_module.run(["exp(a)", "a=1"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "gradcalc: internal error: RuntimeError: simulated bug\n"
    assert main_module.run(["exp(a)", "a=1", "--json"]) == 1
    error = strict(capsys.readouterr().out)["error"]
    assert error["internal"] is True and "simulated bug" in error["message"]


def test_bare_gradcalc_on_a_terminal_starts_the_repl() -> None:
    pexpect = pytest.importorskip("pexpect")
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"TERM": "dumb"}
    child = pexpect.spawn(GRADCALC[0], GRADCALC[1:], env=env, encoding="utf-8", timeout=60)
    try:
        child.send("a = 2\r")
        child.send("3*a**3\r")
        child.expect("24")
    finally:
        child.terminate(force=True)
