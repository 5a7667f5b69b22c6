"""02 autograd: the PyTorch basics tutorial's autograd sections, side by side with fnml.

torch records operations on tensors that have ``requires_grad=True`` and ``.backward()`` fills
``.grad``; fnml differentiates *functions* with ``grad(f)(x)``. The tutorial's gradient matches
torch's bit for bit (checked with tolerance 0). Run: ``python examples/02_autograd.py``.
"""

from __future__ import annotations

import jax.numpy as jnp
import torch

from fnml import grad, tensors
from fnml.sidebyside import SideBySide

tour = SideBySide("02 autograd", "Autograd: requires_grad, backward, grad_fn, no_grad")

# The tutorial's x = torch.randn(2, 2, requires_grad=True), drawn once and shared with fnml.
torch.manual_seed(0)
X = torch.randn(2, 2)

# ------------------------------------------------------------------------------------- requires_grad
tour.section(
    "A tensor that requires grad",
    "fnml has no requires_grad flag: you say what to differentiate when you take the gradient.",
)


def torch_requires_grad():
    tensor_requires_grad = torch.tensor([1.0], requires_grad=True)
    tensor_result = tensor_requires_grad * 2
    tensor_result.backward()
    print(tensor_requires_grad.grad)
    return tensor_requires_grad.grad


def fnml_requires_grad():
    tensor_input = tensors.tensor([1.0])
    # out.backward() on a one-element output == the VJP with ones
    tensor_grad = grad.backward(lambda t: t * 2, tensor_input)
    print(tensor_grad)
    return tensor_grad


t, f = tour.compare("tensor([1.0], requires_grad=True) * 2, backward()", torch_requires_grad, fnml_requires_grad)
tour.check("grad of t * 2", t, f, tol=0.0)

# ------------------------------------------------------------------------------------- forward
tour.section("Building the computation", "torch records a graph as it runs; fnml writes it as a function.")


def torch_forward():
    torch.manual_seed(0)
    x = torch.randn(2, 2, requires_grad=True)
    print(x)
    y = x + 2
    z = y * y * 3
    out = z.mean()
    print(out)
    return out


def f(x):
    y = x + 2
    z = y * y * 3
    return z.mean()


def fnml_forward():
    x = tensors.from_torch(X)  # the same draw
    # def f(x):
    #     y = x + 2
    #     z = y * y * 3
    #     return z.mean()
    out = f(x)
    print(x)
    print(out)
    return out


t, f_out = tour.compare("x = randn(2, 2); y = x + 2; z = y * y * 3; out = z.mean()", torch_forward, fnml_forward)
tour.check("out", t, f_out, tol=0.0)


def torch_grad_fn():
    x = X.clone().requires_grad_(True)
    y = x + 2
    out = (y * y * 3).mean()
    node = out.grad_fn
    while node is not None:
        print(type(node).__name__)
        node = node.next_functions[0][0] if node.next_functions else None
    return out


def fnml_show_graph():
    x = tensors.from_torch(X)
    # the recorded computation, one line per operation
    grad.show_graph(f, x)
    return f(x)


t, f_out = tour.compare("The recorded graph (grad_fn chain / jaxpr)", torch_grad_fn, fnml_show_graph)
tour.check("out (graph inspection run)", t, f_out, tol=0.0)

# ------------------------------------------------------------------------------------- backward
tour.section("Backpropagation", "out.backward(); x.grad  ==  grad(f)(x). Both must agree to the last bit.")


def torch_backward():
    x = X.clone().requires_grad_(True)
    y = x + 2
    z = y * y * 3
    out = z.mean()
    out.backward()
    print(x.grad)
    return x.grad


def fnml_backward():
    x = tensors.from_torch(X)
    x_grad = grad.grad(f)(x)
    print(x_grad)
    return x_grad


t, f_out = tour.compare("out.backward(); print(x.grad)", torch_backward, fnml_backward)
tour.check("x.grad (exact)", t, f_out, tol=0.0)


def torch_backward_gradient():
    x = X.clone().requires_grad_(True)
    z = (x + 2) * (x + 2) * 3
    z.backward(gradient=torch.tensor([[1.0, 0.5], [0.0, -1.0]]))
    first = x.grad.clone()
    ((x + 2) * (x + 2) * 3).mean().backward()  # no zero_grad: accumulates
    print(first, x.grad, sep="\n")
    return first, x.grad


def fnml_backward_gradient():
    x = tensors.from_torch(X)
    v = tensors.tensor([[1.0, 0.5], [0.0, -1.0]])
    first = grad.backward(lambda x: (x + 2) * (x + 2) * 3, x, grad_outputs=v)
    total = first + grad.grad(f)(x)  # accumulation is an explicit sum
    print(first, total, sep="\n")
    return first, total


t, f_out = tour.compare(
    "Non-scalar output: backward(gradient=v), then a second backward",
    torch_backward_gradient,
    fnml_backward_gradient,
)
tour.check("vector-Jacobian product and accumulated .grad", t, f_out, tol=0.0)

# ------------------------------------------------------------------------------------- no_grad
tour.section(
    "Stopping gradients",
    "torch.no_grad() turns recording off for a block. JAX records nothing globally, so fnml marks values "
    "instead: no_grad(value) or @no_grad on a function (jax.lax.stop_gradient).",
)


def torch_no_grad():
    x = X.clone().requires_grad_(True)
    with torch.no_grad():
        y = x * 2
    print(y.requires_grad)
    (x * y).sum().backward()  # y is a constant for backward
    print(x.grad)
    return y, x.grad


def fnml_no_grad():
    x = tensors.from_torch(X)
    y = grad.no_grad(x * 2)
    x_grad = grad.grad(lambda x: (x * grad.no_grad(x * 2)).sum())(x)
    print(y)
    print(x_grad)
    return y, x_grad


t, f_out = tour.compare("with torch.no_grad(): y = x * 2", torch_no_grad, fnml_no_grad)
tour.check("no_grad value and gradient", t, f_out, tol=0.0)


def torch_gradcheck():
    x = torch.linspace(0.1, 1.0, 4, dtype=torch.float64, requires_grad=True)
    ok = torch.autograd.gradcheck(lambda x: (x.sin() * x).sum(), (x,))
    print(ok)
    return float(ok)


def fnml_gradcheck():
    x = jnp.linspace(0.1, 1.0, 4)
    ok = grad.gradcheck(lambda x: (jnp.sin(x) * x).sum(), x)
    print(ok)
    return float(ok)


t, f_out = tour.compare("Checking gradients by finite differences", torch_gradcheck, fnml_gradcheck)
tour.check("gradcheck verdict", t, f_out, tol=0.0)

tour.finish()
