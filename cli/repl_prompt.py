"""The REPL on a terminal: prompt_toolkit line editing around a :class:`~gradcalc.cli.repl.Session`.

History persists in ``$XDG_STATE_HOME/gradcalc/history`` (in memory when that
cannot be written); Tab completes names, built-in functions, methods after a
``.`` and ``:commands``, or indents on an empty line; Python's Pygments lexer
colours the input; Ctrl-R searches the history (prompt_toolkit's own binding).
Imported only when a session starts on a terminal.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.application.current import get_app
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.lexers import Lexer, PygmentsLexer
from prompt_toolkit.output import Output

from gradcalc.cli.repl import (
    ALIASES,
    COMMANDS,
    EXIT_OK,
    INDENT,
    EntryCollector,
    Session,
)

PROMPT, CONTINUATION = ">>> ", "... "
KEYWORDS = ("if", "elif", "else", "while", "for", "in", "def", "return", "pass", "break")
KEYWORDS += ("continue", "and", "or", "not", "True", "False")
CONSTANTS = ("pi", "e")
_WORD = re.compile(r"[A-Za-z_]\w*$")
BANNER = "gradcalc {version} — names persist; :help lists the commands; Ctrl-D leaves."


def history_path() -> Path:
    """``$XDG_STATE_HOME/gradcalc/history``, ``~/.local/state/gradcalc/history`` by default."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "gradcalc" / "history"


def open_history(path: Path | None = None) -> History:
    """The persistent history, or an in-memory one when its file cannot be written."""
    path = path or history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8"):
            pass
    except OSError:
        return InMemoryHistory()
    return FileHistory(str(path))


class ReplCompleter(Completer):
    """Commands after ``:``, files after ``:load``/``:save``, methods after ``.``, else names."""

    def __init__(self, names: Callable[[], Iterable[str]]) -> None:
        self._names = names
        self._paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document, event: CompleteEvent) -> Iterator[Completion]:
        text = document.text_before_cursor
        stripped = text.lstrip()
        if stripped.startswith(":"):
            command, space, rest = stripped.partition(" ")
            if not space:
                yield from self._commands(command)
            elif ALIASES.get(command, command) in (":load", ":save", ":save!"):
                yield from self._paths.get_completions(Document(rest.lstrip()), event)
            elif ALIASES.get(command, command) in (":grad", ":graph"):
                yield from self._expression(rest)
            return
        yield from self._expression(text)

    def _commands(self, typed: str) -> Iterator[Completion]:
        for name, command in COMMANDS.items():
            if name.startswith(typed):
                yield Completion(name, -len(typed), display_meta=command.doc)

    def _expression(self, text: str) -> Iterator[Completion]:
        match = _WORD.search(text)
        word = match.group(0) if match else ""
        before = text[: len(text) - len(word)].rstrip()
        after_dot = before.endswith(".")
        module = _MODULE_PATH.search(before) if after_dot else None
        members = _module_members(module.group(1)) if module else []
        if members:  # torch.<Tab>, F.<Tab>: the module's functions
            candidates = [(name, "torch") for name in members]
        elif after_dot:
            candidates = _attribute_names()
        else:
            candidates = _global_names(self._names())
        for name, meta in candidates:
            if name.startswith(word) and name != word:
                yield Completion(name, -len(word), display_meta=meta)


_MODULE_PATH = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\.$")


def _module_members(path: str) -> list[str]:
    from gradcalc import api

    return api.module_members(path)


def _spec_meta(spec: Any) -> str:
    return str(getattr(spec, "signature", "") or getattr(spec, "doc", "") or "")


def _attribute_names() -> list[tuple[str, str]]:
    from gradcalc import builtins

    found: dict[str, str] = {}
    for table, kind in ((builtins.METHODS, "method"), (builtins.ATTRIBUTES, "attribute")):
        for name in table:
            spec = table[name] if isinstance(table, dict) else None
            found.setdefault(name, _spec_meta(spec) or kind)
    return sorted(found.items())


def _global_names(user_names: Iterable[str]) -> list[tuple[str, str]]:
    from gradcalc import builtins

    found: dict[str, str] = {name: "variable" for name in user_names}
    for name, spec in builtins.FUNCTIONS.items():
        found.setdefault(name, _spec_meta(spec) or "function")
    for name in CONSTANTS:
        found.setdefault(name, "constant")
    for name in KEYWORDS:
        found.setdefault(name, "keyword")
    return sorted(found.items())


def make_lexer() -> Lexer | None:
    """Python's Pygments lexer (Pygments comes with Rich); no colouring if it is missing."""
    try:
        from pygments.lexers.python import PythonLexer
    except ImportError:
        return None
    return PygmentsLexer(PythonLexer)


def _key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @Condition
    def at_line_start() -> bool:
        return not get_app().current_buffer.document.current_line_before_cursor.strip()

    @bindings.add("tab", filter=at_line_start)
    def _indent(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text(INDENT)

    return bindings


def make_prompt_session(
    session: Session,
    *,
    input: Input | None = None,
    output: Output | None = None,
    history: History | None = None,
) -> PromptSession:
    return PromptSession(
        input=input,
        output=output,
        history=history if history is not None else open_history(),
        completer=ReplCompleter(lambda: list(session.names)),
        complete_while_typing=False,
        auto_suggest=AutoSuggestFromHistory(),
        lexer=make_lexer(),
        key_bindings=_key_bindings(),
    )


def interact(
    session: Session,
    *,
    input: Input | None = None,
    output: Output | None = None,
    history: History | None = None,
    banner: bool = True,
) -> int:
    """Read, run and print until Ctrl-D or ``:quit``; Ctrl-C clears the line or stops an entry."""
    prompt = make_prompt_session(session, input=input, output=output, history=history)
    warm_up = _warm_up_engine()
    collector = EntryCollector()
    if banner:
        from gradcalc import __version__

        session.note(BANNER.format(version=__version__))
    while not session.quit:
        try:
            line = prompt.prompt(
                CONTINUATION if collector.pending else PROMPT,
                default=collector.continuation_indent(),
            )
        except KeyboardInterrupt:
            collector.reset()
            continue
        except EOFError:
            break
        for entry in collector.feed(line):
            try:
                session.run(entry)
            except KeyboardInterrupt:
                session.failures += 1
                session.note("KeyboardInterrupt: the entry was stopped; every name is as before")
            if session.quit:
                break
    warm_up.join(timeout=5.0)  # never leave an import half done at exit
    return EXIT_OK


def _warm_up_engine() -> threading.Thread:
    """Import the interpreter and the engine (NumPy) while the first prompt waits for typing.

    The prompt needs neither; the first entry needs both, and a person types
    slower than they load (~100 ms). The thread first lets the prompt draw (an
    import holds the GIL, so loading at once would only delay the prompt); an
    entry typed sooner waits on the import lock for what is left, so nothing
    is imported twice or half.
    """

    def load() -> None:
        time.sleep(0.15)
        with contextlib.suppress(Exception):  # the first entry will report any real problem
            from gradcalc import api

            api.interpreter()  # imports the interpreter, its built-ins and the engine

    thread = threading.Thread(target=load, name="gradcalc-warm-up", daemon=True)
    thread.start()
    return thread
