"""The computation behind an output, as plain nodes and edges, and its text exporters.

:func:`build_graph` walks ``output.grad_fn`` and its ``next_functions``
iteratively (a graph may be 100,000 operations deep) into a :class:`Graph`:
one node per grad_fn (PyTorch's names: ``SubBackward0``, ``AccumulateGrad``
for a leaf), each shared subexpression once, with the value and gradient the
engine recorded under ``gradcalc._tensor.record_values()``. The text
exporters (Graphviz DOT, Mermaid) are here; the JSON encoding is
``gradcalc.jsonio.graph_to_json``, and the Rich tree lives in ``gradcalc.cli``
with the rest of the Rich rendering.

Edges point from a node to the node whose output it consumes, i.e. from the
output towards the leaves, the direction backward runs; DOT and Mermaid draw
them reversed, as data flows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from gradcalc import _numpy

TYPE_CHECKING = False  # (not typing's: importing typing costs ~3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any

np = _numpy.bind(globals())

INLINE_ELEMENTS = 6
"""Tensors up to this many elements are shown by value in labels; larger ones by shape."""
LABEL_DIGITS = 6
"""Significant digits of numbers in graph labels (tree, DOT, Mermaid); JSON keeps them all."""


class GraphNode:
    """One operation (or leaf) of a recorded graph, as the renderers and explain see it.

    Plain slotted classes here, not dataclasses: importing ``dataclasses`` (and
    ``inspect`` with it) cost ~5 ms of every ``gradcalc graph`` start-up.
    """

    __slots__ = ("grad", "id", "name", "op", "source", "value")

    def __init__(
        self,
        id: int,
        op: str,
        name: str | None = None,
        value: np.ndarray | None = None,
        grad: np.ndarray | None = None,
        source: Any = None,
    ) -> None:
        self.id = id
        self.op = op
        """The grad_fn's name (``MulBackward0``), or ``AccumulateGrad`` for a leaf."""
        self.name = name
        """The variable this node's output is bound to, when it has one."""
        self.value = value
        self.grad = grad
        """The gradient of the output with respect to this node's output."""
        self.source = source
        """The engine's grad_fn behind this node (for explain mode's per-node VJPs)."""

    def __repr__(self) -> str:
        return (
            f"GraphNode(id={self.id!r}, op={self.op!r}, name={self.name!r}, "
            f"value={self.value!r}, grad={self.grad!r})"
        )

    @property
    def shape(self) -> tuple[int, ...] | None:
        if self.value is None:
            return None
        return () if _is_python_number(self.value) else tuple(np.shape(self.value))

    @property
    def is_leaf(self) -> bool:
        return self.op == "AccumulateGrad"


class Graph:
    """The nodes (root first) and edges of a recorded graph."""

    __slots__ = ("edges", "nodes")

    def __init__(
        self, nodes: list[GraphNode] | None = None, edges: list[tuple[int, int]] | None = None
    ) -> None:
        self.nodes = [] if nodes is None else nodes
        self.edges = [] if edges is None else edges
        """(consumer id, input id) pairs, in each node's ``next_functions`` order."""

    def __repr__(self) -> str:
        return f"Graph(nodes={self.nodes!r}, edges={self.edges!r})"

    @property
    def root(self) -> int | None:
        return 0 if self.nodes else None

    def inputs(self) -> list[list[int]]:
        """For each node id, the ids of the nodes it consumes, in order."""
        adjacency: list[list[int]] = [[] for _ in self.nodes]
        for consumer, source in self.edges:
            adjacency[consumer].append(source)
        return adjacency


def build_graph(
    output: Any,
    named: Iterable[tuple[str, Any]] = (),
    gradients: Mapping[str, np.ndarray] | None = None,
) -> Graph:
    """Walk ``output``'s grad_fn graph breadth-first into a :class:`Graph` (root is node 0).

    ``named`` lists (name, tensor) pairs, first name wins, so leaves and named
    intermediates carry their names; ``gradients`` fills a leaf's gradient
    when the engine recorded none for it.
    """
    gradients = gradients or {}
    leaf_names: dict[int, str] = {}
    fn_names: dict[int, str] = {}
    for name, tensor in named:
        leaf_names.setdefault(id(tensor), name)
        fn = getattr(tensor, "grad_fn", None)
        if fn is not None:
            fn_names.setdefault(id(fn), name)
    graph = Graph()
    if output is None:
        return graph
    root = getattr(output, "grad_fn", None)
    if root is None:
        if getattr(output, "requires_grad", False):
            name = leaf_names.get(id(output))
            grad = gradients.get(name) if name is not None else None
            graph.nodes.append(
                GraphNode(0, "AccumulateGrad", name, _data(output), _array_or_none(grad))
            )
        return graph
    ids = {id(root): 0}
    graph.nodes.append(_node(0, root, fn_names, leaf_names, gradients, output))
    queue: deque[Any] = deque([root])
    while queue:
        fn = queue.popleft()
        consumer = ids[id(fn)]
        for next_fn, _ in getattr(fn, "next_functions", ()) or ():
            if next_fn is None:
                continue
            known = ids.get(id(next_fn))
            if known is None:
                known = len(graph.nodes)
                ids[id(next_fn)] = known
                graph.nodes.append(_node(known, next_fn, fn_names, leaf_names, gradients, None))
                queue.append(next_fn)
            graph.edges.append((consumer, known))
    return graph


