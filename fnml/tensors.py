"""Tensors, functionally: creation, dtypes, torch <-> jax conversion and layout helpers.

PyTorch equivalent: ``torch.tensor``, ``torch.zeros``/``ones``/``full``/``arange``/``randn``/``rand``,
``torch.from_numpy``, ``Tensor.numpy()``, ``Tensor.clone()``/``.detach()``/``.to()``.

fnml arrays are plain ``jax.Array`` values. Three differences from torch tensors shape this module:

* **Immutable.** A ``jax.Array`` never changes in place, so ``clone`` is only needed to get a
  distinct buffer, and "in-place" torch code becomes ``x = x.at[i].set(v)``.
* **No ``requires_grad``.** What is differentiated is chosen when you call :func:`fnml.grad.grad`
  (by ``argnums``), not stored on the array; ``detach`` is :func:`jax.lax.stop_gradient`.
* **Explicit randomness.** :func:`randn` and :func:`rand` take a ``jax.random`` key first.

Dtypes and JAX's x64 mode
-------------------------
torch always has int64 and float64. JAX only has them when ``jax_enable_x64`` is on (it is off by
default). With x64 off, fnml never shrinks a value silently:

* an int64/float64 *array* or an explicitly requested int64/float64 ``dtype`` whose values fit
  in 32 bits becomes int32/float32 and a :class:`PrecisionWarning` says so;
* values that do not fit (int64 outside the int32 range, finite float64 beyond float32's range)
  raise :class:`PrecisionError`, whose message names the fix
  ``jax.config.update('jax_enable_x64', True)``.

Python numbers without a ``dtype`` follow torch's defaults where JAX can hold them: floats become
float32 (``torch.get_default_dtype()``), integers become int64 with x64 on and int32 (range-checked,
no warning) with x64 off, booleans become bool.

torch is imported lazily, inside the functions that need it: ``import fnml.tensors`` never imports it.
The conversions and the dtype table are those of the one torch bridge (``fnml._torch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnml import _torch
from fnml import device as _device
from fnml._torch import SUPPORTED_DTYPES, PrecisionError, PrecisionWarning
from fnml._validation import check_bool, check_int, check_key, check_ndim

__all__ = [
    "PrecisionError",
    "PrecisionWarning",
    "SUPPORTED_DTYPES",
    "arange",
    "canonical_dtype",
    "clone",
    "detach",
    "from_numpy",
    "from_torch",
    "full",
    "jax_dtype",
    "nchw_to_nhwc",
    "nhwc_to_nchw",
    "ones",
    "rand",
    "randn",
    "tensor",
    "to",
    "to_numpy",
    "to_torch",
    "torch_dtype",
    "zeros",
]

# torch's default floating dtype (torch.get_default_dtype()); JAX can always hold it.
_DEFAULT_FLOAT = np.dtype("float32")


# ----------------------------------------------------------------------------------------------
# dtypes
# ----------------------------------------------------------------------------------------------


def jax_dtype(dtype: Any) -> np.dtype:
    """The JAX (numpy) dtype for a torch dtype, numpy/jax dtype or name.

    PyTorch equivalent: none (the inverse of :func:`torch_dtype`); ``torch.float32 -> jnp.float32``.

    Mapped both ways: bool, int8, uint8, int16, int32, int64, float16, bfloat16, float32, float64.
    This is the mapping only: with x64 off JAX *holds* int64/float64 as 32-bit, see
    :func:`canonical_dtype`.

    >>> import torch
    >>> print(jax_dtype(torch.bfloat16), jax_dtype("double"), jax_dtype(torch.long))
    bfloat16 float64 int64
    """
    return _torch.jax_dtype(dtype)


def torch_dtype(dtype: Any):
    """The torch dtype for a JAX/numpy dtype, torch dtype or name.

    PyTorch equivalent: none (the inverse of :func:`jax_dtype`); ``jnp.bfloat16 -> torch.bfloat16``.

    >>> torch_dtype(jnp.int32), torch_dtype("bfloat16")
    (torch.int32, torch.bfloat16)
    """
    return _torch.torch_dtype(dtype)


def canonical_dtype(dtype: Any) -> np.dtype:
    """The dtype JAX will actually hold for ``dtype``: int64/float64 -> int32/float32 when x64 is off.

    PyTorch equivalent: none (torch always has 64-bit types).

    >>> canonical_dtype("float32")
    dtype('float32')
    >>> canonical_dtype("int64")  # dtype('int32') when x64 is off
    dtype('int...')
    """
    return _torch.canonical_dtype(dtype)


def _to_jax_numpy(values: np.ndarray, dtype: Any | None, *, what: str) -> np.ndarray:
    """Cast a numpy array to ``dtype`` (or keep its own), downcasting 64-bit types loudly if x64 is off."""
    source = np.dtype(values.dtype)
    wanted = jax_dtype(source if dtype is None else dtype)
    held = canonical_dtype(wanted)
    if held != wanted:
        # Check the values in the dtype they will be converted from, then shrink them.
        _torch.check_fits(values.astype(wanted, copy=False), wanted, held, what=what)
    return values.astype(held, copy=False)


def _place(array: jax.Array, device: Any | None) -> jax.Array:
    """Put ``array`` on ``device`` (a jax.Device or a torch-style string) if one is given."""
    return array if device is None else jax.device_put(array, _device.device(device))


# ----------------------------------------------------------------------------------------------
# creation
# ----------------------------------------------------------------------------------------------


def _shape(size: Sequence[Any], where: str) -> tuple[int, ...]:
    """torch accepts ``zeros(2, 3)`` and ``zeros((2, 3))``: normalise both to a tuple of ints."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    return tuple(check_int("size", dim, minimum=0, where=where) for dim in size)


