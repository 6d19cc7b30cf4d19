"""The REPL session: seeds replayed line by line, commands, failures that keep state, JSON mode.

Sessions run through ``run_script`` (the piped-input path) with output captured
in StringIO; the prompt_toolkit path is in ``test_repl_prompt.py`` and the real
terminal in ``test_repl_pty.py``.
"""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gradcalc.cli.repl import Session, run_script
from gradcalc.limits import Limits

NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?")


def replay(text: str, **options) -> tuple[int, str, str, Session]:
    out, err = io.StringIO(), io.StringIO()
    session = Session(stdout=out, stderr=err, script=True, **options)
    code = run_script(io.StringIO(text), session)
    return code, out.getvalue(), err.getvalue(), session


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def first_number(text: str) -> float:
    match = NUMBER.search(text)
    assert match, text
    return float(match.group(0))


SEED_000 = """\
a = 2
b = 6
P = 3*a**3 - b**2
P
P.backward()
a.grad
b.grad
Q = -3*a**3 + b**2
Q
Q.backward()
a.grad
b.grad
zero_grad()
P = 3*a**3 - b**2
P.backward()
a.grad
b.grad
"""


def test_seed_000_accumulates_line_by_line_like_pytorch():
    code, out, err, _ = replay(SEED_000)
    assert (code, err) == (0, "")
    shown = out.splitlines()
    assert [first_number(line) for line in shown] == [-12, 36, -12, 12, 0, 0, 36, -12]
    assert "tensor(" in shown[0] and "grad_fn=<SubBackward0>" in shown[0]


def test_seed_000_values_in_json_mode():
    code, out, _, _ = replay(":json\n" + SEED_000)
    assert code == 0
    values = [payload["value"] for payload in json_lines(out) if "value" in payload]
    assert values == [-12.0, 36.0, -12.0, 12.0, 0.0, 0.0, 36.0, -12.0]


SEED_002 = """\
x = 5
z = 3
r1 = x*x + z + log(z)
r2 = r1 + sqrt(x)
r3 = 100*r1 + log(r2)
y = r1 + r2 + r3
y.backward()
x.grad
z.grad
r1.grad
"""


def seed_002_expected() -> tuple[float, float]:
    x, z = 5.0, 3.0
    r1 = x * x + z + math.log(z)
    r2 = r1 + math.sqrt(x)
    dy_dr2 = 1 + 1 / r2
    dy_dr1 = 1 + dy_dr2 + 100
    return dy_dr1 * 2 * x + dy_dr2 * 0.5 / math.sqrt(x), dy_dr1 * (1 + 1 / z)


def test_seed_002_gradients_through_intermediates():
    code, out, err, _ = replay(SEED_002)
    assert (code, err) == (0, "")
    x_grad, z_grad = out.splitlines()  # r1.grad is None, which shows nothing (as in Python)
    expected_x, expected_z = seed_002_expected()
    assert first_number(x_grad) == pytest.approx(expected_x, rel=1e-4)
    assert first_number(z_grad) == pytest.approx(expected_z, rel=1e-4)


def test_seed_002_in_float32_prints_the_seeds_tensors():
    code, out, _, _ = replay(SEED_002, dtype="float32")
    assert code == 0
    assert out.splitlines()[:2] == ["tensor(1020.5499)", "tensor(136.0426)"]


def test_seed_002_exercise_r2_backward():
    text = SEED_002.replace("y.backward()", "r2.backward()")
    code, out, _, _ = replay(text)
    assert code == 0
    x_grad, z_grad = (first_number(line) for line in out.splitlines()[:2])
    assert x_grad == pytest.approx(2 * 5 + 0.5 / math.sqrt(5), rel=1e-4)
    assert z_grad == pytest.approx(1 + 1 / 3, rel=1e-4)  # printed to 4 decimals, as PyTorch


def test_blocks_define_functions_and_loops():
    text = "def f(x):\n    y = x * x\n    return y + 1\n\nf(3)\n"
    text += "s = 0\nfor i in range(4):\n    s = s + i\n\ns\n"
    code, out, err, _ = replay(text)
    assert (code, err) == (0, "")
    assert [first_number(line) for line in out.splitlines()] == [10, 6]


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("a = a + nope", "NameError"),
        ("a = 3 *", "ParseError"),
        ("a = [1, 2] + [1, 2, 3]", "ShapeError"),
        ("a = a(2)", "TypeError"),
        ("a = log(]", "ParseError"),
    ],
)
def test_a_failed_assignment_changes_nothing(line, kind):
    code, out, err, _ = replay(f"a = 2\n{line}\na\n")
    assert code == 1
    assert first_number(out) == 2
    assert kind in err
    assert "^" in err


