"""``torch.autograd.Function``: an operation whose derivative the user writes.

A subclass declares ``forward(ctx, *args)`` and ``backward(ctx, *grad_outputs)``
(or PyTorch 2's ``forward(*args)`` plus ``setup_context(ctx, inputs, output)``);
``Subclass.apply(*args)`` runs ``forward`` without recording and, when a tensor
argument requires grad, records a node named ``<Subclass>Backward`` per tensor
output, whose operands are the tensor arguments. The engine treats it as any op
over a sequence of operands (``kind == 0``): its VJP for operand ``i`` is entry
``i`` of the gradients the user's ``backward`` returns, which runs once per node
and pass, on Tensors (under ``no_grad`` in a plain backward, recorded with
``create_graph=True`` so a differentiable ``backward`` gives higher derivatives).

Engine nodes have one output. With several tensor outputs, output ``k``'s node
calls ``backward`` with its gradient and zeros for the others (PyTorch's
``materialize_grads``); a VJP is linear in the output gradients, so the calls add
up to the one PyTorch makes (the same values, up to rounding of the sum).
"""

from __future__ import annotations

import weakref
from typing import Any, ClassVar

from gradcalc import _numpy, _tensor
from gradcalc._tensor import Node, Tensor, no_grad
from gradcalc.errors import GradError

np = _numpy.bind(globals())

__all__ = ["Function", "FunctionCtx"]


class FunctionCtx:
    """The ``ctx`` of a custom Function: what ``forward`` leaves for ``backward``."""

    def __init__(self, needs_input_grad: tuple[bool, ...]) -> None:
        self.needs_input_grad = needs_input_grad
        self._saved: tuple | None = ()
        self._outputs: list[tuple[Tensor | None, Any, np.ndarray]] = []
        """Per recorded output: the forward's tensor if it was saved (else None), a weak
        reference to its node, and a zero-memory array of its shape and dtype."""
        self._freed: set[int] = set()
        self._non_differentiable: tuple = ()
        self.materialize_grads = True

    def save_for_backward(self, *tensors: Any) -> None:
        """Keep tensors (or None) for ``backward``: read back as ``ctx.saved_tensors``."""
        for position, t in enumerate(tensors):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(
                    "save_for_backward can only save variables, but argument "
                    f"{position} is of type {type(t).__name__}"
                )
        self._saved = tensors

    @property
    def saved_tensors(self) -> tuple:
        if self._saved is None:
            raise GradError(_tensor.FREED_MESSAGE)
        return tuple(self._rebuilt(t) for t in self._saved)

    def _rebuilt(self, t: Any) -> Any:
        """A saved output hangs from this Function's node again (as the forward's did)."""
        for out, node_ref, _ in self._outputs:
            node = node_ref()
            if out is not None and t is out and node is not None:
                again = _tensor.wrap(out._data)
                again._grad_fn = node
                again._requires_grad = True
                return again
        return t

    def mark_non_differentiable(self, *tensors: Any) -> None:
        """The output given here gets no gradient: ``apply`` returns it without a node."""
        self._non_differentiable = tensors

    def set_materialize_grads(self, value: bool) -> None:
        """Kept for PyTorch's API: the gradients reaching ``backward`` always exist here
        (zeros for the outputs a pass does not reach)."""
        self.materialize_grads = bool(value)


class _Output:
    """The const of output ``index``'s node: its ctx, and the gradients one call of
    ``backward`` gave for the pass under way (one VJP per operand reads them)."""

    __slots__ = ("cache", "ctx", "index", "node")

    def __init__(self, ctx: FunctionCtx, index: int) -> None:
        self.ctx = ctx
        self.index = index
        self.cache: tuple[Any, tuple] | None = None
        self.node: Any = None


class _FunctionVJPs:
    """The VJPs of a Function node: entry ``i`` is operand ``i``'s share of one call
    to the user's ``backward`` (made on the first entry the pass asks for)."""

    __slots__ = ()

    def __getitem__(self, index: int) -> Any:
        return lambda g, ans, *rest: _vjp(index, g, rest[-1])


def _vjp(index: int, g: Any, output: _Output) -> Any:
    cache = output.cache
    if cache is None or cache[0] is not g:
        grads = _run_backward(output.ctx, output.index, g)
        output.cache = cache = (g, grads)
    grads = cache[1]
    if index == len(grads) - 1 or all(x is None for x in grads[index + 1 :]):
        output.cache = None  # the last operand's share: drop the pass's gradients
        node = output.node() if output.node is not None else None
        ctx = output.ctx
        if node is not None and node.holds is _tensor._FREED:
            ctx._freed.add(output.index)
            if len(ctx._freed) == len(ctx._outputs):
                ctx._saved = None  # freed with the graph, as PyTorch frees saved tensors
                ctx._outputs = []
    return grads[index]


