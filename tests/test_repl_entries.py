"""How the REPL groups input lines into entries (blocks, brackets, commands) and auto-indents."""

from __future__ import annotations

from gradcalc.cli.repl import EntryCollector


def collect(*lines: str) -> list[tuple[str, int]]:
    collector = EntryCollector()
    entries = [entry for line in lines for entry in collector.feed(line)]
    last = collector.flush()
    if last is not None:
        entries.append(last)
    return [(entry.text, entry.line) for entry in entries]


def test_each_simple_line_is_an_entry_and_blank_lines_are_skipped():
    assert collect("a = 2", "", "b = 6", "P = 3*a**3 - b**2") == [
        ("a = 2", 1),
        ("b = 6", 3),
        ("P = 3*a**3 - b**2", 4),
    ]


def test_a_def_block_runs_until_a_blank_line():
    lines = ["def f(x):", "    y = x * 2", "    return y + 1", "", "f(3)"]
    assert collect(*lines) == [("def f(x):\n    y = x * 2\n    return y + 1", 1), ("f(3)", 5)]


def test_an_unindented_statement_ends_a_block_and_starts_the_next_entry():
    lines = ["for i in range(3):", "    s = s + i", "t = s * 2"]
    assert collect(*lines) == [("for i in range(3):\n    s = s + i", 1), ("t = s * 2", 3)]


def test_else_and_elif_continue_the_block():
    lines = ["if a > 0:", "    b = 1", "elif a < 0:", "    b = -1", "else:", "    b = 0", ""]
    assert collect(*lines) == [("\n".join(lines[:-1]), 1)]


def test_nested_blocks_and_column_zero_comments_stay_in_the_block():
    lines = ["while i < 3:", "    if i > 1:", "# a note", "        j = i", "    i = i + 1", ""]
    assert collect(*lines) == [("\n".join(lines[:-1]), 1)]


def test_a_one_line_block_waits_for_a_blank_line_as_in_python():
    assert collect("if a > 0: b = 1", "", "c = 2") == [("if a > 0: b = 1", 1), ("c = 2", 3)]


def test_open_brackets_continue_the_entry_even_across_blank_lines():
    lines = ["x = [1,", "", "     2]", "y = 3"]
    assert collect(*lines) == [("x = [1,\n\n     2]", 1), ("y = 3", 4)]


def test_a_bracketed_header_opens_its_block_once_closed():
    lines = ["def f(a,", "      b):", "    return a + b", ""]
    assert collect(*lines) == [("def f(a,\n      b):\n    return a + b", 1)]


def test_commands_are_single_lines_and_end_a_pending_block():
    lines = [":vars", "def f(x):", "    return x", ":grad f(2)"]
    assert collect(*lines) == [(":vars", 1), ("def f(x):\n    return x", 2), (":grad f(2)", 4)]


def test_a_colon_inside_a_comment_or_slice_does_not_open_a_block():
    assert collect("y = x[1:]  # see:", "z = 1") == [("y = x[1:]  # see:", 1), ("z = 1", 2)]


def test_unfinished_input_is_flushed_at_the_end():
    assert collect("def f(x):", "    return x") == [("def f(x):\n    return x", 1)]


def test_reset_drops_a_half_typed_entry():
    collector = EntryCollector()
    collector.feed("def f(x):")
    assert collector.pending
    collector.reset()
    assert not collector.pending
    assert [e.text for e in collector.feed("a = 1")] == ["a = 1"]


def test_auto_indentation_follows_the_block_structure():
    collector = EntryCollector()
    assert collector.continuation_indent() == ""
    collector.feed("def f(x):")
    assert collector.continuation_indent() == "    "
    collector.feed("    if x > 0:")
    assert collector.continuation_indent() == "        "
    collector.feed("        return x")
    assert collector.continuation_indent() == "    "
    collector.feed("    y = -x")
    assert collector.continuation_indent() == "    "
    collector.feed("    return y")
    assert collector.continuation_indent() == ""


def test_auto_indentation_inside_brackets_keeps_the_line_indentation():
    collector = EntryCollector()
    collector.feed("def f(x):")
    collector.feed("    y = [x,")
    assert collector.continuation_indent() == "    "


def test_whitespace_only_line_offered_by_auto_indent_finishes_the_block():
    collector = EntryCollector()
    collector.feed("while i < 3:")
    collector.feed("    i = i + 1")
    done = collector.feed(collector.continuation_indent())
    assert [e.text for e in done] == ["while i < 3:\n    i = i + 1"]
    assert not collector.pending
