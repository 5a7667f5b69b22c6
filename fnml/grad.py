"""Autograd, functionally: gradients are functions of functions, not attributes of tensors.

PyTorch equivalent: ``torch.autograd`` (``.backward()``, ``.grad``, ``torch.no_grad``,
``torch.autograd.functional.jacobian``/``hessian``, ``torch.autograd.gradcheck``, ``grad_fn``).

The mapping in one line each:

* ``x.requires_grad_(); out = f(x); out.backward(); x.grad``  ->  ``grad(f)(x)``
* ``out.backward(gradient=v)``                                ->  ``backward(f, x, grad_outputs=v)``
* two ``.backward()`` calls without ``zero_grad()``           ->  ``accumulate_grad(f, params, batches)``
* ``with torch.no_grad(): y = x * 2``                         ->  ``y = no_grad(x * 2)`` or ``@no_grad``
* ``out.grad_fn`` (the recorded graph)                        ->  ``show_graph(f, x)`` (the jaxpr)

There is no hidden tape: JAX traces ``f`` when a transform asks for it, so nothing is recorded
unless you differentiate, and nothing needs zeroing afterwards.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnml._validation import check_bool, check_choice, check_non_negative, check_positive

__all__ = [
    "GradcheckError",
    "accumulate_grad",
    "backward",
    "grad",
    "gradcheck",
    "hessian",
    "jacobian",
    "no_grad",
    "show_graph",
    "value_and_grad",
]

Argnums = int | Sequence[int]


class GradcheckError(RuntimeError):
    """Analytical and numerical Jacobians differ (torch: ``torch.autograd.gradcheck.GradcheckError``)."""


def _check_argnums(argnums: Any, where: str) -> None:
    """argnums is an int or a non-empty sequence of ints (not bools)."""
    items = (argnums,) if isinstance(argnums, (int, np.integer)) else argnums
    ok = isinstance(items, (tuple, list)) and all(
        isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)) for i in items
    )
    if not ok:
        raise TypeError(f"{where}: argnums must be an int or a sequence of ints, got argnums={argnums!r}")
    if not items:
        raise ValueError(f"{where}: argnums must name at least one argument, got argnums={argnums!r}")


def _check_transform(f: Any, argnums: Any, has_aux: Any, where: str) -> None:
    """The shared arguments of grad / value_and_grad / jacobian / hessian."""
    _check_callable(f, where)
    _check_argnums(argnums, where)
    check_bool("has_aux", has_aux, where=where)


def _check_callable(f: Any, where: str) -> None:
    """The transform's first argument is the function to differentiate."""
    if not callable(f):
        raise TypeError(f"{where}: f must be a callable (the function to differentiate), got {type(f).__name__}")


# ----------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------


def grad(f: Callable[..., Any], argnums: Argnums = 0, *, has_aux: bool = False) -> Callable[..., Any]:
    """The gradient function of a scalar-valued ``f``: ``grad(f)(x) == df/dx``.

    PyTorch equivalent: ``out = f(x); out.backward(); x.grad`` (or ``torch.func.grad(f)``).

    ``argnums`` picks the differentiated arguments (torch: which tensors have ``requires_grad``);
    a tuple returns a tuple of gradients. With ``has_aux=True``, ``f`` returns ``(out, aux)`` and
    the result is ``(grad, aux)``. Gradients are returned, never accumulated into ``.grad``.
    Like ``out.backward()`` without an argument, ``f`` must return a scalar.

    >>> x = jnp.array([[1.0, 1.0], [1.0, 1.0]])
    >>> print(grad(lambda x: ((x + 2) ** 2 * 3).mean())(x))  # the tutorial's x.grad: 6 (x + 2) / 4
    [[4.5 4.5]
     [4.5 4.5]]
    >>> dw, db = grad(lambda w, b: (w * 3.0 + b) ** 2, argnums=(0, 1))(1.0, 0.5)
    >>> float(dw), float(db)
    (21.0, 7.0)
    """
    _check_transform(f, argnums, has_aux, "grad")
    return jax.grad(f, argnums=argnums, has_aux=has_aux)


