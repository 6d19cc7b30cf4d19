"""``jacobian`` and ``hessian`` with PyTorch's signatures and output layout.

The Jacobian is built row by row with reverse mode: one ``grad`` call per
output element, seeded with a one-hot ``grad_outputs``. With
``create_graph=True`` the rows stay differentiable, which is how ``hessian``
is the Jacobian of the Jacobian.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradcalc import _numpy
from gradcalc._tensor import Tensor, grad, wrap

np = _numpy.bind(globals())


def _as_tuple(value: Any, what: str) -> tuple[bool, tuple[Tensor, ...]]:
    if isinstance(value, Tensor):
        return False, (value,)
    if isinstance(value, (tuple, list)) and all(isinstance(v, Tensor) for v in value):
        return True, tuple(value)
    raise TypeError(f"The {what} given to jacobian must be either a Tensor or a tuple of Tensors")


def _prepare(inputs: tuple[Tensor, ...], create_graph: bool) -> tuple[Tensor, ...]:
    """Fresh differentiable views of the inputs (linked to the caller's graph if asked)."""
    prepared = []
    for x in inputs:
        if create_graph and x.requires_grad:
            prepared.append(x.view_as(x))
        else:
            prepared.append(x.detach().requires_grad_(True))
    return tuple(prepared)


def _zeros(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Zeros of ``like``'s dtype: the derivative where no gradient flows, as PyTorch fills it."""
    return wrap(np.zeros(shape, dtype=np.asarray(like._data).dtype))


def _zeros_for_unused(grads: tuple[Any, ...], inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """``grad(..., allow_unused=True)``'s results with each None replaced by zeros of its input."""
    return tuple(_zeros(x.shape, x) if g is None else g for g, x in zip(grads, inputs, strict=True))


def jacobian(
    func: Callable[..., Any],
    inputs: Any,
    create_graph: bool = False,
    strict: bool = False,
    vectorize: bool = False,
    strategy: str = "reverse-mode",
) -> Any:
    """d func(inputs) / d inputs, each block shaped ``output.shape + input.shape``."""
    from gradcalc._functions import stack

    inputs_tuple, inputs = _as_tuple(inputs, "inputs")
    inputs = _prepare(inputs, create_graph)
    outputs = func(*inputs)
    outputs_tuple, outputs = _as_tuple(outputs, "outputs of the user-provided function")

    blocks: list[list[Tensor]] = []
    for index, out in enumerate(outputs):
        rows: list[list[Tensor]] = [[] for _ in inputs]
        size = out.numel()
        if out.requires_grad and size:
            flat_seed = np.zeros(size, dtype=np.asarray(out._data).dtype)
            for k in range(size):
                flat_seed[k] = 1
                seed = wrap(flat_seed.reshape(out.shape).copy())
                flat_seed[k] = 0
                grads = grad(
                    out,
                    inputs,
                    seed,
                    retain_graph=True,
                    create_graph=create_graph,
                    allow_unused=True,
                )
                for i, (g, x) in enumerate(zip(grads, inputs, strict=True)):
                    if g is None:
                        if strict:
                            raise RuntimeError(
                                f"Output {index} of the user-provided function is independent "
                                f"of input {i}. This is not allowed in strict mode."
                            )
                        g = _zeros(x.shape, x)
                    rows[i].append(g)
        elif strict and size:
            raise RuntimeError(
                f"Output {index} of the user-provided function does not require gradients. "
                "The outputs must be computed in a differentiable manner from the input "
                "when running in strict mode."
            )
        block = []
        for i, x in enumerate(inputs):
            shape = tuple(out.shape) + tuple(x.shape)
            if rows[i]:
                block.append(stack(rows[i]).reshape(shape))
            else:
                block.append(_zeros(shape, x))
        blocks.append(block)

    if not outputs_tuple and not inputs_tuple:
        return blocks[0][0]
    if not outputs_tuple:
        return tuple(blocks[0])
    if not inputs_tuple:
        return tuple(block[0] for block in blocks)
    return tuple(tuple(block) for block in blocks)


def hessian(
    func: Callable[..., Any],
    inputs: Any,
    create_graph: bool = False,
    strict: bool = False,
    vectorize: bool = False,
    outer_jacobian_strategy: str = "reverse-mode",
) -> Any:
    """Second derivatives of a scalar function: the Jacobian of its gradient."""
    inputs_tuple, inputs_t = _as_tuple(inputs, "inputs")

    def scalar_func(*args: Tensor) -> Tensor:
        out = func(*args)
        if not isinstance(out, Tensor):
            raise RuntimeError("The function given to hessian should return a single Tensor")
        if out.numel() != 1:
            raise RuntimeError(
                "The Tensor returned by the function given to hessian should contain "
                "a single element"
            )
        return out.reshape(())

    def gradient(*args: Tensor) -> Any:
        return jacobian(
            scalar_func, args if inputs_tuple else args[0], create_graph=True, strict=strict
        )

    return jacobian(
        gradient,
        inputs_t if inputs_tuple else inputs_t[0],
        create_graph=create_graph,
        strict=strict,
    )


def vjp(
    func: Callable[..., Any],
    inputs: Any,
    v: Any = None,
    create_graph: bool = False,
    strict: bool = False,
) -> Any:
    """(func(inputs), v^T J)."""
    inputs_tuple, inputs_t = _as_tuple(inputs, "inputs")
    inputs_t = _prepare(inputs_t, create_graph)
    out = func(*inputs_t)
    grads = grad(out, inputs_t, v, retain_graph=True, create_graph=create_graph, allow_unused=True)
    grads = _zeros_for_unused(grads, inputs_t)
    return out.detach() if not create_graph else out, grads if inputs_tuple else grads[0]


def hvp(
    func: Callable[..., Any],
    inputs: Any,
    v: Any = None,
    create_graph: bool = False,
    strict: bool = False,
) -> Any:
    """(func(inputs), H v) for a scalar function."""
    inputs_tuple, inputs_t = _as_tuple(inputs, "inputs")
    _, vs = _as_tuple(v, "v") if v is not None else (False, ())
    inputs_t = _prepare(inputs_t, True)
    out = func(*inputs_t)
    grads = grad(out, inputs_t, create_graph=True, allow_unused=True)
    from gradcalc._functions import sum as total

    dot = None
    for g, vec in zip(grads, vs, strict=True):
        if g is not None:
            term = total(g * vec)
            dot = term if dot is None else dot + term
    result = grad(dot, inputs_t, create_graph=create_graph, allow_unused=True)
    result = _zeros_for_unused(result, inputs_t)
    return out.detach(), result if inputs_tuple else result[0]
