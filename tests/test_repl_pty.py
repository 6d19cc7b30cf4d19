"""End to end: the real ``gradcalc repl`` in a pseudo-terminal, typed at like a person would.

Seed 000's accumulation, a multi-line ``def`` with auto-indentation, a failing
line that keeps state, and Ctrl-C during a long loop. Matches only plain text
(NO_COLOR is set; escape sequences between characters are tolerated), with
generous timeouts for a slow CI machine.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

pexpect = pytest.importorskip("pexpect")

TIMEOUT = 60
PROMPT = ">>>"  # prompt_toolkit draws the trailing space as a cursor move
CONTINUATION = r"\.\.\."


@pytest.fixture
def repl(tmp_path):
    env = dict(os.environ)
    env.update(
        TERM="xterm",
        NO_COLOR="1",
        PROMPT_TOOLKIT_NO_CPR="1",
        XDG_STATE_HOME=str(tmp_path / "state"),
        COLUMNS="100",
        LINES="40",
    )
    child = pexpect.spawn(
        sys.executable,
        [
            "-m",
            "gradcalc",
            "repl",
            "--max-iterations",
            "1000000000",
            "--max-graph-nodes",
            "1000000000",
        ],
        env=env,
        encoding="utf-8",
        timeout=TIMEOUT,
        dimensions=(40, 100),
    )
    child.expect_exact(PROMPT)
    yield child
    if child.isalive():
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    child.close()


def enter(child, line: str) -> None:
    child.send(line + "\r")


def leave_at_prompt(child) -> int:
    """Ctrl-D at the next prompt; the REPL's exit code."""
    child.expect_exact(PROMPT)
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


def test_seed_000_blocks_errors_and_ctrl_c_in_a_terminal(repl, tmp_path):
    # Lines that print nothing are typed ahead; each check waits for a result
    # that cannot be an echo of the input (an echo never contains "tensor(").
    # Seed 000: P.backward() then Q.backward() accumulate into a.grad: 36, then 0.
    for line in ("a = 2", "b = 6", "P = 3*a**3 - b**2", "P.backward()", "a.grad"):
        enter(repl, line)
    repl.expect(r"tensor\(36\.")
    for line in ("Q = -3*a**3 + b**2", "Q.backward()", "a.grad"):
        enter(repl, line)
    repl.expect(r"tensor\(0\.")

    # A def over several lines: the body is auto-indented, a blank line ends it.
    enter(repl, "def cube(x):")
    repl.expect(CONTINUATION)
    enter(repl, "y = x*x")
    enter(repl, "return y*x")
    enter(repl, "")
    enter(repl, "cube(3) + 0.5")
    repl.expect(r"tensor\(27\.5")
    repl.send("cub\t")  # Tab completes the user's function name
    time.sleep(1)
    enter(repl, "(2) + 0.5")
    repl.expect(r"tensor\(8\.5")

    # A failing assignment reports the error with a caret and changes nothing.
    enter(repl, "a = a * undefined_name")
    repl.expect("NameError")
    repl.expect_exact("^")
    enter(repl, "a * 10")
    repl.expect(r"tensor\(20\.")

    # Ctrl-C stops a long loop; the session and its names survive.
    # (n is a constant, so the loop records no graph while it waits for Ctrl-C.)
    enter(repl, "n = const(1)")
    enter(repl, "n + 0.25")
    repl.expect(r"tensor\(1\.25")  # the prompt is idle: the loop starts as soon as typed
    enter(repl, "while True: n = n + 1")
    enter(repl, "")
    time.sleep(2)
    repl.sendintr()
    repl.expect("KeyboardInterrupt")
    enter(repl, "n + 100")
    repl.expect(r"tensor\(101\.")

    # Ctrl-D leaves with exit code 0.
    assert leave_at_prompt(repl) == 0
    assert (tmp_path / "state" / "gradcalc" / "history").read_text().count("a.grad") >= 2


LOADED_AFTER_THE_PROMPT = (
    "numpy",
    "rich",
    "typer",
    "click",
    "pygments",
    "gradcalc.api",
    "gradcalc.interpreter",
    "gradcalc.builtins",
    "gradcalc.cli.app",
    "gradcalc.cli.render",
)
"""What the first prompt of ``gradcalc repl`` must not wait for (issue 12: <= 1.5x the start of
``python -c "import numpy"``, which prompt_toolkit alone nearly takes). (Nor pathlib, in an
installed copy; an editable install's import finder loads it.)"""

SNAPSHOT_AT_THE_PROMPT = """
import gc, json, sys
from gradcalc.cli import repl_prompt
from gradcalc.cli.main import main

start = repl_prompt._WarmUp.start

def snapshot(self, app=None):
    first = getattr(self, "_thread", None) is None
    modules = sorted(sys.modules)
    gc_paused = not gc.isenabled()
    start(self, app)
    if first:
        with open(sys.argv[1], "w") as out:
            state = {"modules": modules, "gc_paused": gc_paused, "gc_after": gc.isenabled()}
            json.dump(state, out)

repl_prompt._WarmUp.start = snapshot
main(sys.argv[2:])
"""


@pytest.mark.parametrize("args", [["repl"], []], ids=["repl", "bare"])
def test_the_first_prompt_waits_for_nothing_it_does_not_need(tmp_path, args):
    found = tmp_path / "at-prompt.json"
    env = dict(os.environ, TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="100", LINES="40")
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    child = pexpect.spawn(
        sys.executable,
        ["-c", SNAPSHOT_AT_THE_PROMPT, str(found), *args],
        env=env,
        encoding="utf-8",
        timeout=TIMEOUT,
        dimensions=(40, 100),
    )
    child.expect("names persist")  # the banner, then the prompt
    child.expect_exact(PROMPT)
    enter(child, "a = 2; b = 6; P = 3*a**3 - b**2; P.backward(); a.grad")
    child.expect(r"tensor\(36\.")
    assert leave_at_prompt(child) == 0
    state = json.loads(found.read_text())
    loaded = [
        name
        for name in state["modules"]
        for package in LOADED_AFTER_THE_PROMPT
        if name == package or name.startswith(package + ".")
    ]
    assert loaded == []
    assert "prompt_toolkit" in state["modules"]
    assert state["gc_paused"] and state["gc_after"]  # paused until the prompt, then resumed