def value_and_grad(f: Callable[..., Any], argnums: Argnums = 0, *, has_aux: bool = False) -> Callable[..., Any]:
    """A function returning ``(f(x), df/dx)`` from one forward and one backward pass.

    PyTorch equivalent: ``loss = f(x); loss.backward(); (loss, x.grad)``.

    With ``has_aux=True``, ``f`` returns ``(out, aux)`` and the result is ``((out, aux), grad)``.

    >>> loss, g = value_and_grad(lambda w: (w * 3.0 - 1.0) ** 2)(1.0)
    >>> float(loss), float(g)
    (4.0, 12.0)
    """
    _check_transform(f, argnums, has_aux, "value_and_grad")
    return jax.value_and_grad(f, argnums=argnums, has_aux=has_aux)


def jacobian(
    f: Callable[..., Any], argnums: Argnums = 0, *, has_aux: bool = False, strategy: str = "reverse-mode"
) -> Callable[..., Any]:
    """The Jacobian function of ``f``: ``jacobian(f)(x)`` has shape ``out.shape + x.shape``.

    PyTorch equivalent: ``torch.autograd.functional.jacobian(f, x, strategy=...)``
    (``torch.func.jacrev`` / ``jacfwd``). ``strategy="reverse-mode"`` (torch's default) uses
    :func:`jax.jacrev`, ``"forward-mode"`` :func:`jax.jacfwd`; the values are the same.

    >>> x = jnp.array([0.0, 1.0])
    >>> print(jnp.round(jacobian(jnp.sin)(x), 4))  # diag(cos(x))
    [[1.     0.    ]
     [0.     0.5403]]
    """
    _check_transform(f, argnums, has_aux, "jacobian")
    check_choice("strategy", strategy, ("reverse-mode", "forward-mode"), where="jacobian")
    if strategy == "reverse-mode":
        return jax.jacrev(f, argnums=argnums, has_aux=has_aux)
    return jax.jacfwd(f, argnums=argnums, has_aux=has_aux)


def hessian(f: Callable[..., Any], argnums: Argnums = 0) -> Callable[..., Any]:
    """The Hessian function of a scalar ``f``: shape ``x.shape + x.shape``.

    PyTorch equivalent: ``torch.autograd.functional.hessian(f, x)`` (``torch.func.hessian``);
    forward-over-reverse, like ``torch.func.hessian``.

    >>> print(hessian(lambda x: (x ** 3).sum())(jnp.array([1.0, 2.0])))  # diag(6 x)
    [[ 6.  0.]
     [ 0. 12.]]
    """
    _check_transform(f, argnums, False, "hessian")
    return jax.hessian(f, argnums=argnums)


