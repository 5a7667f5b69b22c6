"""fnml.grad against torch.autograd: gradients, VJPs, accumulation, no_grad, gradcheck, graph display."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import assert_trees_close, one_torch_thread
from torch.autograd.gradcheck import GradcheckError as TorchGradcheckError

from fnml import grad as fgrad
from fnml import tensors


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():  # torch on tiny tensors: its thread pool only costs (helpers.one_torch_thread)
        yield


def test_tutorial_autograd_is_bit_identical(dtype, torch_dtype):
    x_t = torch.randn(2, 2, dtype=torch_dtype, requires_grad=True)
    y = x_t + 2
    z = y * y * 3
    out = z.mean()
    out.backward()

    def f(x):
        y = x + 2
        z = y * y * 3
        return z.mean()

    x = tensors.from_torch(x_t)
    value, g = fgrad.value_and_grad(f)(x)
    assert g.dtype == jnp.dtype(dtype)
    # The tutorial's gradient matches torch to 0 ulp, in both dtypes.
    np.testing.assert_array_equal(np.asarray(g), x_t.grad.numpy())
    assert_trees_close(value, out, dtype=dtype)


def test_tutorial_requires_grad_times_two():
    t = torch.tensor([1.0], requires_grad=True)
    (t * 2).backward()
    ours = fgrad.backward(lambda x: x * 2, tensors.tensor([1.0]))
    np.testing.assert_array_equal(np.asarray(ours), t.grad.numpy())


def _mlp(w, b, x):
    return jnp.tanh(x @ w + b).sum()


def _mlp_torch(w, b, x):
    return torch.tanh(x @ w + b).sum()


def test_grad_argnums_and_value_and_grad(dtype, torch_dtype):
    w, b, x = (torch.randn(*s, dtype=torch_dtype, requires_grad=True) for s in ((3, 2), (2,), (4, 3)))
    loss = _mlp_torch(w, b, x)
    loss.backward()
    w_j, b_j, x_j = (tensors.from_torch(v) for v in (w, b, x))
    assert_trees_close(fgrad.grad(_mlp)(w_j, b_j, x_j), w.grad, dtype=dtype)
    assert_trees_close(fgrad.grad(_mlp, argnums=(0, 2))(w_j, b_j, x_j), (w.grad, x.grad), dtype=dtype)
    value, grads = fgrad.value_and_grad(_mlp, argnums=(0, 1, 2))(w_j, b_j, x_j)
    assert_trees_close(value, loss, dtype=dtype)
    assert_trees_close(grads, (w.grad, b.grad, x.grad), dtype=dtype)


def test_has_aux(dtype, torch_dtype):
    t = torch.randn(5, dtype=torch_dtype, requires_grad=True)
    (t**3).sum().backward()

    def f(x):
        return (x**3).sum(), {"mean": x.mean()}

    x = tensors.from_torch(t)
    g, aux = fgrad.grad(f, has_aux=True)(x)
    assert_trees_close(g, t.grad, dtype=dtype)
    assert_trees_close(aux, {"mean": t.mean()}, dtype=dtype)
    (value, aux2), g2 = fgrad.value_and_grad(f, has_aux=True)(x)
    assert_trees_close((value, g2), ((t**3).sum(), t.grad), dtype=dtype)


@pytest.mark.parametrize("strategy", ["reverse-mode", "forward-mode"])
def test_jacobian_matches_torch(dtype, torch_dtype, strategy):
    t = torch.randn(4, dtype=torch_dtype)

    def f_torch(x):
        return torch.stack([x.sin().sum(), (x * x).prod(), x[0] * x[1]]) * x[:3]

    def f(x):
        return jnp.stack([jnp.sin(x).sum(), (x * x).prod(), x[0] * x[1]]) * x[:3]

    expected = torch.autograd.functional.jacobian(f_torch, t, strategy=strategy, vectorize=strategy == "forward-mode")
    ours = fgrad.jacobian(f, strategy=strategy)(tensors.from_torch(t))
    assert ours.shape == (3, 4)
    assert_trees_close(ours, expected, dtype=dtype)


def test_hessian_matches_torch(dtype, torch_dtype):
    t = torch.randn(3, dtype=torch_dtype)
    expected = torch.autograd.functional.hessian(lambda x: (x.sin() * x.sum() ** 2).sum(), t)
    ours = fgrad.hessian(lambda x: (jnp.sin(x) * x.sum() ** 2).sum())(tensors.from_torch(t))
    assert_trees_close(ours, expected, dtype=dtype)


def test_backward_vector_jacobian_product(dtype, torch_dtype):
    x_t = torch.randn(3, dtype=torch_dtype, requires_grad=True)
    w_t = torch.randn(3, dtype=torch_dtype, requires_grad=True)
    v = torch.randn(3, dtype=torch_dtype)
    (x_t**2 * w_t).backward(gradient=v)
    x, w = tensors.from_torch(x_t), tensors.from_torch(w_t)
    gx, gw = fgrad.backward(lambda x, w: x**2 * w, x, w, grad_outputs=tensors.from_torch(v))
    assert_trees_close((gx, gw), (x_t.grad, w_t.grad), dtype=dtype)
    only_w = fgrad.backward(lambda x, w: x**2 * w, x, w, grad_outputs=tensors.from_torch(v), argnums=1)
    assert_trees_close(only_w, w_t.grad, dtype=dtype)


def test_backward_pytree_output():
    x_t = torch.randn(2, dtype=torch.float64, requires_grad=True)
    a, b = x_t.sin(), x_t.sum()
    torch.autograd.backward([a, b], [torch.ones(2, dtype=torch.float64) * 0.5, torch.tensor(2.0, dtype=torch.float64)])
    ours = fgrad.backward(
        lambda x: (jnp.sin(x), x.sum()),
        tensors.from_torch(x_t),
        grad_outputs=(jnp.full(2, 0.5), jnp.asarray(2.0)),
    )
    assert_trees_close(ours, x_t.grad)


def test_backward_errors_like_torch():
    x_t = torch.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        (x_t * 2).backward()
    x = tensors.from_torch(x_t)
    with pytest.raises(RuntimeError, match=r"grad can be implicitly created only for scalar outputs: .*\(3,\)"):
        fgrad.backward(lambda x: x * 2, x)
    with pytest.raises(
        ValueError,
        match=r"mismatch in shape: grad_outputs\[0\] has shape \(2,\) and output\[0\] has shape \(3,\)",
    ):
        fgrad.backward(lambda x: x * 2, x, grad_outputs=jnp.ones(2))
    with pytest.raises(ValueError, match="grad_outputs has structure"):
        fgrad.backward(lambda x: x * 2, x, grad_outputs=(jnp.ones(3), jnp.ones(3)))
    with pytest.raises(ValueError, match=r"argnums=5 is out of range for 1 argument"):
        fgrad.backward(lambda x: x.sum(), x, argnums=5)
    with pytest.raises(TypeError, match=r"pass the inputs to differentiate"):
        fgrad.backward(lambda: 1.0)


def test_accumulate_grad_sums_like_repeated_backward(dtype, torch_dtype):
    model = torch.nn.Linear(3, 2).to(torch_dtype)
    batches_t = [(torch.randn(4, 3, dtype=torch_dtype), torch.randn(4, 2, dtype=torch_dtype)) for _ in range(3)]
    for x, y in batches_t:  # no zero_grad between: .grad accumulates
        torch.nn.functional.mse_loss(model(x), y).backward()

    params = {
        "w": tensors.from_torch(model.weight.T),
        "b": tensors.from_torch(model.bias),
    }  # (out,in) -> (in,out)

    def loss(p, x, y):
        return ((x @ p["w"] + p["b"] - y) ** 2).mean()

    batches = [(tensors.from_torch(x), tensors.from_torch(y)) for x, y in batches_t]
    ours = fgrad.accumulate_grad(loss, params, batches)
    assert_trees_close(ours, {"w": model.weight.grad.T, "b": model.bias.grad}, dtype=dtype)
    # Continuing an existing sum == one more backward without zero_grad.
    x4, y4 = torch.randn(4, 3, dtype=torch_dtype), torch.randn(4, 2, dtype=torch_dtype)
    torch.nn.functional.mse_loss(model(x4), y4).backward()
    more = fgrad.accumulate_grad(loss, params, [(tensors.from_torch(x4), tensors.from_torch(y4))], grads=ours)
    assert_trees_close(more, {"w": model.weight.grad.T, "b": model.bias.grad}, dtype=dtype)


def test_accumulate_grad_single_argument_batches_and_errors():
    g = fgrad.accumulate_grad(
        lambda p, x: (p * x).sum(), jnp.ones(2), [jnp.asarray([1.0, 2.0]), jnp.asarray([3.0, 4.0])]
    )
    np.testing.assert_array_equal(g, [4.0, 6.0])
    with pytest.raises(ValueError, match="accumulate_grad: batches is empty"):
        fgrad.accumulate_grad(lambda p, x: (p * x).sum(), jnp.ones(2), [])


def test_no_grad_on_values_and_as_decorator(dtype, torch_dtype):
    t = torch.randn(3, dtype=torch_dtype, requires_grad=True)
    with torch.no_grad():
        doubled = t * 2
    (t * doubled).sum().backward()
    assert not doubled.requires_grad

    x = tensors.from_torch(t)
    g_value = jax.grad(lambda x: (x * fgrad.no_grad(x * 2)).sum())(x)

    @fgrad.no_grad
    def times_two(v):
        return v * 2

    g_decorated = jax.grad(lambda x: (x * times_two(x)).sum())(x)
    assert_trees_close(g_value, t.grad, dtype=dtype)
    assert_trees_close(g_decorated, t.grad, dtype=dtype)
    assert times_two.__name__ == "times_two"
    tree = fgrad.no_grad({"a": x, "b": [x]})
    assert jax.tree_util.tree_structure(tree) == jax.tree_util.tree_structure({"a": x, "b": [x]})


def test_no_grad_without_argument_explains():
    with pytest.raises(TypeError, match=r"no_grad\(\) takes a value or a function.*cannot stop gradients in JAX"):
        fgrad.no_grad()


def test_gradcheck_passes_like_torch():
    x_t = torch.linspace(0.1, 1.0, 5, dtype=torch.float64, requires_grad=True)
    w_t = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: (x.sin() * x) @ w, (x_t, w_t))
    x, w = tensors.from_torch(x_t), tensors.from_torch(w_t)
    assert fgrad.gradcheck(lambda x, w: (jnp.sin(x) * x) @ w, x, w) is True
    # float32 inputs and integer inputs (not differentiated) are fine, outputs may be pytrees.
    assert fgrad.gradcheck(lambda x, n: {"a": x**n, "b": x.sum()}, x.astype(jnp.float32), jnp.asarray(3))


def _wrong_square():
    """x**2 with a deliberately wrong backward (3x instead of 2x)."""

    @jax.custom_vjp
    def square(x):
        return x**2

    square.defvjp(lambda x: (x**2, x), lambda x, g: (3 * x * g,))
    return square


class _WrongSquareTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**2

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x * g


def test_gradcheck_catches_a_wrong_custom_vjp():
    x_t = torch.linspace(0.5, 1.5, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(TorchGradcheckError, match="Jacobian mismatch for output 0 with respect to input 0"):
        torch.autograd.gradcheck(_WrongSquareTorch.apply, (x_t,))
    assert torch.autograd.gradcheck(_WrongSquareTorch.apply, (x_t,), raise_exception=False) is False

    square = _wrong_square()
    x = tensors.from_torch(x_t)
    with pytest.raises(fgrad.GradcheckError, match="Jacobian mismatch for output 0 with respect to input 0"):
        fgrad.gradcheck(square, x)
    assert fgrad.gradcheck(square, x, raise_exception=False) is False
    assert issubclass(fgrad.GradcheckError, RuntimeError)


def test_gradcheck_input_errors():
    with pytest.raises(ValueError, match="no floating-point input"):
        fgrad.gradcheck(lambda n: n * 2, jnp.arange(3))
    with pytest.raises(ValueError, match="gradcheck: eps must be > 0 and finite, got eps=-1"):
        fgrad.gradcheck(jnp.sin, jnp.ones(2), eps=-1)
    with pytest.raises(ValueError, match="gradcheck: eps must be > 0"):
        fgrad.gradcheck(jnp.sin, jnp.ones(2), eps=0)
    with pytest.raises(TypeError, match=r"gradcheck: atol must be a number, got '1e-5' \(str\)"):
        fgrad.gradcheck(jnp.sin, jnp.ones(2), atol="1e-5")
    with pytest.raises(ValueError, match="gradcheck: rtol must be >= 0 and finite, got rtol=-0.1"):
        fgrad.gradcheck(jnp.sin, jnp.ones(2), rtol=-0.1)
    with pytest.raises(TypeError, match=r"gradcheck: raise_exception must be a bool \(True or False\), got 0"):
        fgrad.gradcheck(jnp.sin, jnp.ones(2), raise_exception=0)
    with pytest.raises(TypeError, match="gradcheck: pass at least one input"):
        fgrad.gradcheck(jnp.sin)


def test_show_graph_prints_the_recorded_computation(capsys):
    def f(x):
        y = x + 2
        z = y * y * 3
        return z.mean()

    text = fgrad.show_graph(f, jnp.ones((2, 2), jnp.float32))
    printed = capsys.readouterr().out
    assert text in printed
    for op in ("add", "mul", "reduce_sum", "div", "f32[2,2]"):
        assert op in text
    backward_text = fgrad.show_graph(f, jnp.ones((2, 2), jnp.float32), backward=True)
    assert backward_text != text and "mul" in backward_text


@pytest.mark.parametrize(
    "transform", [fgrad.grad, fgrad.value_and_grad, fgrad.jacobian, fgrad.hessian], ids=lambda t: t.__name__
)
def test_transform_argument_errors(transform):
    with pytest.raises(TypeError, match=f"{transform.__name__}: f must be a callable"):
        transform(3.0)
    with pytest.raises(
        TypeError,
        match=f"{transform.__name__}: argnums must be an int or a sequence of ints, got argnums='x'",
    ):
        transform(jnp.sin, argnums="x")
    with pytest.raises(ValueError, match=f"{transform.__name__}: argnums must name at least one argument"):
        transform(jnp.sin, argnums=())
    if transform is not fgrad.hessian:
        with pytest.raises(TypeError, match=f"{transform.__name__}: has_aux must be a bool .*got 1 \\(int\\)"):
            transform(jnp.sin, has_aux=1)


def test_other_callable_errors():
    with pytest.raises(
        ValueError,
        match="jacobian: strategy must be one of 'reverse-mode', 'forward-mode'; got strategy='central'",
    ):
        fgrad.jacobian(jnp.sin, strategy="central")
    for fn, name in (
        (fgrad.backward, "backward"),
        (fgrad.accumulate_grad, "accumulate_grad"),
        (fgrad.show_graph, "show_graph"),
    ):
        with pytest.raises(TypeError, match=f"{name}: f must be a callable"):
            fn(1, jnp.ones(2), jnp.ones(2))
    with pytest.raises(TypeError, match="gradcheck: f must be a callable"):
        fgrad.gradcheck(1, jnp.ones(2))
