"""``jacobian``, ``hessian``, ``vjp``, ``jvp``, ``vhp``, ``hvp``: PyTorch's signatures,
errors (``strict``) and output layout.

The Jacobian is built row by row with reverse mode: one ``grad`` call per
output element, seeded with a one-hot ``grad_outputs``. With
``create_graph=True`` the rows stay differentiable, which is how ``hessian``
is the Jacobian of the Jacobian.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradcalc import _numpy
from gradcalc._creation import zeros_like
from gradcalc._tensor import (
    Tensor,
    enable_grad,
    grad,
    is_grad_enabled,
    set_grad_enabled,
    wrap,
)

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


# -------------------------------------------- vjp, jvp, vhp, hvp (PyTorch's algorithms)
# Forward-mode products use the double-backward trick: J^T u is linear in u, so
# the derivative of <J^T u, .> with respect to u, seeded with v, is J v.


def _tuple_of(value: Any, what: str, fn: str) -> tuple[bool, tuple[Tensor, ...]]:
    """PyTorch's ``_as_tuple``: a Tensor or a tuple of Tensors, and whether it was a tuple."""
    is_tuple = isinstance(value, tuple)
    items = value if is_tuple else (value,)
    for i, item in enumerate(items):
        if not isinstance(item, Tensor):
            where = f"value at index {i}" if is_tuple else f"given {what}"
            raise TypeError(
                f"The {what} given to {fn} must be either a Tensor or a tuple of Tensors but the"
                f" {where} has type {type(item)}."
            )
    return is_tuple, items


def _preprocess(inputs: tuple[Tensor, ...], create_graph: bool, need_graph: bool) -> tuple:
    """Inputs as fresh leaves (or, with ``create_graph``, linked to the caller's graph)."""
    out = []
    for x in inputs:
        if create_graph and x.requires_grad:
            out.append(x.view_as(x))
        else:
            out.append(x.detach().requires_grad_(need_graph))
    return tuple(out)


def _postprocess(values: tuple, create_graph: bool) -> tuple:
    return values if create_graph else tuple(v.detach() for v in values)


def _untuple(values: tuple, was_tuple: bool) -> Any:
    return values if was_tuple else values[0]


def _validate_v(v: tuple, other: tuple, is_other_tuple: bool) -> None:
    if len(other) != len(v):
        if is_other_tuple:
            raise RuntimeError(
                f"v is a tuple of invalid length: should be {len(other)} but got {len(v)}."
            )
        raise RuntimeError("The given v should contain a single Tensor.")
    for idx, (el_v, el_other) in enumerate(zip(v, other, strict=True)):
        if el_v.size() != el_other.size():
            prepend = f"Entry {idx} in " if is_other_tuple else ""
            raise RuntimeError(
                f"{prepend}v has invalid size: should be {el_other.size()!r} but got "
                f"{el_v.size()!r}."
            )


_NOT_DIFFERENTIABLE = {
    "outputs": "Output {i} of the user-provided function does not require gradients. The "
    "outputs must be computed in a differentiable manner from the input when running in "
    "strict mode.",
    "grad_inputs": "The gradient with respect to input {i} is independent of the inputs of "
    "the user-provided function. This is not allowed in strict mode.",
    "jacobian": "While computing the hessian, found that the jacobian of the user-provided "
    "function with respect to input {i} is independent of the input. This is not allowed in "
    "strict mode. You should ensure that your function is twice differentiable and that the "
    "jacobian depends on the inputs (this would be violated by a linear function for example).",
    "hessian": "The hessian of the user-provided function with respect to input {i} is "
    "independent of the input. This is not allowed in strict mode. You should ensure that "
    "your function is thrice differentiable and that the hessian depends on the inputs.",
}


def _check_requires_grad(values: tuple, kind: str, strict: bool) -> None:
    """In strict mode, every value must depend differentiably on the inputs."""
    if not strict:
        return
    for i, value in enumerate(values):
        if value is None:
            raise RuntimeError(
                f"The output of the user-provided function is independent of input {i}."
                " This is not allowed in strict mode."
            )
        if not value.requires_grad:
            raise RuntimeError(_NOT_DIFFERENTIABLE[kind].format(i=i))


