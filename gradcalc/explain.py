"""Explain mode: the forward pass node by node, then the chain rule as backward applies it.

A student learning backpropagation wants to see, for every operation, the
gradient arriving from above (*upstream*), the operation's local derivative
for each input, and their product (the *contribution*) flowing down; and, at a
variable used twice, the contributions adding up to its gradient.

Nothing here differentiates on its own. :func:`explain` runs the program once
through :func:`gradcalc.api` with the engine recording values
(``record_values``) and keeping the graph (``retain_graph``), so each node
holds its output, the total gradient the one backward pass sent it, and the
order it ran in. The per-input contributions are the op's own VJPs from the
registry (``gradcalc.ops``), evaluated on the node's saved values with that
upstream gradient: the numbers backward summed, shown one by one. A test
checks that each variable's contributions add up to its gradient.

The *local* derivative is shown where it is a number per element: for 0-d
nodes, and for elementwise ops whose input has the output's shape (the VJP of
a gradient of ones). Elsewhere (matmul, reductions, broadcasting) the
Jacobian is not diagonal and the step is described as a vector-Jacobian
product instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradcalc import api
from gradcalc.graph import Graph, GraphNode
from gradcalc.limits import Limits

EXPR_CHARS = 60
"""Expressions longer than this refer to their inputs by node id (``#3 * #4``)."""

_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**", "pow_tensor": "**",
          "remainder": "%", "mm": "@", "mv": "@", "bmm": "@"}  # fmt: skip
"""Ops the language writes as binary operators (the rest are shown as calls)."""
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "%": 2, "@": 2, "**": 4}
_ATOM = 9


@dataclass(slots=True)
class ForwardStep:
    """One node of the forward pass, in the order values were computed."""

    id: int
    op: str
    """``leaf`` for a variable, else PyTorch's grad_fn name (``MulBackward0``)."""
    inputs: list[int]
    expr: str
    value: np.ndarray | None
    name: str | None = None


@dataclass(slots=True)
class Contribution:
    """What one backward step sends to one input."""

    input: int
    contribution: np.ndarray
    local: np.ndarray | None
    """The local derivative per element, when it is one (see the module docstring)."""
    describe: str | None = None
    """How the contribution is formed when ``local`` is None."""


@dataclass(slots=True)
class BackwardStep:
    """One node of the backward pass, in the order backward ran it."""

    node: int
    op: str
    expr: str
    upstream: np.ndarray
    to: list[Contribution] = field(default_factory=list)


@dataclass(slots=True)
class Explanation:
    """An evaluated formula with both passes spelled out."""

    result: api.Result
    forward: list[ForwardStep]
    backward: list[BackwardStep]

    def variables(self) -> dict[str, int]:
        """The forward node id of each name gradients are reported for (a variable, or a named
        intermediate in the REPL); names the output never used have none."""
        leaves = {step.name: step.id for step in self.forward if step.name}
        return {name: leaves[name] for name in self.result.gradients if name in leaves}

    def contributions_to(self, node_id: int) -> list[tuple[int, np.ndarray]]:
        """(backward step's node, contribution) pairs reaching ``node_id``."""
        return [
            (step.node, part.contribution)
            for step in self.backward
            for part in step.to
            if part.input == node_id
        ]


def explain(
    formula: str,
    bindings: Mapping[str, Any] | None = None,
    wrt: Sequence[str] | None = None,
    of: str | None = None,
    dtype: str = "float64",
    seed: int | None = None,
    limits: Limits | None = None,
) -> Explanation:
    """Run ``formula`` and return its forward and backward passes step by step."""
    result = api.evaluate(
        formula, bindings, wrt, of, None, dtype, seed, graph=True, limits=limits,
        retain_graph=True,
    )  # fmt: skip
    return explain_result(result)


def explain_result(result: api.Result) -> Explanation:
    """Both passes of a result whose graph recorded values and kept its saved tensors
    (``api.evaluate(..., graph=True, retain_graph=True)``, or the REPL's
    ``api.differentiate(..., graph=True)``); nodes recorded earlier, without values, show
    no step."""
    graph = result.graph or Graph()
    order = _forward_order(graph)
    new_id = {old: new for new, old in enumerate(order)}
    exprs = _expressions(graph, order)
    inputs = graph.inputs()
    forward = [
        ForwardStep(
            id=new_id[old],
            op="leaf" if graph.nodes[old].is_leaf else graph.nodes[old].op,
            inputs=[new_id[i] for i in inputs[old]],
            expr=exprs[old],
            value=graph.nodes[old].value,
            name=graph.nodes[old].name,
        )
        for old in order
    ]
    backward = []
    with np.errstate(all="ignore"), contextlib.suppress(ImportError):
        from gradcalc import no_grad

        with no_grad():
            for old in _backward_order(graph, order):
                node = graph.nodes[old]
                step = BackwardStep(new_id[old], node.op, exprs[old], np.asarray(node.grad))
                step.to = _contributions(node, inputs[old], graph, new_id)
                backward.append(step)
    return Explanation(result, forward, backward)


def _forward_order(graph: Graph) -> list[int]:
    """Node ids with every input before its consumers, in the formula's reading order
    (an iterative depth-first post-order from the output: ``a``, ``a**3``, ..., output)."""
    if not graph.nodes:
        return []
    inputs = graph.inputs()
    order: list[int] = []
    seen = {0}
    stack: list[tuple[int, int]] = [(0, 0)]
    while stack:
        node, position = stack.pop()
        if position < len(inputs[node]):
            stack.append((node, position + 1))
            source = inputs[node][position]
            if source not in seen:
                seen.add(source)
                stack.append((source, 0))
        else:
            order.append(node)
    return order