def _run_backward(ctx: FunctionCtx, index: int, g: Any) -> tuple:
    """The user's ``backward`` on output ``index``'s gradient (zeros for the others);
    one gradient per tensor operand (raw data in a plain pass, Tensors in a recorded
    one), checked as PyTorch checks them."""
    function: type[Function] = ctx._function  # type: ignore[attr-defined]
    recorded = type(g) is Tensor
    grad_output = g if recorded else _tensor.wrap(g.copy() if type(g) is np.ndarray else g)
    grad_outputs = [
        grad_output if k == index else _tensor.wrap(np.zeros(like.shape, like.dtype))
        for k, (_, _, like) in enumerate(ctx._outputs)
    ]
    if recorded:
        result = function.backward(ctx, *grad_outputs)
    else:
        with no_grad():
            result = function.backward(ctx, *grad_outputs)
    results = result if isinstance(result, tuple) else (result,)
    expected = len(ctx.needs_input_grad)
    if len(results) < expected or any(r is not None for r in results[expected:]):
        raise GradError(
            f"function {function.__name__}Backward returned an incorrect number of gradients "
            f"(expected {expected}, got {len(results)})"
        )
    grads = []
    for position, like in ctx._tensor_args:  # type: ignore[attr-defined]
        value = results[position]
        if value is None or not ctx.needs_input_grad[position]:
            grads.append(None)
            continue
        if not isinstance(value, Tensor):
            raise TypeError(
                f"{function.__name__}.backward returned {type(value).__name__} for argument "
                f"{position}, expected a Tensor or None"
            )
        grads.append(_fit(function, position, value, like, recorded))
    return tuple(grads)


def _fit(function: type, position: int, value: Tensor, like: Any, recorded: bool) -> Any:
    """A returned gradient in its input's shape (summed down when it broadcasts to it,
    as PyTorch does) and dtype."""
    from gradcalc import ops

    shape, got = np.shape(like), tuple(value.shape)
    if got != shape:
        try:
            expandable = np.broadcast_shapes(shape, got) == got
        except ValueError:
            expandable = False
        if not expandable:
            raise GradError(
                f"Function {function.__name__}Backward returned an invalid gradient at index "
                f"{position} - got {list(got)} but expected shape compatible with {list(shape)}"
            )
        value = ops.unbroadcast(value if recorded else value._data, np.zeros(shape))
        value = value if recorded else _tensor.wrap(value)
    if recorded:
        return value if value.dtype.np == np.asarray(like).dtype else value.to(like.dtype)
    return _tensor._cast_like(value._data, like)


class Function:
    """Base class of operations with a hand-written derivative (PyTorch's API)."""

    _node_class: ClassVar[type[Node] | None] = None

    @staticmethod
    def forward(ctx: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "You must implement the forward function for custom autograd.Function."
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> Any:
        return NotImplemented

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Any) -> Any:
        raise NotImplementedError(
            "You must implement either the backward or vjp method for your custom "
            "autograd.Function to use it with backward mode AD."
        )

    vjp = backward

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        """Run ``forward`` and record the node whose VJPs call ``backward``."""
        if cls is Function:
            raise GradError("Function.apply is called on a subclass of torch.autograd.Function")
        tensor_args = [(i, a) for i, a in enumerate(args) if isinstance(a, Tensor)]
        grad_on = _tensor.is_grad_enabled()
        needs = tuple(isinstance(a, Tensor) and a._requires_grad and grad_on for a in args)
        ctx = FunctionCtx(needs)
        ctx._function = cls  # type: ignore[attr-defined]
        ctx._tensor_args = [  # type: ignore[attr-defined]
            (i, a._data) for i, a in tensor_args
        ]
        separate = cls.setup_context is not Function.setup_context
        with no_grad():
            if separate:
                output = cls.forward(*args, **kwargs)
                cls.setup_context(ctx, args, output)
            else:
                output = cls.forward(ctx, *args, **kwargs)
        if not any(needs):
            return output
        return _record_output(cls, ctx, output, tensor_args)


def _record_output(cls: type[Function], ctx: FunctionCtx, output: Any, tensor_args: list) -> Any:
    """The forward's tensor outputs, each hanging from a new ``<cls>Backward`` node."""
    single = isinstance(output, Tensor)
    items = (output,) if single else output
    if not isinstance(items, tuple | list):
        raise TypeError(f"{cls.__name__}.forward must return a Tensor or a tuple of Tensors")
    positions = [
        i
        for i, item in enumerate(items)
        if isinstance(item, Tensor) and not any(item is t for t in ctx._non_differentiable)
    ]
    if not positions:
        return output
    node_class = cls.__dict__.get("_node_class")
    if node_class is None:
        node_class = type(
            f"{cls.__name__}Backward",
            (Node,),
            {"__slots__": (), "vjps": _FunctionVJPs(), "kind": 0, "__module__": cls.__module__},
        )
        cls._node_class = node_class
    parents = tuple(_tensor._edge(t) if t._requires_grad else None for _, t in tensor_args)
    stand_ins = tuple(_tensor._stand_in(t._data) for _, t in tensor_args)
    result = list(items)
    for index, position in enumerate(positions):
        out = items[position]
        const = _Output(ctx, index)
        recorded = _tensor._record(
            node_class, out._data, parents, None, stand_ins, None, (const,), None, True
        )
        const.node = weakref.ref(recorded._grad_fn)  # the node holds ctx: no cycle back
        kept = out if any(t is out for t in ctx._saved or ()) else None
        ctx._outputs.append((kept, const.node, _tensor._stand_in(np.asarray(out._data))))
        result[position] = recorded
    if single:
        return result[0]
    return tuple(result) if isinstance(items, tuple) else result