def _creation_dtype(dtype: Any | None, *, what: str) -> np.dtype:
    """A requested creation dtype (default float32 like torch), shrunk with a warning if x64 is off."""
    wanted = _DEFAULT_FLOAT if dtype is None else jax_dtype(dtype)
    held = canonical_dtype(wanted)
    if held != wanted:
        _torch.warn_precision(
            f"{what}: dtype={wanted.name} became {held.name} because JAX's x64 mode is off; "
            f"to keep {wanted.name} use {_torch.X64_FIX}"
        )
    return held


def zeros(*size: Any, dtype: Any = None, device: Any = None) -> jax.Array:
    """An array of zeros.

    PyTorch equivalent: ``torch.zeros(*size, dtype=None, device=None)``.

    ``dtype`` defaults to float32 (torch's default dtype), whatever JAX's x64 mode. ``device`` is a
    ``jax.Device`` or a torch-style string (``"cpu"``, ``"cuda:0"``), see :func:`fnml.device.device`.

    >>> x = zeros(2, 3)  # or zeros((2, 3))
    >>> x.shape, x.dtype
    ((2, 3), dtype('float32'))
    """
    shape = _shape(size, "zeros")
    return jnp.zeros(shape, _creation_dtype(dtype, what="zeros"), device=_resolve(device))


def ones(*size: Any, dtype: Any = None, device: Any = None) -> jax.Array:
    """An array of ones.

    PyTorch equivalent: ``torch.ones(*size, dtype=None, device=None)``.

    >>> print(ones(2, 3, dtype="float16"))
    [[1. 1. 1.]
     [1. 1. 1.]]
    """
    shape = _shape(size, "ones")
    return jnp.ones(shape, _creation_dtype(dtype, what="ones"), device=_resolve(device))


def full(size: Sequence[int], fill_value: Any, *, dtype: Any = None, device: Any = None) -> jax.Array:
    """An array filled with ``fill_value``.

    PyTorch equivalent: ``torch.full(size, fill_value, dtype=None, device=None)``.

    Without ``dtype`` the dtype follows the fill value like torch: bool -> bool, int -> int64
    (int32 with x64 off, range-checked), float -> float32.

    >>> print(full((2, 2), 7.0))
    [[7. 7.]
     [7. 7.]]
    >>> full((2,), True).dtype
    dtype('bool')
    """
    shape = _shape((size,), "full")
    if dtype is None:
        value = _python_to_numpy(fill_value, what="full")
        return _place(jnp.full(shape, value, dtype=value.dtype), device)
    # Range-check the fill value in the requested dtype (warns / raises when x64 is off).
    value = _to_jax_numpy(np.asarray(fill_value, dtype=jax_dtype(dtype)), dtype, what="full")
    return jnp.full(shape, value, dtype=value.dtype, device=_resolve(device))