def backward(f: Callable[..., Any], *args: Any, grad_outputs: Any = None, argnums: Argnums | None = None) -> Any:
    """Gradients of ``f(*args)`` weighted by ``grad_outputs``: the vector-Jacobian product.

    PyTorch equivalent: ``out = f(*args); out.backward(gradient=grad_outputs)`` then each
    argument's ``.grad`` (``torch.autograd.backward``).

    ``grad(args[i]) = sum_j grad_outputs[j] * d out[j] / d args[i]``. ``grad_outputs`` has the
    output's shape (and pytree structure); like torch it may be omitted only when the output has a
    single element, otherwise ``RuntimeError: grad can be implicitly created only for scalar
    outputs``. Returns one gradient per argument (a tuple when there are several), or for the
    arguments in ``argnums``. Nothing accumulates: call again and add, or see :func:`accumulate_grad`.

    >>> print(backward(lambda x: x * 2, jnp.array([1.0])))  # out.backward() on a one-element output
    [2.]
    >>> print(backward(lambda x: x ** 2, jnp.array([1.0, 2.0, 3.0]), grad_outputs=jnp.ones(3)))  # 2 x
    [2. 4. 6.]
    """
    _check_callable(f, "backward")
    if not args:
        raise TypeError("backward: pass the inputs to differentiate, backward(f, *args)")
    if argnums is None:
        selected: Argnums = tuple(range(len(args))) if len(args) > 1 else 0
    else:
        _check_argnums(argnums, "backward")
        selected = argnums
    indices = (selected,) if isinstance(selected, int) else tuple(selected)
    for i in indices:
        if not -len(args) <= i < len(args):
            raise ValueError(f"backward: argnums={argnums!r} is out of range for {len(args)} argument(s)")

    def partial_f(*chosen):
        full = list(args)
        for i, value in zip(indices, chosen):
            full[i] = value
        return f(*full)

    out, vjp_fn = jax.vjp(partial_f, *(args[i] for i in indices))
    out_leaves, out_tree = jax.tree_util.tree_flatten(out)
    if grad_outputs is None:
        for leaf in out_leaves:
            if jnp.size(leaf) != 1:
                raise RuntimeError(
                    "grad can be implicitly created only for scalar outputs: f returned shape "
                    f"{tuple(jnp.shape(leaf))}; pass grad_outputs= with that shape "
                    "(torch: out.backward(gradient))"
                )
        cotangent = jax.tree_util.tree_map(jnp.ones_like, out)
    else:
        given_leaves, given_tree = jax.tree_util.tree_flatten(grad_outputs)
        if given_tree != out_tree:
            raise ValueError(f"backward: grad_outputs has structure {given_tree}, but f returned {out_tree}")
        leaves = []
        for k, (given, leaf) in enumerate(zip(given_leaves, out_leaves)):
            if tuple(jnp.shape(given)) != tuple(jnp.shape(leaf)):
                raise ValueError(
                    f"backward: mismatch in shape: grad_outputs[{k}] has shape {tuple(jnp.shape(given))} "
                    f"and output[{k}] has shape {tuple(jnp.shape(leaf))}"
                )
            leaves.append(jnp.asarray(given, dtype=jnp.result_type(leaf)))
        cotangent = jax.tree_util.tree_unflatten(out_tree, leaves)
    grads = vjp_fn(cotangent)
    return grads[0] if isinstance(selected, int) else grads


def accumulate_grad(f: Callable[..., Any], params: Any, batches: Iterable[Any], *, grads: Any = None) -> Any:
    """Sum of ``grad(f)(params, *batch)`` over batches: what repeated ``.backward()`` leaves in ``.grad``.

    PyTorch equivalent::

        # no optimizer.zero_grad() between the calls: .grad accumulates
        for x, y in batches:
            criterion(model(x), y).backward()

    ``f(params, *batch) -> scalar``; a batch that is a tuple is unpacked into the arguments, any
    other batch is passed as one argument. ``grads`` continues an earlier sum (torch: ``.grad`` that
    was not zeroed). Gradients are added in batch order, as torch does. The gradient function is
    jitted once and reused for every batch of the same shapes.

    >>> loss_fn = lambda w, x, y: ((w * x - y) ** 2).sum()
    >>> g = accumulate_grad(loss_fn, 1.0, [(jnp.array([1.0]), jnp.array([0.0])), (jnp.array([2.0]), jnp.array([0.0]))])
    >>> float(g)  # 2 * 1 + 2 * 4: the sum of both batches' gradients, like two .backward() calls
    10.0
    """
    _check_callable(f, "accumulate_grad")
    grad_fn = jax.jit(jax.grad(f))
    total = grads
    for batch in batches:
        extra = batch if isinstance(batch, tuple) else (batch,)
        step = grad_fn(params, *extra)
        total = step if total is None else jax.tree_util.tree_map(jnp.add, total, step)
    if total is None:
        raise ValueError("accumulate_grad: batches is empty and no initial grads were given")
    return total


# ----------------------------------------------------------------------------------------------
# stopping gradients
# ----------------------------------------------------------------------------------------------