def _autograd_grad(
    outputs: tuple, inputs: tuple, grad_outputs: tuple | None = None, create_graph: bool = False
) -> tuple:
    """``grad`` over the outputs that require grad (None for every input when none does)."""
    if grad_outputs is None:
        grad_outputs = (None,) * len(outputs)
    kept = [
        (out, g)
        for out, g in zip(outputs, grad_outputs, strict=True)
        if out is not None and out.requires_grad
    ]
    if not kept:
        return (None,) * len(inputs)
    outs, seeds = zip(*kept, strict=True)
    return grad(list(outs), list(inputs), list(seeds), create_graph=create_graph, allow_unused=True)


_INDEPENDENT = {
    "back": "The output of the user-provided function is independent of input {i}. This is "
    "not allowed in strict mode.",
    "back_trick": "The gradient with respect to the input is independent of entry {i} in the "
    "grad_outputs when using the double backward trick to compute forward mode gradients. "
    "This is not allowed in strict mode.",
    "double_back": "The jacobian of the user-provided function is independent of input {i}. "
    "This is not allowed in strict mode.",
    "double_back_trick": "The hessian of the user-provided function is independent of entry "
    "{i} in the grad_jacobian. This is not allowed in strict mode as it prevents from using "
    "the double backward trick to replace forward mode AD.",
}


def _fill_in_zeros(
    grads: tuple, refs: tuple, strict: bool, create_graph: bool, stage: str
) -> tuple:
    """Zeros (of each reference's shape and dtype) where no gradient flowed; errors in
    strict mode."""
    out = []
    for i, g in enumerate(grads):
        if g is None:
            if strict:
                raise RuntimeError(_INDEPENDENT[stage].format(i=i))
            g = _zeros(tuple(refs[i].shape), refs[i])
        elif strict and create_graph and not g.requires_grad:
            what = "hessian" if "double" in stage else "jacobian"
            raise RuntimeError(
                f"The {what} of the user-provided function is independent of input {i}. This "
                "is not allowed in strict mode when create_graph=True."
            )
        out.append(g)
    return tuple(out)


def _single_output(outputs: tuple, is_tuple: bool, fn: str) -> None:
    if is_tuple:
        raise RuntimeError(f"The function given to {fn} should return a single Tensor")
    if outputs[0].numel() != 1:
        raise RuntimeError(
            f"The Tensor returned by the function given to {fn} should contain a single element"
        )


def _vector(v: Any, against: tuple, against_tuple: bool, fn: str, create_graph: bool) -> Any:
    """``v`` checked against the tensors it multiplies (None only beside one element)."""
    if v is None:
        if len(against) != 1 or against[0].numel() != 1:
            raise RuntimeError(_NO_V[fn])
        return None
    _, vs = _tuple_of(v, "v", fn)
    vs = _preprocess(vs, create_graph, need_graph=False)
    _validate_v(vs, against, against_tuple)
    return vs


_NO_V = {
    "vjp": "The vector v can only be None if the user-provided function returns a single "
    "Tensor with a single element.",
    **dict.fromkeys(
        ("jvp", "vhp", "hvp"),
        "The vector v can only be None if the input to the user-provided function is a "
        "single Tensor with a single element.",
    ),
}


def vjp(
    func: Callable[..., Any],
    inputs: Any,
    v: Any = None,
    create_graph: bool = False,
    strict: bool = False,
) -> tuple[Any, Any]:
    """``(func(inputs), v^T J)``: the vector-Jacobian product, PyTorch's return layout."""
    with enable_grad():
        inputs_tuple, inputs_t = _tuple_of(inputs, "inputs", "vjp")
        inputs_t = _preprocess(inputs_t, create_graph, need_graph=True)
        outputs_tuple, outputs = _tuple_of(
            func(*inputs_t), "outputs of the user-provided function", "vjp"
        )
        _check_requires_grad(outputs, "outputs", strict)
        vs = _vector(v, outputs, outputs_tuple, "vjp", create_graph)
    with set_grad_enabled(True if create_graph else is_grad_enabled()):
        grads = _autograd_grad(outputs, inputs_t, vs, create_graph=create_graph)
        result = _fill_in_zeros(grads, inputs_t, strict, create_graph, "back")
    return (
        _untuple(_postprocess(outputs, create_graph), outputs_tuple),
        _untuple(_postprocess(result, create_graph), inputs_tuple),
    )