def arange(start: Any, end: Any = None, step: Any = 1, *, dtype: Any = None, device: Any = None) -> jax.Array:
    """Evenly spaced values in ``[start, end)``.

    PyTorch equivalent: ``torch.arange(start, end, step, dtype=None, device=None)``.

    Like torch: integer arguments give integers (int64; int32 with x64 off), any float gives float32.

    >>> print(arange(5))
    [0 1 2 3 4]
    >>> x = arange(0, 1, 0.25)
    >>> print(x, x.dtype)
    [0.   0.25 0.5  0.75] float32
    """
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_float = any(isinstance(v, float) for v in (start, end, step))
        dtype = _DEFAULT_FLOAT if is_float else _default_int()
        if not is_float:
            _python_to_numpy([start, end], what="arange")  # range check with x64 off
    else:
        dtype = _creation_dtype(dtype, what="arange")
    return jnp.arange(start, end, step, dtype=dtype, device=_resolve(device))


def randn(key: jax.Array, *size: Any, dtype: Any = None, device: Any = None) -> jax.Array:
    """Standard normal samples, drawn from an explicit ``jax.random`` key.

    PyTorch equivalent: ``torch.randn(*size, dtype=None, device=None)`` (global generator).

    Difference from torch: the numbers come from ``key`` (same key, same numbers, on any device);
    they can never equal torch's stream. To compare with torch, draw once and share the values
    (``from_torch(torch.randn(2, 3))``).

    >>> x = randn(jax.random.key(0), 2, 3)
    >>> x.shape, x.dtype
    ((2, 3), dtype('float32'))
    >>> bool((randn(jax.random.key(0), 2, 3) == x).all())  # same key, same numbers
    True
    """
    check_key("key", key, where="randn")
    shape = _shape(size, "randn")
    return _place(jax.random.normal(key, shape, _creation_dtype(dtype, what="randn")), device)


def rand(key: jax.Array, *size: Any, dtype: Any = None, device: Any = None) -> jax.Array:
    """Uniform samples in ``[0, 1)``, drawn from an explicit ``jax.random`` key.

    PyTorch equivalent: ``torch.rand(*size, dtype=None, device=None)``; same key caveat as :func:`randn`.

    >>> u = rand(jax.random.key(0), 4)
    >>> u.shape, bool(((u >= 0) & (u < 1)).all())
    ((4,), True)
    """
    check_key("key", key, where="rand")
    shape = _shape(size, "rand")
    return _place(jax.random.uniform(key, shape, _creation_dtype(dtype, what="rand")), device)


def tensor(data: Any, *, dtype: Any = None, device: Any = None) -> jax.Array:
    """A new array from Python data, a numpy array, a jax array or a torch tensor.

    PyTorch equivalent: ``torch.tensor(data, dtype=None, device=None)``.

    Python numbers follow torch's defaults (floats float32, ints int64 / int32 with x64 off, bools
    bool); arrays keep their dtype (64-bit ones shrink with a :class:`PrecisionWarning` when x64 is
    off, or raise :class:`PrecisionError` if their values do not fit). There is no
    ``requires_grad``: differentiate with :func:`fnml.grad.grad` instead.

    >>> x = tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> print(x, x.dtype)
    [[1. 2.]
     [3. 4.]] float32
    >>> tensor([True, False]).dtype
    dtype('bool')
    """
    if _torch.is_tensor(data):
        out = from_torch(data, copy=True)
        return _place(out if dtype is None else to(out, dtype=dtype), device)
    if isinstance(data, (jax.Array, np.ndarray, np.generic)):
        return _place(jnp.asarray(_to_jax_numpy(np.asarray(data), dtype, what="tensor")), device)
    if dtype is None:
        values = _python_to_numpy(data, what="tensor")
    else:
        values = _to_jax_numpy(np.asarray(data, dtype=jax_dtype(dtype)), dtype, what="tensor")
    return jnp.asarray(values, device=_resolve(device))


