"""PyTorch's version counter: an in-place change to a tensor a node saved for backward makes
that backward raise PyTorch's RuntimeError; in-place changes of a leaf that requires grad,
or of a view of one, raise PyTorch's errors at once (issue 16).

The expected messages are PyTorch 2's, as printed for the same code; each case runs with
the engine's C loops and with the Python ones (the ``backward_loops`` fixture).
"""

from __future__ import annotations

import pytest

import gradcalc as torch
from gradcalc.errors import GradError

HINT = (
    " Hint: enable anomaly detection to find the operation that failed to compute its "
    "gradient, with torch.autograd.set_detect_anomaly(True, check_nan=False)."
)


def modified(what: str, version: int = 1, expected: int = 0) -> str:
    return (
        "one of the variables needed for gradient computation has been modified by an "
        f"inplace operation: {what} is at version {version}; expected version {expected} "
        f"instead.{HINT}"
    )


def error_of(code: str) -> str:
    with pytest.raises(RuntimeError) as caught:
        exec(code, {"torch": torch})
    assert isinstance(caught.value, GradError)
    return str(caught.value)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (  # the case: it returned 20 instead of raising
            "x = torch.tensor(2., requires_grad=True)\na = x * 2\nb = a * a\na.add_(1)\n"
            "b.backward()",
            modified("[torch.FloatTensor []], which is output 0 of Add,"),
        ),
        (  # a saved output
            "x = torch.tensor([1., 2, 3], requires_grad=True)\ny = x.exp()\ny.add_(1)\n"
            "y.sum().backward()",
            modified("[torch.FloatTensor [3]], which is output 0 of Exp,"),
        ),
        (  # a saved constant
            "x = torch.tensor([1., 2, 3], requires_grad=True)\nc = torch.tensor([1., 2, 3])\n"
            "y = x * c\nc.mul_(2)\ny.sum().backward()",
            modified("[torch.FloatTensor [3]]"),
        ),
        (
            "x = torch.tensor([1., 2, 3], requires_grad=True)\nc = torch.tensor([1., 2, 3])\n"
            "y = x * c\nc[0] = 5\ny.sum().backward()",
            modified("[torch.FloatTensor [3]]"),
        ),
        (
            "x = torch.tensor([1., 2, 3], dtype=torch.float64, requires_grad=True)\n"
            "c = torch.tensor([1., 2, 3], dtype=torch.float64)\ny = x * c\nc.zero_()\n"
            "c.copy_(torch.ones(3))\ny.sum().backward()",
            modified("[torch.DoubleTensor [3]]", version=2),
        ),
        (  # no_grad does not hide the change from the node that saved x
            "x = torch.tensor([1., 2, 3], requires_grad=True)\ny = x * x\n"
            "with torch.no_grad():\n    x.add_(1)\ny.sum().backward()",
            modified("[torch.FloatTensor [3]]"),
        ),
        (  # detach() shares the data, and so the version
            "x = torch.tensor([1., 2, 3], requires_grad=True)\nc = torch.tensor([1., 2, 3])\n"
            "y = x * c\nc.detach().mul_(2)\ny.sum().backward()",
            modified("[torch.FloatTensor [3]]"),
        ),
    ],
)
def test_backward_refuses_a_saved_tensor_changed_in_place(
    backward_loops: str, code: str, message: str
) -> None:
    assert error_of(code) == message


@pytest.mark.parametrize(
    ("code", "grad"),
    [
        (  # changed before it was saved: nothing to refuse
            "x = torch.tensor([1., 2, 3], requires_grad=True)\na = x * 2\na.add_(1)\nb = a * a\n"
            "b.sum().backward()",
            [12.0, 20.0, 28.0],
        ),
        (  # an operand no VJP reads (reads= in ops.py): its version does not matter
            "x = torch.tensor([1., 2, 3], requires_grad=True)\nc = torch.tensor([1., 2, 3])\n"
            "y = x + c\nc.mul_(2)\ny.sum().backward()",
            [1.0, 1.0, 1.0],
        ),
        (  # .data is exempt, as in PyTorch: the gradient sees the new values
            "x = torch.tensor([1., 2, 3], requires_grad=True)\nc = torch.tensor([1., 2, 3])\n"
            "y = x * c\nc.data.mul_(2)\ny.sum().backward()",
            [2.0, 4.0, 6.0],
        ),
        (  # .data assignment too: the node keeps what it saved
            "x = torch.tensor([1., 2, 3], requires_grad=True)\nc = torch.tensor([1., 2, 3])\n"
            "y = x * c\nc.data = torch.ones(3)\ny.sum().backward()",
            [1.0, 2.0, 3.0],
        ),
        (  # a training step: parameters updated in place under no_grad, a new graph each time
            "x = torch.tensor([1., 2, 3], requires_grad=True)\n"
            "for _ in range(3):\n"
            "    loss = (x * x).sum()\n    loss.backward()\n"
            "    with torch.no_grad():\n        x.sub_(0.25 * x.grad)\n    x.grad = None\n"
            "(x * x).sum().backward()",
            [0.25, 0.5, 0.75],
        ),
    ],
)
def test_what_pytorch_allows_still_runs(backward_loops: str, code: str, grad: list) -> None:
    scope: dict = {"torch": torch}
    exec(code, scope)
    assert scope["x"].grad.tolist() == grad


def test_the_version_counts_in_place_changes() -> None:
    c = torch.tensor([1.0, 2.0])
    assert c._version == 0
    c.add_(1)
    c.mul_(2)
    c[0] = 3
    assert c._version == 3
    assert c.tolist() == [3.0, 6.0]
    assert c.data._version == 0  # .data has a counter of its own, as in PyTorch


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "x = torch.tensor([1., 2, 3], requires_grad=True)\nx.add_(1)",
            "a leaf Variable that requires grad is being used in an in-place operation.",
        ),
        (
            "x = torch.tensor([1., 2, 3], requires_grad=True)\nv = x[0:2]\nv.add_(1)",
            "a view of a leaf Variable that requires grad is being used in an in-place operation.",
        ),
        (
            "x = torch.tensor([1., 2, 3], requires_grad=True)\nv = x[0:2]\nv.zero_()",
            "a view of a leaf Variable that requires grad is being used in an in-place operation.",
        ),
        (
            "x = torch.tensor([[1., 2], [3, 4]], requires_grad=True)\nv = x.t()[0]\nv.mul_(2)",
            "a view of a leaf Variable that requires grad is being used in an in-place operation.",
        ),
    ],
)
def test_a_leaf_or_a_view_of_one_is_not_changed_in_place(code: str, message: str) -> None:
    assert error_of(code) == message


def test_under_no_grad_a_view_of_a_leaf_may_change_it() -> None:
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with torch.no_grad():
        x[0:2].add_(1)
    assert x.tolist() == [2.0, 3.0, 3.0]
    y = x * 2  # not a view: changing it in place is fine
    y.add_(1)
    assert y.tolist() == [5.0, 7.0, 7.0]
