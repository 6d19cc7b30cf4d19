"""``gradcalc diff`` on the command line and ``:diff`` in the REPL: text, JSON, errors,
exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from gradcalc.cli import direct
from gradcalc.cli.main import run
from gradcalc.cli.repl import Session, run_script


def diff(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = run(["diff", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_text_output(capsys):
    assert diff(capsys, "3*a**3 - b**2") == (0, "d/da = 9*a**2\nd/db = -2*b\n", "")


def test_json_output_is_the_issues_shape(capsys):
    code, out, _ = diff(capsys, "3*a**3 - b**2", "--json")
    assert code == 0
    assert json.loads(out) == {"schema_version": 1, "derivatives": {"a": "9*a**2", "b": "-2*b"}}


def test_wrt_and_point_with_a_note(capsys):
    code, out, _ = diff(capsys, "a**2 if a > 0 else -a*b", "a=-2", "b=3", "--wrt", "a")
    assert code == 0
    assert out.splitlines()[0] == "d/da = -b"
    assert out.splitlines()[1].startswith("note: The derivative depends on the point")
    code, out, _ = diff(capsys, "a**2 if a > 0 else -a*b", "a=-2", "b=3", "--json")
    payload = json.loads(out)
    assert payload["derivatives"] == {"a": "-b", "b": "-a"} and payload["notes"]


def test_long_derivatives_print_named_intermediates(capsys):
    formula = "x = a\nfor i in range(5):\n    x = sin(x)*exp(x)\nx"
    code, out, _ = diff(capsys, formula)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("t1 = ") and lines[-1].startswith("d/da = ")
    code, out, _ = diff(capsys, formula, "--json")
    payload = json.loads(out)
    assert payload["derivatives"]["a"].startswith("t1 = ")
    assert "t1" in payload["intermediates"]
    # the derivative's program runs as it is
    assert run(["eval", payload["derivatives"]["a"], "a=0.4", "--json"]) == 0


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        (["relu(a)"], "ValueError"),
        (["sum(x)", "x=[1, 2]"], "ValueError"),
        (["a +"], "ParseError"),
        (["a*b", "--wrt", "z"], "NameError"),
    ],
)
def test_formula_errors_exit_1(capsys, args, kind):
    code, out, err = diff(capsys, *args)
    assert code == 1 and out == "" and err.startswith(f"{kind}: ") and "Traceback" not in err
    code, out, _ = diff(capsys, *args, "--json")
    assert code == 1 and json.loads(out)["error"]["type"] == kind


def test_usage_errors_exit_2(capsys):
    code, _, err = diff(capsys, "a*b", "--simplify", "maxima")
    assert code == 2 and "--simplify takes gradcalc or sympy" in err
    assert run(["diff"]) == 2


def test_sympy_missing_is_a_clear_error(capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sympy" else real(name, *a)
    )
    code, _, err = diff(capsys, "a*b", "--simplify", "sympy")
    assert code == 2 and "needs SymPy" in err and "gradcalc[sympy]" in err
    from gradcalc import api

    with pytest.raises(api.FormulaValueError, match="needs SymPy"):
        api.derivatives("a*b", simplify="sympy")


def test_diff_is_read_directly():
    invocation = direct.parse(["diff", "a*b", "a=1", "--wrt", "a", "--json"])
    assert invocation is not None and invocation.command == "diff" and invocation.wrt == ["a"]


def test_json_diff_imports_neither_typer_nor_rich_nor_sympy():
    code = (
        "import sys\n"
        "from gradcalc.cli.main import run\n"
        "assert run(['diff', '3*a**3 - b**2', '--json']) == 0\n"
        "assert not {'typer', 'click', 'rich', 'sympy'} & set(sys.modules), sys.modules.keys()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"derivatives": {"a": "9*a**2", "b": "-2*b"}' in done.stdout


def replay(text: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    session = Session(stdout=out, stderr=err, script=True)
    code = run_script(io.StringIO(text), session)
    return code, out.getvalue(), err.getvalue()


def test_repl_diff_against_the_sessions_variables():
    _, out, _ = replay("a = 2\nb = 3\n:diff 3*a**3 - b**2\n:diff a*b b\n")
    assert "d/da = 9*a**2" in out and "d/db = -2*b" in out
    assert out.rstrip().endswith("d/db = a")


def test_repl_diff_inlines_functions_and_leaves_names_alone():
    _, out, _ = replay("a = 2\ndef f(x):\n    return x*exp(x)\n\n:diff f(a)\na\n")
    assert "d/da = exp(a)*(a + 1)" in out
    assert out.rstrip().endswith("tensor(2., dtype=torch.float64, requires_grad=True)")


def test_repl_diff_through_an_earlier_entry_keeps_its_graph():
    _, out, _ = replay("a = 2\ny = a*a\n:diff y*a\ny.backward()\na.grad\n")
    assert "d/da = 3*a**2" in out
    assert "y came from earlier entries" in out
    assert out.rstrip().endswith("tensor(4., dtype=torch.float64)"), out  # y's graph intact


def test_repl_diff_json_and_errors():
    _, out, _ = replay(":json on\na = 2\n:diff a**2\n:diff\n:diff relu(a)\n")
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert {"schema_version": 1, "derivatives": {"a": "2*a"}} in lines
    assert any(
        line.get("error", {}).get("message") == "':diff' needs an expression" for line in lines
    )
    relu = [line for line in lines if line.get("derivatives", {}).get("a") == "1"]
    assert relu and relu[0]["notes"]


def test_simplify_sympy_when_installed(capsys):
    pytest.importorskip("sympy")
    code, out, _ = diff(capsys, "(a - 1)/(a + 1) + b*exp(b)", "--simplify", "sympy", "--json")
    assert code == 0
    derivatives = json.loads(out)["derivatives"]
    assert derivatives["a"] == "2/(a + 1)**2"
    assert run(["eval", derivatives["b"], "b=0.5"]) == 0


def test_formula_from_a_file(capsys, tmp_path):
    path = tmp_path / "f.gc"
    path.write_text("def f(x):\n    return x**3\n\nf(a) - b**2\n")
    assert diff(capsys, f"@{path}") == (0, "d/da = 3*a**2\nd/db = -2*b\n", "")