def from_numpy(array: np.ndarray, *, dtype: Any = None, device: Any = None) -> jax.Array:
    """A jax array with the values and dtype of a numpy array.

    PyTorch equivalent: ``torch.from_numpy(ndarray)``.

    Difference from torch: torch shares memory with the numpy array; a jax array is immutable, so
    fnml copies (later writes to ``array`` do not show in the result). With x64 off, numpy's default
    int64/float64 become int32/float32 with a :class:`PrecisionWarning` (or :class:`PrecisionError`
    if values do not fit); pass ``dtype=`` to choose explicitly.

    >>> x = from_numpy(np.array([[1.5, 2.5]], dtype=np.float32))
    >>> print(x, x.dtype)
    [[1.5 2.5]] float32
    >>> from_numpy(np.array([1, 2]), dtype="int32").dtype  # np.array's int64, stated explicitly
    dtype('int32')
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: array must be a numpy.ndarray, got {type(array).__name__}")
    values = _to_jax_numpy(array, dtype, what="from_numpy")
    return jnp.array(values, device=_resolve(device))  # jnp.array copies


def to_numpy(array: Any, *, copy: bool = False) -> np.ndarray:
    """A numpy array with the values of a jax array (or a torch tensor).

    PyTorch equivalent: ``tensor.numpy()`` (``tensor.detach().cpu().numpy()``).

    Device arrays are copied to the host. For a CPU jax array the result may share memory and is
    then read-only (jax arrays are immutable); pass ``copy=True`` for a writable copy. bfloat16
    comes back as ``ml_dtypes.bfloat16``.

    >>> to_numpy(ones(2))
    array([1., 1.], dtype=float32)
    >>> to_numpy(ones(2), copy=True).flags.writeable
    True
    """
    check_bool("copy", copy, where="to_numpy")
    if isinstance(array, jax.core.Tracer):
        raise TypeError("to_numpy: got a traced value; it cannot leave jit/grad. Call it outside the transform")
    values = _torch.as_numpy(array)
    return values.copy() if copy else values


# ----------------------------------------------------------------------------------------------
# torch <-> jax
# ----------------------------------------------------------------------------------------------


def from_torch(tensor: Any, *, copy: bool = False, device: Any = None) -> jax.Array:
    """A jax array with the values of a torch tensor, zero-copy through DLPack where possible.

    PyTorch equivalent: none (the bridge into fnml); counterpart of ``tensor.numpy()``.

    * ``requires_grad`` tensors are detached first (their values only; autograd stays in torch).
    * Non-contiguous tensors (``t.T``, slices) are made contiguous first (a copy), so the values
      are read in logical order.
    * bool and bfloat16 travel through DLPack unchanged.
    * int64/float64 with x64 off: checked and converted to int32/float32 with a
      :class:`PrecisionWarning`, or :class:`PrecisionError` if values do not fit (JAX's own DLPack
      import would silently wrap them).
    * Without ``copy=True`` the result may share memory with ``tensor``: JAX assumes it never
      changes, so do not modify the tensor in place afterwards (or pass ``copy=True``).

    A CUDA tensor arrives on the matching JAX GPU; ``device=`` moves the result afterwards.

    >>> import torch
    >>> x = from_torch(torch.ones(2, 3, requires_grad=True))  # detached; values only
    >>> print(x, x.dtype)
    [[1. 1. 1.]
     [1. 1. 1.]] float32
    """
    if not _torch.is_tensor(tensor):
        raise TypeError(f"from_torch: tensor must be a torch.Tensor, got {type(tensor).__name__}")
    check_bool("copy", copy, where="from_torch")
    return _place(_torch.to_jax(tensor, copy=copy, what="from_torch"), device)


def to_torch(array: Any, *, copy: bool = False, requires_grad: bool = False):
    """A torch tensor with the values of a jax array, zero-copy through DLPack where possible.

    PyTorch equivalent: ``torch.from_numpy(...)`` / ``torch.from_dlpack(...)``.

    The tensor is on the array's device (a JAX GPU array becomes a CUDA tensor when torch has CUDA;
    otherwise the values go through host memory). Without ``copy=True`` it may share the jax
    array's memory: modifying it in place would change an immutable jax array, so pass
    ``copy=True`` before in-place torch work (``optimizer.step()``, ``add_``...).
    ``requires_grad=True`` makes the result a leaf that records autograd (a copy, like torch).

    >>> to_torch(ones(2, 3))
    tensor([[1., 1., 1.],
            [1., 1., 1.]])
    >>> to_torch(ones(2), requires_grad=True)
    tensor([1., 1.], requires_grad=True)
    """
    import torch

    check_bool("copy", copy, where="to_torch")
    check_bool("requires_grad", requires_grad, where="to_torch")
    if isinstance(array, jax.core.Tracer):
        raise TypeError("to_torch: got a traced value; it cannot leave jit/grad. Call it outside the transform")
    if isinstance(array, (np.ndarray, np.generic, int, float, bool)):
        array = jnp.asarray(array)
    if not isinstance(array, jax.Array):
        raise TypeError(f"to_torch: array must be a jax.Array (or numpy array), got {type(array).__name__}")
    torch_dtype(array.dtype)  # unsupported dtypes fail here with the list of supported ones
    try:
        out = torch.from_dlpack(array)
    except (RuntimeError, TypeError, ValueError, BufferError):
        out = _torch.to_torch(array)  # through host memory (bfloat16 via its bits)
    if copy or requires_grad:
        out = out.clone()
    return out.requires_grad_(True) if requires_grad else out


# ----------------------------------------------------------------------------------------------
# clone / detach / to
# ----------------------------------------------------------------------------------------------


def clone(array: Any) -> Any:
    """A copy of an array (or of every array in a pytree) in a new buffer.

    PyTorch equivalent: ``tensor.clone()``.

    jax arrays are immutable, so where torch needs ``clone()`` to protect a value from later
    in-place writes, plain assignment (``y = x``) is already safe in fnml; a new buffer only
    matters before donating ``x`` to a jitted function. Unlike torch's clone, the result is not
    connected to ``x`` in any graph (there is no graph): differentiating through it is identity.

    >>> x = ones(3)
    >>> y = clone(x)  # same values, separate memory
    >>> bool((y == x).all()), y is x
    (True, False)
    """
    return jax.tree_util.tree_map(jnp.copy, array)


def detach(tree: Any) -> Any:
    """The same values with gradients stopped (every array in a pytree).

    PyTorch equivalent: ``tensor.detach()``; this is :func:`jax.lax.stop_gradient`.

    Under :func:`fnml.grad.grad`, nothing flows back through the result. Outside a transform it
    returns the values unchanged (there is no graph to cut). See also :func:`fnml.grad.no_grad`.

    >>> f = lambda x: (x * detach(x)).sum()  # d/dx treats detach(x) as a constant
    >>> print(jax.grad(f)(jnp.array([1.0, 2.0])))
    [1. 2.]
    """
    return jax.lax.stop_gradient(tree)


def to(array: Any, *args: Any, dtype: Any = None, device: Any = None) -> Any:
    """Convert dtype and/or move to a device, returning a new array (or pytree).

    PyTorch equivalent: ``tensor.to(device)``, ``tensor.to(dtype)``, ``tensor.to(device, dtype)``.

    Positional arguments are read like torch's: a dtype (torch, numpy, jax or a name) or a device
    (``jax.Device`` or a string such as ``"cuda"``). A dtype change to int64/float64 with x64 off
    shrinks loudly (:class:`PrecisionWarning`) instead of silently. Unlike ``Tensor.to`` there is
    no ``non_blocking``: JAX transfers are already asynchronous.

    >>> import torch
    >>> y = to(ones(2), "cpu", torch.float16)  # == to(x, device="cpu", dtype="float16")
    >>> print(y.dtype, y.device)
    float16 cpu:0
    """
    for arg in args:
        if isinstance(arg, (str, jax.Device)) and not _torch.is_dtype_name(arg):
            if device is not None:
                raise TypeError(f"to: device given twice ({device!r} and {arg!r})")
            device = arg
        else:
            if dtype is not None:
                raise TypeError(f"to: dtype given twice ({dtype!r} and {arg!r})")
            dtype = arg
    out = array
    if dtype is not None:
        out = jax.tree_util.tree_map(lambda leaf: _astype(leaf, dtype), out)
    if device is not None:
        out = _device.to(out, device)
    return out


# ----------------------------------------------------------------------------------------------
# layout helpers
# ----------------------------------------------------------------------------------------------


def nchw_to_nhwc(x: Any) -> jax.Array:
    """Channels-first to channels-last: ``(N, C, H, W) -> (N, H, W, C)`` (or ``(C, H, W) -> (H, W, C)``).

    PyTorch equivalent: ``x.permute(0, 2, 3, 1)``; torch conv layers take NCHW, fnml's take NHWC.

    >>> nchw_to_nhwc(zeros(8, 3, 32, 32)).shape
    (8, 32, 32, 3)
    """
    shape = tuple(np.shape(x))
    check_ndim("x", shape, (3, 4), where="nchw_to_nhwc")
    if len(shape) == 4:
        return jnp.transpose(x, (0, 2, 3, 1))  # (N, C, H, W) -> (N, H, W, C)
    return jnp.transpose(x, (1, 2, 0))  # (C, H, W) -> (H, W, C)


def nhwc_to_nchw(x: Any) -> jax.Array:
    """Channels-last to channels-first: ``(N, H, W, C) -> (N, C, H, W)`` (or ``(H, W, C) -> (C, H, W)``).

    PyTorch equivalent: ``x.permute(0, 3, 1, 2)``: back to torch's layout.

    >>> nhwc_to_nchw(zeros(8, 32, 32, 3)).shape
    (8, 3, 32, 32)
    """
    shape = tuple(np.shape(x))
    check_ndim("x", shape, (3, 4), where="nhwc_to_nchw")
    if len(shape) == 4:
        return jnp.transpose(x, (0, 3, 1, 2))  # (N, H, W, C) -> (N, C, H, W)
    return jnp.transpose(x, (2, 0, 1))  # (H, W, C) -> (C, H, W)


# ----------------------------------------------------------------------------------------------
# private helpers
# ----------------------------------------------------------------------------------------------


def _resolve(device: Any) -> Any:
    """None stays None (JAX's default device); anything else goes through fnml.device.device."""
    return None if device is None else _device.device(device)


def _astype(leaf: Any, dtype: Any) -> jax.Array:
    """``leaf.astype(dtype)``, shrinking 64-bit targets loudly (and range-checked) when x64 is off."""
    wanted, held = jax_dtype(dtype), canonical_dtype(dtype)
    if held != wanted:
        if isinstance(leaf, jax.core.Tracer):
            _creation_dtype(dtype, what="to")  # values are unknown under a transform: warn only
        else:
            _torch.check_fits(np.asarray(leaf).astype(wanted), wanted, held, what="to")
    return jnp.asarray(leaf).astype(held)


def _default_int() -> np.dtype:
    """torch's default integer dtype (int64), as JAX can hold it (int32 with x64 off)."""
    return canonical_dtype("int64")


def _python_to_numpy(data: Any, *, what: str) -> np.ndarray:
    """Python numbers/lists -> numpy with torch's default dtypes, range-checked for x64-off JAX."""
    values = np.asarray(data)
    if values.dtype == object:
        raise TypeError(f"{what}: could not build an array from {type(data).__name__} data {data!r}")
    if values.dtype.kind == "b":
        return values
    if values.dtype.kind in "iu":
        held = _default_int()
        if held != np.int64:
            info = np.iinfo(held)
            if values.size and (values.min() < info.min or values.max() > info.max):
                raise PrecisionError(
                    f"{what}: integers in [{values.min()}, {values.max()}] do not fit in int32 and JAX's "
                    f"x64 mode is off; enable it with {_torch.X64_FIX}"
                )
        return values.astype(held)
    if values.dtype.kind == "f":
        finite = values[np.isfinite(values)]
        if finite.size and float(np.max(np.abs(finite))) > float(np.finfo(np.float32).max):
            raise PrecisionError(
                f"{what}: values up to {float(np.max(np.abs(finite))):g} overflow float32 (torch's default "
                "dtype); pass dtype='float64' (with JAX's x64 mode on)"
            )
        return values.astype(_DEFAULT_FLOAT)
    raise TypeError(
        f"{what}: unsupported data of dtype {values.dtype}; supported dtypes: {', '.join(SUPPORTED_DTYPES)}"
    )