def test_errors_in_piped_input_name_the_input_line():
    code, _, err, _ = replay("a = 2\n\nb = a +* 3\n")
    assert code == 1
    assert "line 3" in err
    assert "b = a +* 3" in err
    shown = err.splitlines()
    source_row = next(i for i, line in enumerate(shown) if "b = a +*" in line)
    assert shown[source_row + 1].strip() == "^"
    assert shown[source_row + 1].index("^") == shown[source_row].index("*")


def test_every_line_runs_even_after_a_failure():
    code, out, _, session = replay("nope\na = 1\na\n")
    assert code == 1 and session.failures == 1
    assert first_number(out) == 1


def test_loop_limit_is_an_error_and_keeps_names():
    code, out, err, _ = replay(
        "x = 1\nwhile True:\n    x = x + 1\n\nx\n", limits=Limits(max_iterations=100)
    )
    assert code == 1
    assert "LimitError" in err
    assert first_number(out) == 1


def test_loop_limit_counts_per_entry_not_per_session():
    loop = "for i in range(30):\n    s = s + 1\n\n"
    code, out, err, _ = replay("s = 0\n" + loop + loop + "s\n", limits=Limits(max_iterations=50))
    assert (code, err) == (0, "")
    assert first_number(out) == 60


def test_grad_command_is_fresh_and_leaves_stored_grads_alone():
    text = "a = 2\nb = 6\n:grad 3*a**3 - b**2\na.grad\n"
    text += "P = 3*a**3 - b**2\n:grad P\nP.backward()\na.grad\n"
    code, out, err, _ = replay(text)
    assert (code, err) == (0, ""), err
    assert "36" in out and "-12" in out
    shown = out.splitlines()
    assert first_number(shown[-1]) == 36  # the graph of P survived :grad P
    assert not any(line.startswith("tensor(") for line in shown[:-1])  # a.grad was None


def test_grad_command_json_reports_every_variable_including_intermediates():
    text = SEED_002.split("y.backward()")[0] + ":json\n:grad y\n"
    code, out, _, _ = replay(text)
    assert code == 0
    payload = json_lines(out)[-1]
    expected_x, expected_z = seed_002_expected()
    assert payload["schema_version"] == 1
    assert payload["gradients"]["x"] == pytest.approx(expected_x)
    assert payload["gradients"]["z"] == pytest.approx(expected_z)
    assert set(payload["gradients"]) >= {"x", "z", "r1", "r2", "r3"}


def test_grad_command_does_not_bind_names():
    code, _, err, _ = replay("a = 2\n:grad q = a * 3\nq\n")
    assert code == 1
    assert "NameError" in err


def test_grad_of_a_vector_is_summed_and_says_so():
    code, out, _, _ = replay("w = [1, 2, 3]\n:json\n:grad w * w\n")
    assert code == 0
    payload = json_lines(out)[-1]
    assert payload["gradients"]["w"] == [2.0, 4.0, 6.0]
    assert payload.get("summed") is True


def test_graph_command_draws_pytorch_node_names():
    code, out, err, _ = replay("a = 2\nb = 6\n:graph 3*a**3 - b**2\n")
    assert (code, err) == (0, "")
    for name in ("SubBackward0", "MulBackward0", "PowBackward0", "AccumulateGrad"):
        assert name in out


def test_graph_command_json_and_the_note_about_earlier_entries():
    code, out, _, _ = replay("a = 2\nP = a * a + 1\n:graph P\n:json\n:graph a * a\n")
    assert code == 0
    assert "earlier entries" in out
    graph = json_lines(out)[-1]["graph"]
    assert [node["op"] for node in graph["nodes"]] == ["MulBackward0", "AccumulateGrad"]
    assert graph["nodes"][1]["grad"] == 4.0


def test_explain_command_steps_and_sums_in_text_and_json():
    code, out, err, _ = replay("a = 2\nb = 6\n:explain 3*a**3 - b**2\n:json\n:explain a*a\n")
    assert (code, err) == (0, "")
    assert "backward pass" in out and "d/da = 36.0 (from #1)" in out
    shown = json_lines(out)[-1]
    assert shown["gradients"] == {"a": 4.0, "b": 0.0}
    assert [part["value"] for part in shown["totals"]["a"]["contributions"]] == [2.0, 2.0]


