"""The REPL's prompt_toolkit layer, driven by a pipe input: typing, blocks, Ctrl-C, completion;
what its start defers (Pygments, the engine, Rich, the garbage collector) and its banner."""

from __future__ import annotations

import gc
import io
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.lexers import PygmentsLexer
from prompt_toolkit.output import DummyOutput

from gradcalc import __version__, limits
from gradcalc.cli import repl_prompt
from gradcalc.cli.repl import Entry, Session
from gradcalc.cli.repl_prompt import ReplCompleter, history_path, interact, open_history

NUMBER = re.compile(r"-?\d+\.?\d*")
PAUSE = 1.0


def numbers(text: str) -> list[float]:
    return [float(NUMBER.search(line).group(0)) for line in text.splitlines() if line.strip()]


def type_into_session(
    keys: str | list[str], session: Session | None = None, history: InMemoryHistory | None = None
) -> tuple[int, str, str, Session]:
    """Type ``keys`` (``\\r`` is Enter) into a prompt session, then Ctrl-D.

    A list of chunks is typed with a pause between them, for what prompt_toolkit
    does in the background (completion) to finish before the next key.
    """
    out, err = io.StringIO(), io.StringIO()
    session = session or Session(stdout=out, stderr=err)
    chunks = [keys] if isinstance(keys, str) else list(keys)
    chunks[-1] += "\x04"
    with create_pipe_input() as pipe:

        def typist() -> None:
            for index, chunk in enumerate(chunks):
                if index:
                    time.sleep(PAUSE)
                pipe.send_text(chunk)

        thread = threading.Thread(target=typist, daemon=True)
        thread.start()
        code = interact(
            session,
            input=pipe,
            output=DummyOutput(),
            history=history or InMemoryHistory(),
            banner=False,
        )
        thread.join()
    return code, session.stdout.getvalue(), session.stderr.getvalue(), session


def test_seed_000_typed_at_the_prompt():
    keys = "a = 2\rb = 6\rP = 3*a**3 - b**2\rP.backward()\ra.grad\r"
    keys += "Q = -3*a**3 + b**2\rQ.backward()\ra.grad\rb.grad\r"
    code, out, err, _ = type_into_session(keys)
    assert (code, err) == (0, "")
    assert numbers(out) == [36, 0, 0]


def test_def_block_with_auto_indentation_and_blank_line():
    # The body is typed without indentation: the prompt offers it; Enter on the
    # dedented empty line after 'return' finishes the block.
    keys = "def f(x):\ry = x * x\rreturn y + 1\r\rf(3)\r"
    code, out, err, session = type_into_session(keys)
    assert (code, err) == (0, "")
    assert numbers(out) == [10]
    assert "f" in session.names


def test_failing_line_keeps_state_and_the_session_goes_on():
    code, out, err, session = type_into_session("a = 2\ra = a / nope\ra\r")
    assert code == 0  # an interactive session ends normally
    assert "NameError" in err and "^" in err
    assert numbers(out) == [2]
    assert session.failures == 1


def test_ctrl_c_clears_the_line_and_a_pending_block():
    code, out, err, _ = type_into_session("a = 2\rnope\x03while a < 3:\x03a\r")
    assert (code, err) == (0, "")
    assert numbers(out) == [2]


def test_quit_command_leaves():
    out = io.StringIO()
    session = Session(stdout=out, stderr=io.StringIO())
    with create_pipe_input() as pipe:
        pipe.send_text(":quit\r")  # no Ctrl-D: :quit alone must end the loop
        code = interact(session, input=pipe, output=DummyOutput(), history=InMemoryHistory())
    assert code == 0
    assert ":help" in out.getvalue()  # the banner


def test_tab_completes_a_unique_name():
    session = Session(stdout=io.StringIO(), stderr=io.StringIO())
    assert session.run(Entry("alpha_value = 7", 1))  # warm: the prompt starts at once
    code, out, err, _ = type_into_session(["alpha_v\t", "\r"], session)
    assert (code, err) == (0, "")
    assert numbers(out) == [7]


def test_ctrl_r_searches_the_history():
    history = InMemoryHistory()
    for line in ("zeta = 41", "unrelated = 1", "zeta + 1"):
        history.append_string(line)
    keys = ["\x12zeta =", "\r\r\x12zeta +", "\r\r"]  # the first pause: history loads
    code, out, err, _ = type_into_session(keys, history=history)
    assert (code, err) == (0, "")
    assert numbers(out) == [42]


# An alarm landing in hypothesis's gc callback is swallowed there (reported as
# unraisable); the repeating timer then interrupts the loop with the next one.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ctrl_c_during_a_long_loop_interrupts_it_and_restores_names(monkeypatch):
    session = Session(stdout=io.StringIO(), stderr=io.StringIO())
    original = Session.run

    def run_with_alarm(self, entry):
        if entry.text.startswith("while"):
            # repeats: an interrupt raised inside a gc callback (hypothesis installs one) is lost
            signal.setitimer(signal.ITIMER_REAL, 0.5, 0.25)
        try:
            return original(self, entry)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def interrupt(signum, frame):
        # only inside the engine or the interpreter (the loop): a later tick landing in the
        # session's own handling of the first interrupt would swallow its message (seen on
        # a loaded machine), and one in a gc callback is lost (the next tick then comes)
        module = frame.f_globals.get("__name__", "") if frame is not None else ""
        if sys.exc_info()[0] is not None:
            return  # an exception is being handled (the first interrupt's message, say)
        if module.startswith("gradcalc.") and not module.startswith("gradcalc.cli"):
            # the next tick only if this one is lost: the session has a second to answer
            signal.setitimer(signal.ITIMER_REAL, 1.0, 1.0)
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    monkeypatch.setattr(Session, "run", run_with_alarm)
    try:
        keys = "x = 1\rwhile True: x = x + 1\r\rx\rx + 1\r"
        code, out, _, session = type_into_session(keys, session)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert code == 0
    assert "KeyboardInterrupt" in out
    assert numbers(out.split("KeyboardInterrupt", 1)[1].split("\n", 1)[1]) == [1, 2]