def _node(
    node_id: int,
    fn: Any,
    fn_names: Mapping[int, str],
    leaf_names: Mapping[int, str],
    gradients: Mapping[str, np.ndarray],
    output: Any,
) -> GraphNode:
    op = fn.name() if callable(getattr(fn, "name", None)) else type(fn).__name__
    variable = getattr(fn, "variable", None)
    if variable is not None:
        name = leaf_names.get(id(variable))
        grad = getattr(fn, "grad_value", None)
        if grad is None and name is not None:
            grad = gradients.get(name)
        return GraphNode(node_id, op, name, _data(variable), _array_or_none(grad), fn)
    value = getattr(fn, "value", None)
    if value is None and output is not None:
        value = _data(output)
    return GraphNode(
        node_id,
        op,
        fn_names.get(id(fn)),
        _array_or_none(value),
        _array_or_none(getattr(fn, "grad_value", None)),
        fn,
    )


def _data(tensor: Any) -> np.ndarray | None:
    if getattr(tensor, "_raw", None) is None and getattr(tensor, "_data", None) is None:
        return None
    return _array_or_none(tensor)


def _array_or_none(value: Any) -> np.ndarray | float | bool | None:
    """An ndarray, or the float backend's Python float or bool as it is (no NumPy)."""
    if value is None:
        return None
    data = getattr(value, "_raw", value)  # a Tensor gradient, or an array
    if _is_python_number(data):
        return data
    return np.asarray(getattr(value, "_data", value))


# ---------------------------------------------------------------- labels


def short_text(
    array: np.ndarray | None, max_elements: int = INLINE_ELEMENTS, digits: int | None = None
) -> str:
    """One-line text for a value: the number, a small tensor, or its shape when large.

    ``digits`` rounds to that many significant digits (graph labels); by
    default numbers are shown exactly (shortest round-trip spelling).
    """
    if array is None:
        return "?"
    if _is_python_number(array):  # the float backend's values: no NumPy to ask
        item = float(array) if isinstance(array, float) else array
        if digits is not None and type(item) is float:
            return _rounded(item, digits)
        return repr(item) if type(item) is float else str(item)
    array = np.asarray(array)
    if array.ndim == 0:
        item = array.item()
        if digits is not None and isinstance(item, float):
            return _rounded(item, digits)
        return _scalar_text(array)
    if array.size > max_elements:
        return f"tensor of shape {tuple(array.shape)}"
    precision = {} if digits is None else {"precision": digits}
    return np.array2string(
        array, separator=", ", max_line_width=10**6, threshold=10**6, **precision
    )


def _is_python_number(value: Any) -> bool:
    """A Python float, int or bool (or the float backend's ``Float64``), not NumPy's."""
    return isinstance(value, float | int | bool) and type(value).__module__ != "numpy"


def _scalar_text(array: np.ndarray) -> str:
    item = array.item()
    if isinstance(item, float):
        return str(array.dtype.type(item)) if array.dtype.itemsize < 8 else repr(item)
    return str(item)


def _rounded(value: float, digits: int) -> str:
    """``20.0825``, ``1.0`` (still visibly a float), ``1.5e-08``, ``nan``."""
    text = f"{value:.{digits}g}"
    if text.lstrip("-").isdigit():
        text += ".0"
    return text


def node_title(node: GraphNode) -> str:
    """``a (AccumulateGrad)`` for a named leaf, ``r1 = AddBackward0`` for a named node."""
    if node.name is None:
        return node.op
    if node.is_leaf:
        return f"{node.name} ({node.op})"
    return f"{node.name} = {node.op}"


# ---------------------------------------------------------------- exporters


def graph_to_dot(graph: Graph) -> str:
    """Graphviz DOT, drawn as data flows (leaves at the top, the output at the bottom)."""
    lines = [
        "digraph gradcalc {",
        '  node [shape=box, style="rounded", fontname="monospace"];',
    ]
    for node in graph.nodes:
        label = "\\n".join(_dot_escape(part) for part in _label_lines(node))
        attrs = f'label="{label}"'
        if node.is_leaf:
            attrs += ', style="rounded,filled", fillcolor="lightblue"'
        elif node.id == graph.root:
            attrs += ', style="rounded,filled", fillcolor="darkolivegreen1"'
        lines.append(f"  n{node.id} [{attrs}];")
    for consumer, source in graph.edges:
        lines.append(f"  n{source} -> n{consumer};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def graph_to_mermaid(graph: Graph) -> str:
    """A Mermaid flowchart, drawn as data flows (leaves first)."""
    lines = ["flowchart TD"]
    for node in graph.nodes:
        label = "<br/>".join(_mermaid_escape(part) for part in _label_lines(node))
        lines.append(f'  n{node.id}["{label}"]')
    for consumer, source in graph.edges:
        lines.append(f"  n{source} --> n{consumer}")
    return "\n".join(lines) + "\n"


def _label_lines(node: GraphNode) -> list[str]:
    lines = [node_title(node)]
    if node.value is not None:
        lines.append(f"value: {short_text(node.value, digits=LABEL_DIGITS)}")
    if node.grad is not None:
        lines.append(f"grad: {short_text(node.grad, digits=LABEL_DIGITS)}")
    return lines


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _mermaid_escape(text: str) -> str:
    return (
        text.replace("&", "#amp;")
        .replace('"', "#quot;")
        .replace("<", "#lt;")
        .replace(">", "#gt;")
        .replace("\n", " ")
    )