def test_explain_names_what_earlier_entries_computed():
    code, out, _, _ = replay("a = 2\nb = 6\nP = a*b\n:explain P + a\n")
    assert code == 0
    assert "d/da = 1.0 (from #3) + operations of earlier entries = 7.0" in out
    assert "earlier entries are not shown step by step" in out


def test_vars_lists_names_shapes_values_and_stored_grads():
    code, out, _, _ = replay("a = 2\nw = [1, 2]\nP = a * 3\nP.backward()\n:vars\n")
    assert code == 0
    table = out
    for expected in ("a", "w", "P", "(2,)", "MulBackward0", "3"):
        assert expected in table


def test_vars_json():
    code, out, _, _ = replay("a = 2\nP = a * 3\nP.backward()\n:json\n:vars\n")
    assert code == 0
    listing = json_lines(out)[-1]["vars"]
    assert listing["a"]["value"] == 2.0 and listing["a"]["grad"] == 3.0
    assert listing["P"]["grad_fn"] == "MulBackward0"


def test_reset_forgets_everything():
    code, _, err, _ = replay("a = 2\n:reset\na\n")
    assert code == 1
    assert "NameError" in err


def test_unknown_command_and_missing_arguments_fail():
    for line in (":nope", ":grad", ":load", ":save", ":json maybe"):
        code, _, err, _ = replay(line + "\n")
        assert code == 1, line
        assert err, line


def test_help_lists_every_command():
    code, out, _, _ = replay(":help\n")
    assert code == 0
    for name in (":grad", ":graph", ":vars", ":reset", ":load", ":save", ":json", ":quit"):
        assert name in out


def test_quit_stops_reading():
    code, out, _, _ = replay("a = 1\n:quit\nnope\n")
    assert (code, out) == (0, "")


def test_json_mode_reports_errors_on_stdout():
    code, out, _, _ = replay(":json\na = 2\n\nb = a +* 3\n")
    assert code == 1
    error = json_lines(out)[-1]["error"]
    assert error["type"] == "ParseError" and error["line"] == 4


def test_save_then_load_and_run_with_gradcalc(tmp_path: Path):
    target = tmp_path / "session.gc"
    text = (
        "a = 2\nb = 6\nnope\na\na.grad\ndef f(x):\n    return 3*x**3\n\n"
        f"P = f(a) - b**2\n:save {target}\n"
    )
    code, _, _, _ = replay(text)
    assert code == 1  # the 'nope' line
    saved = target.read_text()
    assert "nope" not in saved and "a.grad" not in saved
    assert saved.startswith("# gradcalc session")

    code, out, err, _ = replay(f":load {target}\nP\nP.backward()\na.grad\n")
    assert (code, err) == (0, "")
    assert [first_number(line) for line in out.splitlines()[1:]] == [-12, 36]

    done = subprocess.run(
        [sys.executable, "-m", "gradcalc", f"@{target}", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["value"] == -12.0
    assert payload["gradients"]["a"] == 36.0


def test_load_reports_a_missing_file(tmp_path: Path):
    code, _, err, _ = replay(f":load {tmp_path / 'absent.gc'}\n")
    assert code == 1
    assert "cannot read" in err


def test_piped_repl_through_the_command_line(tmp_path: Path):
    script = tmp_path / "session.gc"
    script.write_text(SEED_000)
    with script.open() as stdin:
        done = subprocess.run(
            [sys.executable, "-m", "gradcalc", "repl"],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and ">>>" not in done.stdout
    shown = [first_number(line) for line in done.stdout.splitlines()]
    assert shown == [-12, 36, -12, 12, 0, 0, 36, -12]


def test_piped_repl_exits_1_after_running_every_line():
    done = subprocess.run(
        [sys.executable, "-m", "gradcalc", "repl"],
        input="a = 2\na = a +\na\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert first_number(done.stdout) == 2
    assert "ParseError" in done.stderr and "Traceback" not in done.stderr


def test_command_line_limit_options_reach_the_session():
    done = subprocess.run(
        [sys.executable, "-m", "gradcalc", "repl", "--max-iterations", "5"],
        input="s = 0\nfor i in range(10):\n    s = s + 1\n\ns\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "LimitError" in done.stderr
    assert first_number(done.stdout) == 0


def test_shapes_print_like_pytorch_and_are_int_lists_in_json():
    code, out, err, _ = replay("x = ones(2, 3)\nx.shape\n:json\nx.shape\n")
    assert (code, err) == (0, "")
    assert "torch.Size([2, 3])" in out
    payload = json_lines(out)[-1]
    assert (payload["value"], payload["shape"], payload["dtype"]) == ([2, 3], [2], "int64")