def _backward_order(graph: Graph, forward: list[int]) -> list[int]:
    """The nodes backward ran (a gradient reached them), in the order it ran them."""
    ran = [
        n
        for n in reversed(forward)
        if not graph.nodes[n].is_leaf and graph.nodes[n].grad is not None
    ]
    return sorted(ran, key=lambda n: graph.nodes[n].source.step)


def _contributions(
    node: GraphNode, inputs: list[int], graph: Graph, new_id: Mapping[int, int]
) -> list[Contribution]:
    """Each input's share of ``node``'s upstream gradient, from the op's registry VJPs."""
    fn = node.source
    saved = fn.saved
    if saved is None:
        return []
    upstream = _raw(fn.grad_value)
    ans = fn.ans
    elementwise = fn.op.ufunc is not None
    out: list[Contribution] = []
    slot = 0
    for index, parent in enumerate(fn.parents):
        if parent is None:
            continue
        vjp = fn.vjps[index]
        args = (ans, *saved, *fn.consts)
        contribution = np.asarray(vjp(upstream, *args))
        source = inputs[slot]
        slot += 1
        shape = np.shape(saved[index])
        if np.ndim(upstream) == 0 or (elementwise and shape == np.shape(upstream)):
            ones = np.ones_like(np.asarray(upstream))[()]
            local = np.asarray(vjp(ones, *args))
            out.append(Contribution(new_id[source], contribution, local))
        else:
            describe = (
                "local × upstream, summed over the broadcast"
                if elementwise
                else "vector-Jacobian product (not elementwise)"
            )
            out.append(Contribution(new_id[source], contribution, None, describe))
    return out


def _raw(value: Any) -> Any:
    """A gradient as the raw backward hands it to VJPs: a NumPy scalar for 0-d."""
    array = np.asarray(value)
    return array[()] if array.ndim == 0 else array


# ---------------------------------------------------------------- formula fragments


def _expressions(graph: Graph, order: list[int]) -> list[str]:
    """The formula fragment each node computes, built from its inputs' fragments."""
    inputs = graph.inputs()
    position = {node: index for index, node in enumerate(order)}
    texts: list[str] = [""] * len(graph.nodes)
    levels: list[int] = [_ATOM] * len(graph.nodes)
    refs: list[str] = [""] * len(graph.nodes)
    for n in order:
        node = graph.nodes[n]
        if node.is_leaf:
            texts[n] = node.name or "leaf"
        else:
            operands = _operands(node.source, [refs[i] for i in inputs[n]], inputs[n], levels)
            texts[n], levels[n] = _render(node.source.op, operands, node.source.consts)
        short = node.name or (texts[n] if len(texts[n]) <= EXPR_CHARS else f"#{position[n]}")
        refs[n] = short
        if node.name or len(texts[n]) > EXPR_CHARS:
            levels[n] = _ATOM
    return texts


def _operands(fn: Any, refs: list[str], ids: list[int], levels: list[int]) -> list[tuple[str, int]]:
    """Each operand as (text, precedence): an input node's fragment, or a constant."""
    out: list[tuple[str, int]] = []
    remaining = iter(zip(refs, ids, strict=True))
    saved = fn.saved or ()
    for index, parent in enumerate(fn.parents):
        if parent is not None:
            ref, source = next(remaining)
            out.append((ref, levels[source]))
        else:
            out.append((_constant(saved[index] if index < len(saved) else None), _ATOM))
    return out


def _constant(value: Any) -> str:
    if isinstance(value, (int, float)) or (isinstance(value, np.ndarray) and value.ndim == 0):
        number = float(value)
        return repr(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)
    if isinstance(value, np.generic):
        return _constant(float(value))
    return "const"


def _render(op: Any, operands: list[tuple[str, int]], consts: tuple) -> tuple[str, int]:
    """Text and precedence of ``op`` applied to ``operands`` (and its ``consts``)."""
    name = op.name
    symbol = _INFIX.get(name)
    if name == "pow" and len(operands) == 1 and consts:
        operands = [*operands, (_constant(consts[0]), _ATOM)]
        symbol = "**"
    if name == "rsub" and consts:
        return _infix("-", [(_constant(consts[0]), _ATOM), operands[0]])
    if name == "rpow" and consts:
        return _infix("**", [(_constant(consts[0]), _ATOM), operands[0]])
    if name == "neg":
        text, level = operands[0]
        return ("-" + (text if level >= 3 else f"({text})"), 3)
    if symbol is not None and len(operands) == 2:
        if name == "mul" and operands[1][1] == _ATOM and operands[1][0][:1].isdigit():
            operands = operands[::-1]  # the engine computes 3*x as x*3; write it as typed
        return _infix(symbol, operands)
    args = [text for text, _ in operands] + [_constant_arg(c) for c in consts]
    return f"{name}({', '.join(args)})", _ATOM


def _infix(symbol: str, operands: list[tuple[str, int]]) -> tuple[str, int]:
    level = _PRECEDENCE[symbol]
    (left, left_level), (right, right_level) = operands
    right_assoc = symbol == "**"
    if left_level < level or (right_assoc and left_level == level):
        left = f"({left})"
    if right_level < level or (not right_assoc and right_level == level and symbol in "-/%"):
        right = f"({right})"
    return f"{left} {symbol} {right}" if level == 1 else f"{left}{symbol}{right}", level


def _constant_arg(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, float, str, tuple)):
        return repr(value)
    return _constant(value)