def completions(text: str, names: tuple[str, ...] = ()) -> list[str]:
    completer = ReplCompleter(lambda: names)
    return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]


def test_completion_of_names_functions_methods_and_commands():
    assert "alpha" in completions("al", ("alpha",))
    assert "exp" in completions("ex")
    assert "sigmoid" in completions("sigm")
    assert "sum" in completions("x.su", ("x",))
    assert "backward" in completions("y.back", ("y",))
    assert "grad" in completions("a.gr", ("a",))
    assert "alpha" not in completions("x.al", ("alpha",))
    assert completions(":gr") == [":grad", ":graph"]
    assert "alpha" in completions(":grad 3*al", ("alpha",))


def test_completion_of_file_names_after_load(tmp_path: Path, monkeypatch):
    (tmp_path / "session.gc").write_text("a = 1\n")
    monkeypatch.chdir(tmp_path)
    assert "sion.gc" in completions(":load ses")


def test_history_lives_in_the_xdg_state_directory(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert history_path() == tmp_path / "state" / "gradcalc" / "history"
    history = open_history()
    assert isinstance(history, FileHistory)
    assert history_path().exists()


def test_history_defaults_to_local_state_and_ignores_relative_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")
    assert history_path() == tmp_path / ".local" / "state" / "gradcalc" / "history"


def test_unwritable_history_falls_back_to_memory(tmp_path: Path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    assert isinstance(open_history(blocker / "gradcalc" / "history"), InMemoryHistory)


def test_lexer_is_pygments_python():
    pytest.importorskip("pygments")
    lexer = repl_prompt.make_lexer()
    assert lexer is not None
    assert isinstance(lexer.load(), PygmentsLexer)


def test_pygments_loads_at_the_first_text_and_colours_as_its_lexer():
    pygments_python = pytest.importorskip("pygments.lexers.python")
    lexer = repl_prompt.PythonColours()
    assert lexer.lex_document(Document(""))(0) == []  # the first prompt's empty line
    assert lexer._lexer is None
    typed = Document("def f(x): return x**2 + 1  # square")
    expected = PygmentsLexer(pygments_python.PythonLexer).lex_document(typed)(0)
    assert lexer.lex_document(typed)(0) == expected
    assert lexer._lexer is not None


def test_the_warm_up_loads_pygments_the_engine_and_rich():
    lexer = repl_prompt.PythonColours()
    warm_up = repl_prompt._WarmUp(lexer)
    warm_up.start()
    warm_up.join(timeout=60)
    assert lexer._lexer is not None
    assert {"gradcalc.interpreter", "gradcalc.cli.render", "rich.console"} <= set(sys.modules)


def test_the_first_prompt_resumes_the_garbage_collector():
    assert gc.isenabled()
    limits.pause_collector()
    try:
        assert not gc.isenabled()
        code, _, err, _ = type_into_session("a = 1\r")
        assert (code, err) == (0, "")
        assert gc.isenabled()  # resumed once the prompt was drawn
    finally:
        limits.resume_collector()
    gc.disable()  # someone else's pause is not ours to undo
    try:
        limits.resume_collector()
        assert not gc.isenabled()
    finally:
        gc.enable()


class TerminalText(io.StringIO):
    def isatty(self) -> bool:
        return True


BANNER_ENVIRONMENT = ("NO_COLOR", "TERM", "COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE")


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "file"])
@pytest.mark.parametrize(
    "environment",
    [
        {},
        {"TERM": "xterm-256color"},
        {"NO_COLOR": "1"},
        {"TERM": "dumb"},
        {"TERM": "UNKNOWN", "COLUMNS": "120"},
        {"COLUMNS": "100", "LINES": "40"},
        {"COLUMNS": "74"},
        {"COLUMNS": "73"},
        {"COLUMNS": "72"},
        {"COLUMNS": "40"},
        {"FORCE_COLOR": "1"},
        {"TTY_COMPATIBLE": "0"},
    ],
    ids=lambda env: " ".join(f"{k}={v}" for k, v in env.items()) or "(none)",
)
def test_the_banner_is_written_as_rich_writes_it(
    terminal: bool, environment: dict[str, str], monkeypatch
):
    for name in BANNER_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    stream = TerminalText if terminal else io.StringIO
    written = Session(stdout=stream(), stderr=io.StringIO())
    repl_prompt.write_banner(written)
    by_rich = Session(stdout=stream(), stderr=io.StringIO())
    by_rich.note(repl_prompt.BANNER.format(version=__version__))
    assert written.stdout.getvalue() == by_rich.stdout.getvalue()


def test_completion_after_a_module_prefix_offers_its_members():
    from gradcalc.cli.repl_prompt import ReplCompleter

    completer = ReplCompleter(lambda: ["x"])

    def complete(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]

    assert complete("torch.zeros_l") == ["zeros_like"]
    assert complete("F.mse") == ["mse_loss"]
    assert {"Variable", "backward", "functional", "grad"} <= set(complete("y = torch.autograd."))
    assert "sum" in complete("x.su")