def no_grad(value_or_fn: Any = None, /) -> Any:
    """Stop gradients: of a value/pytree, or of every output of a decorated function.

    PyTorch equivalent: ``torch.no_grad()`` (and ``tensor.detach()``, ``requires_grad=False``).

    * ``no_grad(x * 2)``: the value with gradients stopped (:func:`jax.lax.stop_gradient` on every
      array of a pytree); differentiating through it gives zero.
    * ``@no_grad`` on a function (any callable, including an NNX module: ``no_grad(model)(x)``):
      the function's outputs are stopped, the counterpart of ``with torch.no_grad(): y = fn(x)``
      and of ``@torch.no_grad()``.

    Why there is no ``with no_grad():`` block: torch records operations on a global tape, and a
    ``with`` block switches that recording off. JAX records nothing globally: ``grad(f)`` traces
    ``f`` as a function, and a context manager inside ``f`` cannot change which *values* the traced
    function depends on (it runs once, at trace time, and has no handle on the arrays computed in
    its body). Stopping a gradient must therefore mark the values themselves, which is what this
    function does. Outside any transform nothing is recorded at all, so plain inference code needs
    no ``no_grad``. Calling ``no_grad()`` with no argument raises a TypeError saying this.

    >>> f = lambda x: (x * no_grad(x * 2)).sum()  # with torch.no_grad(): y = x * 2
    >>> print(grad(f)(jnp.array([1.0, 2.0])))  # only the first factor is differentiated
    [2. 4.]
    >>> @no_grad
    ... def predict(w, x):
    ...     return w * x
    >>> float(grad(lambda w: predict(w, 3.0))(1.0))
    0.0
    """
    if value_or_fn is None:
        raise TypeError(
            "no_grad() takes a value or a function: y = no_grad(x * 2) or @no_grad. A `with no_grad():` "
            "block cannot stop gradients in JAX (nothing is recorded globally; gradients are taken of "
            "functions), and outside grad() nothing is recorded, so inference needs no no_grad"
        )
    if callable(value_or_fn) and not isinstance(value_or_fn, jax.Array):
        fn = value_or_fn

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            return jax.lax.stop_gradient(fn(*args, **kwargs))

        return wrapped
    return jax.lax.stop_gradient(value_or_fn)


# ----------------------------------------------------------------------------------------------
# checking and inspecting
# ----------------------------------------------------------------------------------------------


def gradcheck(
    f: Callable[..., Any],
    *inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
) -> bool:
    """Compare ``f``'s automatic Jacobian with central finite differences, in float64.

    PyTorch equivalent: ``torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3,
    raise_exception=True)``.

    Every floating input is cast to float64 (JAX's x64 mode is switched on for the check if it is
    off); integer/bool inputs are passed through and not differentiated. For every input element
    ``x_i`` the numerical column is ``(f(x + eps e_i) - f(x - eps e_i)) / (2 eps)``; the analytical
    Jacobian comes from :func:`jax.jacrev`. They must satisfy ``|a - n| <= atol + rtol |n|``
    elementwise (torch's rule). On a mismatch: :class:`GradcheckError` naming the output and input
    and showing both Jacobians, or ``False`` with ``raise_exception=False``. ``f`` may return an
    array or a pytree of arrays.

    >>> gradcheck(lambda x: jnp.sin(x) * x, jnp.linspace(0.1, 1.0, 5))
    True
    >>> gradcheck(lambda x: jax.lax.stop_gradient(x) ** 2, jnp.array([1.0]), raise_exception=False)
    False
    """
    _check_callable(f, "gradcheck")
    if not inputs:
        raise TypeError("gradcheck: pass at least one input, gradcheck(f, *inputs)")
    check_positive("eps", eps, where="gradcheck")
    check_non_negative("atol", atol, where="gradcheck")
    check_non_negative("rtol", rtol, where="gradcheck")
    check_bool("raise_exception", raise_exception, where="gradcheck")
    with jax.enable_x64(True):
        return _gradcheck64(f, inputs, eps=eps, atol=atol, rtol=rtol, raise_exception=raise_exception)