def jvp(
    func: Callable[..., Any],
    inputs: Any,
    v: Any = None,
    create_graph: bool = False,
    strict: bool = False,
) -> tuple[Any, Any]:
    """``(func(inputs), J v)``: the Jacobian-vector product, by the double-backward trick."""
    with enable_grad():
        inputs_tuple, inputs_t = _tuple_of(inputs, "inputs", "jvp")
        inputs_t = _preprocess(inputs_t, create_graph, need_graph=True)
        vs = _vector(v, inputs_t, inputs_tuple, "jvp", create_graph)
        outputs_tuple, outputs = _tuple_of(
            func(*inputs_t), "outputs of the user-provided function", "jvp"
        )
        _check_requires_grad(outputs, "outputs", strict)
        # J^T u is linear in u: its value does not matter, only that it is finite.
        dummies = tuple(zeros_like(out, requires_grad=True) for out in outputs)
        grad_inputs = _autograd_grad(outputs, inputs_t, dummies, create_graph=True)
        _check_requires_grad(grad_inputs, "grad_inputs", strict)
    with set_grad_enabled(True if create_graph else is_grad_enabled()):
        grads = _autograd_grad(grad_inputs, dummies, vs, create_graph=create_graph)
        result = _fill_in_zeros(grads, outputs, strict, create_graph, "back_trick")
    return (
        _untuple(_postprocess(outputs, create_graph), outputs_tuple),
        _untuple(_postprocess(result, create_graph), outputs_tuple),
    )


def _gradient_of_scalar(
    func: Callable[..., Any], inputs: Any, v: Any, create_graph: bool, strict: bool, fn: str
) -> tuple:
    """What vhp and hvp share: prepared inputs, ``v``, the output and its gradient."""
    inputs_tuple, inputs_t = _tuple_of(inputs, "inputs", fn)
    inputs_t = _preprocess(inputs_t, create_graph, need_graph=True)
    vs = _vector(v, inputs_t, inputs_tuple, fn, create_graph)
    outputs_tuple, outputs = _tuple_of(func(*inputs_t), "outputs of the user-provided function", fn)
    _check_requires_grad(outputs, "outputs", strict)
    _single_output(outputs, outputs_tuple, fn)
    jac = _autograd_grad(outputs, inputs_t, create_graph=True)
    _check_requires_grad(jac, "jacobian", strict)
    return inputs_tuple, inputs_t, vs, outputs, jac


def vhp(
    func: Callable[..., Any],
    inputs: Any,
    v: Any = None,
    create_graph: bool = False,
    strict: bool = False,
) -> tuple[Any, Any]:
    """``(func(inputs), v^T H)`` for a function with a single-element output."""
    with enable_grad():
        inputs_tuple, inputs_t, vs, outputs, jac = _gradient_of_scalar(
            func, inputs, v, create_graph, strict, "vhp"
        )
    with set_grad_enabled(True if create_graph else is_grad_enabled()):
        grads = _autograd_grad(jac, inputs_t, vs, create_graph=create_graph)
        result = _fill_in_zeros(grads, inputs_t, strict, create_graph, "double_back")
    return (
        _postprocess(outputs, create_graph)[0],
        _untuple(_postprocess(result, create_graph), inputs_tuple),
    )


def hvp(
    func: Callable[..., Any],
    inputs: Any,
    v: Any = None,
    create_graph: bool = False,
    strict: bool = False,
) -> tuple[Any, Any]:
    """``(func(inputs), H v)`` for a function with a single-element output (the
    double-backward trick on ``vhp``'s graph)."""
    with enable_grad():
        inputs_tuple, inputs_t, vs, outputs, jac = _gradient_of_scalar(
            func, inputs, v, create_graph, strict, "hvp"
        )
        grad_jac = tuple(zeros_like(x, requires_grad=True) for x in inputs_t)
        double_back = _autograd_grad(jac, inputs_t, grad_jac, create_graph=True)
        _check_requires_grad(jac, "hessian", strict)
    with set_grad_enabled(True if create_graph else is_grad_enabled()):
        grads = _autograd_grad(double_back, grad_jac, vs, create_graph=create_graph)
        result = _fill_in_zeros(grads, inputs_t, strict, create_graph, "double_back_trick")
    return (
        _postprocess(outputs, create_graph)[0],
        _untuple(_postprocess(result, create_graph), inputs_tuple),
    )
