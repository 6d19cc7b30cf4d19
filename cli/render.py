"""Rich text output: values laid out like NumPy, a gradients table, the graph as a tree, errors.

Imported only when Rich draws the text (Rich costs tens of milliseconds to
import): for a colour terminal, the REPL and explain mode, and whenever
``gradcalc.cli.plain`` (which builds the words of both, and writes the same
characters without Rich when there is no colour) declines. Every piece of user
text goes in as ``rich.text.Text``, never as markup, so a formula containing
``[1, 2]`` prints as written. Colour is used only when the stream is a
terminal and ``NO_COLOR`` is not set; otherwise no escape codes at all.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from gradcalc.cli.plain import (
    CHAIN_MIN,
    TREE_MAX_DEPTH,
    TREE_MAX_NODES,
    Branch,
    Grid,
    Line,
    array_text,
    error_line,
    functions_grid,
    graph_outline,
    notes_lines,
    result_blocks,
    scalar_text,
    shape_text,
    value_lines,
    wants_color,
)
from gradcalc.graph import LABEL_DIGITS, Graph, short_text

if TYPE_CHECKING:
    from gradcalc.api import Result

__all__ = [
    "CHAIN_MIN",
    "TREE_MAX_DEPTH",
    "TREE_MAX_NODES",
    "array_text",
    "error_text",
    "explanation_view",
    "functions_table",
    "graph_tree",
    "make_console",
    "print_result",
    "scalar_text",
    "shape_text",
    "wants_color",
]


def make_console(stream: IO[str] | None = None) -> Console:
    """A console that writes plain text (no escape codes) unless ``stream`` is a colour terminal."""
    stream = stream or sys.stdout
    color = wants_color(stream)
    return Console(
        file=stream,
        color_system="auto" if color else None,
        force_terminal=color or None,
        no_color=not color,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=False,
    )


# ---------------------------------------------------------------- blocks as Rich objects


def to_text(line: Line) -> Text:
    """A `Line` as Rich text: its base style, each part appended with its own."""
    text = Text(style=line.style)
    for part, style in line.parts:
        text.append(part, style=style or None)
    return text


def to_table(grid: Grid) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, expand=grid.expand)
    for column in grid.columns:
        table.add_column(**column)
    for row in grid.rows:
        table.add_row(*map(to_text, row))
    return table


def to_tree(root: Branch) -> Tree:
    """Built with an explicit stack, as the outline was (Rich draws trees without recursion)."""
    tree = Tree(to_text(root.label))
    stack = [(root, tree)]
    while stack:
        branch, node = stack.pop()
        stack += [(child, node.add(to_text(child.label))) for child in branch.children]
    return tree


def to_rich(block: Line | Grid | Branch) -> RenderableType:
    if isinstance(block, Grid):
        return to_table(block)
    if isinstance(block, Branch):
        return to_tree(block)
    return to_text(block)


# ---------------------------------------------------------------- values


def value_block(result: Result, width: int) -> RenderableType:
    """``P = -12.0`` for a scalar; a heading and NumPy's layout for a tensor."""
    return Group(*map(to_text, value_lines(result, width)))


def notes_block(result: Result) -> RenderableType | None:
    notes = notes_lines(result)
    return Group(*map(to_text, notes)) if notes else None


def print_result(result: Result, console: Console, *, command: str, with_check: bool) -> None:
    """The text output of grad/eval/jacobian/hessian (the graph, if any, is printed after)."""
    blocks = result_blocks(result, console.width, command=command, with_check=with_check)
    console.print(Group(*map(to_rich, blocks)))


# ---------------------------------------------------------------- graph tree


def graph_tree(
    graph: Graph, max_nodes: int = TREE_MAX_NODES, max_depth: int = TREE_MAX_DEPTH
) -> RenderableType:
    """The graph from the output down to the leaves (see `plain.graph_outline`)."""
    blocks = graph_outline(graph, max_nodes, max_depth)
    return to_rich(blocks[0]) if len(blocks) == 1 else Group(*map(to_rich, blocks))


# ---------------------------------------------------------------- errors and listings


def error_text(exc: BaseException, width: int = 80) -> Text:
    """``ParseError: message (line 1, column 4)``, the source line with a caret, and the hint."""
    return to_text(error_line(exc, width))