def _gradcheck64(f, inputs, *, eps, atol, rtol, raise_exception) -> bool:
    """gradcheck's body, run with x64 enabled."""
    inputs = [np.asarray(x) for x in inputs]
    diff_index = [i for i, x in enumerate(inputs) if np.issubdtype(x.dtype, np.floating)]
    if not diff_index:
        raise ValueError("gradcheck: no floating-point input to differentiate (all inputs are integer/bool)")
    base = [x.astype(np.float64) if i in diff_index else x for i, x in enumerate(inputs)]

    def flat_outputs(*diff_values):
        full = list(base)
        for i, value in zip(diff_index, diff_values):
            full[i] = value
        leaves = jax.tree_util.tree_leaves(f(*full))
        return [jnp.ravel(jnp.asarray(leaf, dtype=jnp.float64)) for leaf in leaves]

    diff_inputs = [jnp.asarray(base[i]) for i in diff_index]
    analytical = jax.jacrev(flat_outputs, argnums=tuple(range(len(diff_index))))(*diff_inputs)
    # analytical[out][in]: (out_size, *in_shape)
    outputs = flat_outputs(*diff_inputs)
    for in_pos, i in enumerate(diff_index):
        x = base[i]
        numerical = [np.zeros((out.size, x.size)) for out in outputs]  # (out_size, in_size) per output
        for k in range(x.size):
            plus, minus = x.copy().ravel(), x.copy().ravel()
            plus[k] += eps
            minus[k] -= eps
            args_plus = [jnp.asarray(v) for v in diff_inputs]
            args_minus = [jnp.asarray(v) for v in diff_inputs]
            args_plus[in_pos] = jnp.asarray(plus.reshape(x.shape))  # flat -> input shape
            args_minus[in_pos] = jnp.asarray(minus.reshape(x.shape))  # flat -> input shape
            for o, (hi, lo) in enumerate(zip(flat_outputs(*args_plus), flat_outputs(*args_minus))):
                numerical[o][:, k] = (np.asarray(hi) - np.asarray(lo)) / (2 * eps)
        for o in range(len(outputs)):
            exact = np.asarray(analytical[o][in_pos]).reshape(outputs[o].size, x.size)  # (out, *in) -> (out, in)
            if not np.all(np.abs(exact - numerical[o]) <= atol + rtol * np.abs(numerical[o])):
                if not raise_exception:
                    return False
                raise GradcheckError(
                    f"Jacobian mismatch for output {o} with respect to input {i},\n"
                    f"numerical:{numerical[o]}\nanalytical:{exact}\n"
                    f"(max |difference| {np.max(np.abs(exact - numerical[o])):.3g}; "
                    f"atol={atol}, rtol={rtol}, eps={eps})"
                )
    return True


def show_graph(f: Callable[..., Any], *args: Any, backward: bool = False, **kwargs: Any) -> str:
    """Print (and return) the computation ``f`` records for these inputs, as a readable jaxpr.

    PyTorch equivalent: walking ``out.grad_fn`` / ``grad_fn.next_functions`` (the recorded graph),
    or ``torch.fx`` tracing.

    JAX records a function by tracing it into a jaxpr: one line per primitive operation, with the
    shapes and dtypes of every intermediate. ``backward=True`` shows the gradient computation of a
    scalar ``f`` instead (the graph ``out.backward()`` would walk).

    >>> text = show_graph(lambda x: ((x + 2) * 3).mean(), jnp.ones((2, 2), jnp.float32))
    { lambda ; a:f32[2,2]. let
        b:f32[2,2] = add a 2.0...
    >>> "reduce_sum" in text
    True
    """
    _check_callable(f, "show_graph")
    target = jax.grad(f) if backward else f
    text = str(jax.make_jaxpr(target)(*args, **kwargs))
    print(text)
    return text