def functions_table(functions: dict[str, Any]) -> Table:
    """The signature and the description wrapped beside it (see `plain.functions_grid`)."""
    return to_table(functions_grid(functions))


EXPLAIN_ROWS = 40
"""Steps shown per pass in text (the first and last half); ``--json`` lists every one."""
EXPLAIN_TERMS = 8
"""Contributions spelled out in a variable's sum before the rest are counted."""


def explanation_view(explanation: Any, width: int) -> RenderableType:
    """Explain mode's text: the forward pass, the backward pass, and each variable's sum."""
    blocks: list[RenderableType] = [
        value_block(explanation.result, width),
        Text("forward pass: each operation and its value", style="bold"),
        _forward_table(explanation.forward),
        Text("backward pass: contribution = local derivative × upstream gradient", style="bold"),
        _backward_table(explanation.backward),
        Text("gradients: the contributions reaching each variable, added", style="bold"),
        _gradient_sums(explanation),
    ]
    notes = notes_block(explanation.result)
    if notes is not None:
        blocks.append(notes)
    return Group(*blocks)


def _shown(steps: list, table: Table) -> Iterator[Any]:
    """The steps to draw: all of a short pass; the first and last of a long one, with a
    row in ``table`` counting those left out between them."""
    if len(steps) <= EXPLAIN_ROWS:
        yield from steps
        return
    half = EXPLAIN_ROWS // 2
    yield from steps[:half]
    note = Text(f"⋮ {len(steps) - 2 * half:,} more (--json lists every step)", style="dim")
    table.add_row("", note, *([""] * (len(table.columns) - 2)))
    yield from steps[-half:]


def _forward_table(steps: list) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("node")
    table.add_column("computes", overflow="fold")
    table.add_column("value", overflow="fold")
    for step in _shown(steps, table):
        computes = step.expr if step.op == "leaf" or not step.name else f"{step.name} = {step.expr}"
        node = Text("variable", style="cyan") if step.op == "leaf" else Text(step.op)
        table.add_row(str(step.id), node, computes, _explain_value(step.value))
    return table


def _backward_table(steps: list) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("node")
    table.add_column("upstream", overflow="fold")
    table.add_column("to", justify="right")
    table.add_column("local", overflow="fold")
    table.add_column("contribution", overflow="fold")
    for step in _shown(steps, table):
        for index, part in enumerate(step.to):
            first = index == 0
            local = (
                Text(part.describe or "", style="dim")
                if part.local is None
                else _explain_value(part.local)
            )
            table.add_row(
                str(step.node) if first else "",
                f"{step.op} ({step.expr})" if first else "",
                _explain_value(step.upstream) if first else "",
                f"#{part.input}",
                local,
                _explain_value(part.contribution),
            )
    return table


def _gradient_sums(explanation: Any) -> Text:
    """``d/dx = 9.0 (from #1) + 9.0 (from #1) = 18.0``, one line per reported name."""
    sums = Text()
    nodes = explanation.variables()
    for name, gradient in explanation.result.gradients.items():
        found = explanation.contributions_to(nodes.get(name, -1))
        parts = [f"{_explain_value(value)} (from #{source})" for source, value in found]
        if len(parts) > EXPLAIN_TERMS:
            parts[EXPLAIN_TERMS:] = [f"… ({len(parts) - EXPLAIN_TERMS:,} more)"]
        import numpy as np

        added = sum(np.asarray(value, dtype=float) for _, value in found)
        if found and not np.allclose(added, gradient, equal_nan=True):
            parts.append("operations of earlier entries")  # the REPL's :explain
        total = _explain_value(gradient)
        if not parts:
            where = "not used by the output" if not np.any(gradient) else "through earlier entries"
            line = f" = {total} ({where})"
        elif len(parts) == 1:
            line = f" = {parts[0]}"
        else:
            line = f" = {' + '.join(parts)} = {total}"
        sums.append("\n" if sums else "").append(f"d/d{name}", style="cyan").append(line)
    return sums


def _explain_value(array: Any) -> str:
    return short_text(array, digits=LABEL_DIGITS)
