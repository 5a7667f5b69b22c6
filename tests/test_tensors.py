"""fnml.tensors against real torch: creation, dtypes, torch <-> jax bridge, x64-off behaviour, layouts."""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import assert_trees_close, child_env, run_python

from fnml import tensors

ALL_DTYPES = tensors.SUPPORTED_DTYPES


def _assert_same(fnml_array, torch_tensor):
    """Same shape, same (mapped) dtype, bit-identical values."""
    assert tuple(fnml_array.shape) == tuple(torch_tensor.shape)
    assert tensors.torch_dtype(fnml_array.dtype) == torch_tensor.dtype
    back = tensors.to_torch(fnml_array, copy=True)
    assert torch.equal(back, torch_tensor.detach())


# ---------------------------------------------------------------------------------------- creation


@pytest.mark.parametrize(
    "name, fnml_call, torch_call",
    [
        ("zeros", lambda: tensors.zeros(2, 3), lambda: torch.zeros(2, 3)),
        ("zeros_tuple", lambda: tensors.zeros((2, 3)), lambda: torch.zeros((2, 3))),
        ("ones", lambda: tensors.ones(2, 3), lambda: torch.ones(2, 3)),
        ("ones_f64", lambda: tensors.ones(4, dtype="float64"), lambda: torch.ones(4, dtype=torch.float64)),
        (
            "ones_torch_dtype",
            lambda: tensors.ones(2, dtype=torch.int8),
            lambda: torch.ones(2, dtype=torch.int8),
        ),
        ("full_float", lambda: tensors.full((2, 2), 7.5), lambda: torch.full((2, 2), 7.5)),
        ("full_int", lambda: tensors.full((3,), 7), lambda: torch.full((3,), 7)),
        ("full_bool", lambda: tensors.full((3,), True), lambda: torch.full((3,), True)),
        (
            "full_dtype",
            lambda: tensors.full((2,), 3, dtype="float16"),
            lambda: torch.full((2,), 3, dtype=torch.float16),
        ),
        ("arange_int", lambda: tensors.arange(5), lambda: torch.arange(5)),
        ("arange_start_step", lambda: tensors.arange(2, 11, 3), lambda: torch.arange(2, 11, 3)),
        ("arange_float", lambda: tensors.arange(0, 1, 0.25), lambda: torch.arange(0, 1, 0.25)),
        (
            "arange_dtype",
            lambda: tensors.arange(4, dtype="float64"),
            lambda: torch.arange(4, dtype=torch.float64),
        ),
        (
            "tensor_floats",
            lambda: tensors.tensor([[1.0, 2.0], [3.0, 4.5]]),
            lambda: torch.tensor([[1.0, 2.0], [3.0, 4.5]]),
        ),
        ("tensor_ints", lambda: tensors.tensor([1, 2, 3]), lambda: torch.tensor([1, 2, 3])),
        ("tensor_bools", lambda: tensors.tensor([True, False]), lambda: torch.tensor([True, False])),
        ("tensor_scalar", lambda: tensors.tensor(3.25), lambda: torch.tensor(3.25)),
        (
            "tensor_dtype",
            lambda: tensors.tensor([1, 2], dtype=torch.bfloat16),
            lambda: torch.tensor([1, 2], dtype=torch.bfloat16),
        ),
        ("tensor_of_numpy", lambda: tensors.tensor(np.arange(4.0)), lambda: torch.tensor(np.arange(4.0))),
        (
            "tensor_of_torch",
            lambda: tensors.tensor(torch.arange(3)),
            lambda: torch.tensor(torch.arange(3).numpy()),
        ),
        (
            "from_numpy",
            lambda: tensors.from_numpy(np.array([[1, 2], [3, 4]])),
            lambda: torch.from_numpy(np.array([[1, 2], [3, 4]])),
        ),
        (
            "from_numpy_f32",
            lambda: tensors.from_numpy(np.ones(3, np.float32)),
            lambda: torch.from_numpy(np.ones(3, np.float32)),
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_creation_matches_torch(name, fnml_call, torch_call):
    _assert_same(fnml_call(), torch_call())


def test_creation_on_device():
    cpu = jax.devices("cpu")[0]
    for array in (
        tensors.zeros(2, device="cpu"),
        tensors.ones(2, device=cpu),
        tensors.full((2,), 1.0, device="cpu:0"),
        tensors.arange(3, device="cpu"),
        tensors.tensor([1.0], device="cpu"),
        tensors.from_numpy(np.ones(2), device="cpu"),
        tensors.randn(jax.random.key(0), 2, device="cpu"),
        tensors.rand(jax.random.key(0), 2, device=torch.device("cpu")),
    ):
        assert array.devices() == {cpu}


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_randn_and_rand_are_keyed(dtype):
    key = jax.random.key(42)
    a = tensors.randn(key, 200, 50, dtype=dtype)
    assert a.shape == (200, 50) and a.dtype == jnp.dtype(dtype)
    np.testing.assert_array_equal(a, tensors.randn(key, 200, 50, dtype=dtype))  # same key, same numbers
    assert not np.array_equal(np.asarray(a), np.asarray(tensors.randn(jax.random.key(1), 200, 50, dtype=dtype)))
    values = np.asarray(a, dtype=np.float64)
    assert abs(values.mean()) < 0.05 and abs(values.std() - 1.0) < 0.05  # torch.randn's distribution
    u = np.asarray(tensors.rand(key, 10000, dtype=dtype), dtype=np.float64)
    assert u.min() >= 0.0 and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.02
    assert tensors.randn(key, 2, 3).dtype == jnp.float32  # torch's default dtype
    assert tensors.randn(jax.random.PRNGKey(0), 2).shape == (2,)  # legacy uint32 keys work too


def test_random_needs_a_key():
    with pytest.raises(
        TypeError, match=r"randn: key must be a jax.random key \(jax.random.key\(seed\)\), got 2 \(int\)"
    ):
        tensors.randn(2, 3)
    with pytest.raises(
        TypeError, match=r"rand: key must be a jax.random key .*got an array of dtype float64 and shape \(3,\)"
    ):
        tensors.rand(jnp.zeros(3), 3)


def test_bad_sizes_and_data():
    with pytest.raises(ValueError, match=r"zeros: size must be an int >= 0, got size=-1"):
        tensors.zeros(2, -1)
    with pytest.raises(TypeError, match=r"ones: size must be an int, got 2.5 \(float\)"):
        tensors.ones(2.5)
    with pytest.raises(TypeError, match="could not build an array"):
        tensors.tensor([object()])
    with pytest.raises(TypeError, match="unsupported data of dtype"):
        tensors.tensor(["a", "b"])
    with pytest.raises(TypeError, match="from_numpy: array must be a numpy.ndarray, got list"):
        tensors.from_numpy([1, 2])


def test_from_numpy_copies_unlike_torch():
    source = np.zeros(3, np.float32)
    ours, theirs = tensors.from_numpy(source), torch.from_numpy(source)
    source[0] = 5.0
    assert float(theirs[0]) == 5.0  # torch shares memory
    assert float(ours[0]) == 0.0  # fnml copies: jax arrays are immutable


def test_to_numpy():
    t = torch.randn(3, 4, dtype=torch.float64)
    x = tensors.from_torch(t)
    np.testing.assert_array_equal(tensors.to_numpy(x), t.numpy())
    np.testing.assert_array_equal(tensors.to_numpy(t.requires_grad_()), t.detach().numpy())  # torch input too
    writable = tensors.to_numpy(x, copy=True)
    writable[0, 0] = 1.0  # a copy is writable
    half = tensors.to_numpy(jnp.ones(2, jnp.bfloat16))
    assert half.dtype == jnp.bfloat16
    with pytest.raises(TypeError, match="to_numpy: got a traced value"):
        jax.jit(tensors.to_numpy)(x)


# ---------------------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("name", ALL_DTYPES)
def test_dtype_mapping_both_ways(name):
    torch_type = getattr(torch, name)
    assert tensors.jax_dtype(torch_type) == jnp.dtype(name)
    assert tensors.jax_dtype(name) == jnp.dtype(name)
    assert tensors.torch_dtype(jnp.dtype(name)) is torch_type
    assert tensors.torch_dtype(tensors.jax_dtype(torch_type)) is torch_type
    assert tensors.canonical_dtype(name) == jnp.dtype(name)  # x64 is on in the test suite


def test_dtype_aliases():
    assert tensors.jax_dtype(torch.float) == jnp.float32 and tensors.jax_dtype(torch.double) == jnp.float64
    assert tensors.jax_dtype(torch.long) == jnp.int64 and tensors.jax_dtype(np.bool_) == jnp.bool_
    assert tensors.jax_dtype(jnp.bfloat16) == jnp.bfloat16 and tensors.jax_dtype("torch.half") == jnp.float16


@pytest.mark.parametrize("bad", [torch.complex64, "complex128", jnp.uint16, torch.float8_e4m3fn])
def test_unsupported_dtype(bad):
    with pytest.raises(TypeError, match="unsupported dtype .* fnml maps these dtypes"):
        tensors.jax_dtype(bad)
    with pytest.raises(TypeError, match="unsupported dtype"):
        tensors.torch_dtype(bad)


def test_unsupported_dtype_in_conversions():
    with pytest.raises(TypeError, match="unsupported dtype torch.complex64"):
        tensors.from_torch(torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(TypeError, match="unsupported dtype"):
        tensors.to_torch(jnp.zeros(2, jnp.complex64))
    with pytest.raises(TypeError, match="not a dtype"):
        tensors.zeros(2, dtype=object())


# ---------------------------------------------------------------------------------------- torch <-> jax


def _example_tensor(name):
    """A (3, 4) tensor of dtype `name` with values that exercise the type (signs, fractions, extremes)."""
    base = torch.arange(-6, 6).reshape(3, 4)
    if name == "bool":
        return base % 3 == 0
    if name == "uint8":
        return (base + 6).to(torch.uint8) * 20
    if name == "int64":
        return base * (2**40)  # beyond int32: round trips only with x64
    if name.startswith("int"):
        return base.to(getattr(torch, name)) * 10
    return (base.to(torch.float64) / 3).to(getattr(torch, name))


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided_slice", "requires_grad"])
@pytest.mark.parametrize("name", ALL_DTYPES)
def test_round_trip_torch_jax_torch(name, layout):
    source = _example_tensor(name)
    if layout == "transposed":
        source = source.t()
        assert not source.is_contiguous()
    elif layout == "strided_slice":
        source = source[:, ::2]
        assert not source.is_contiguous()
    elif layout == "requires_grad":
        if not source.is_floating_point():
            source = source.t()  # only floats can require grad; still test a view
        else:
            source = source.clone().requires_grad_(True)
    array = tensors.from_torch(source)
    assert array.dtype == jnp.dtype(name) and array.shape == tuple(source.shape)
    np.testing.assert_array_equal(np.asarray(array).astype(np.float64), tensors.to_numpy(source).astype(np.float64))
    back = tensors.to_torch(array)
    assert back.dtype == source.dtype and not back.requires_grad
    assert torch.equal(back, source.detach())


def test_from_torch_shares_memory_unless_copy():
    source = torch.zeros(3)
    shared, copied = tensors.from_torch(source), tensors.from_torch(source, copy=True)
    source.add_(1.0)  # an in-place torch write after conversion
    assert float(shared[0]) == 1.0  # documented: zero-copy aliases the tensor
    assert float(copied[0]) == 0.0


def test_to_torch_copy_and_requires_grad():
    array = jnp.arange(3.0)
    independent = tensors.to_torch(array, copy=True)
    independent.add_(1.0)
    np.testing.assert_array_equal(array, [0.0, 1.0, 2.0])
    leaf = tensors.to_torch(array, requires_grad=True)
    assert leaf.requires_grad and leaf.is_leaf
    (leaf * 2).sum().backward()
    assert torch.equal(leaf.grad, torch.full((3,), 2.0, dtype=leaf.dtype))
    assert torch.equal(tensors.to_torch(np.arange(3)), torch.arange(3))  # numpy input
    with pytest.raises(TypeError, match="to_torch: array must be a jax.Array"):
        tensors.to_torch([1, 2])
    with pytest.raises(TypeError, match="to_torch: got a traced value"):
        jax.jit(tensors.to_torch)(array)


def test_from_torch_errors():
    with pytest.raises(TypeError, match="from_torch: tensor must be a torch.Tensor, got ndarray"):
        tensors.from_torch(np.zeros(2))
    with pytest.raises(TypeError, match="layout torch.sparse_coo is not supported; call tensor.to_dense"):
        tensors.from_torch(torch.eye(2).to_sparse())


def test_from_torch_negative_view():
    source = torch.arange(4.0)._neg_view()  # lazily negated view (neg bit set)
    np.testing.assert_array_equal(tensors.from_torch(source), [-0.0, -1.0, -2.0, -3.0])


def test_int64_and_float64_survive_with_x64_on():
    big = torch.tensor([2**40, -(2**50)])
    assert np.asarray(tensors.from_torch(big)).tolist() == [2**40, -(2**50)]
    assert tensors.tensor([2**40]).dtype == jnp.int64
    precise = torch.tensor([1 / 3], dtype=torch.float64)
    assert float(tensors.from_torch(precise)[0]) == 1 / 3


_X64_OFF_SCRIPT = textwrap.dedent(
    """
    import warnings
    import numpy as np
    import torch
    import jax
    from fnml import tensors

    assert not jax.config.jax_enable_x64

    def outcome(fn):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = fn()
            except tensors.PrecisionError as error:
                return f"ERROR {error}"
        kinds = [w.category.__name__ for w in caught]
        messages = [str(w.message) for w in caught]
        return f"OK {result.dtype} {np.asarray(result).ravel()[:2].tolist()} {kinds} {messages}"

    cases = {
        "from_numpy_int64_fits": lambda: tensors.from_numpy(np.array([[1, 2], [3, 4]])),
        "from_numpy_int64_big": lambda: tensors.from_numpy(np.array([2**40])),
        "from_numpy_float64": lambda: tensors.from_numpy(np.array([1 / 3])),
        "from_numpy_float64_huge": lambda: tensors.from_numpy(np.array([1e300])),
        "from_torch_int64_fits": lambda: tensors.from_torch(torch.tensor([5, -7])),
        "from_torch_int64_big": lambda: tensors.from_torch(torch.tensor([2**40])),
        "from_torch_float64": lambda: tensors.from_torch(torch.tensor([0.5], dtype=torch.float64)),
        "from_torch_float64_huge": lambda: tensors.from_torch(torch.tensor([1e300], dtype=torch.float64)),
        "zeros_float64": lambda: tensors.zeros(2, dtype="float64"),
        "full_int64_big": lambda: tensors.full((2,), 2**40, dtype=torch.int64),
        "tensor_python_ints": lambda: tensors.tensor([1, 2]),
        "tensor_python_big": lambda: tensors.tensor([2**40]),
        "tensor_python_floats": lambda: tensors.tensor([0.5]),
        "tensor_python_huge": lambda: tensors.tensor([1e300]),
        "arange_big": lambda: tensors.arange(2**40, 2**40 + 2),
        "to_int64_fits": lambda: tensors.to(tensors.tensor([3.0]), "int64"),
        "to_int64_big": lambda: tensors.to(tensors.tensor([3e12]), torch.int64),
        "randn_float64": lambda: tensors.randn(jax.random.key(0), 2, dtype="float64"),
        "inf_passes": lambda: tensors.from_numpy(np.array([np.inf, 1.0])),
    }
    for name, fn in cases.items():
        print(name, "=>", outcome(fn))
    """
)


def test_x64_off_never_truncates_silently(tmp_path):
    completed = run_python(["-c", _X64_OFF_SCRIPT], env=child_env(JAX_ENABLE_X64="0"), timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = dict(line.split(" => ", 1) for line in completed.stdout.splitlines())
    warned = "['PrecisionWarning']"
    assert results["from_numpy_int64_fits"].startswith(f"OK int32 [1, 2] {warned}"), results
    assert "int64 became int32" in results["from_numpy_int64_fits"]
    assert "jax.config.update('jax_enable_x64', True)" in results["from_numpy_int64_fits"]
    assert results["from_torch_int64_fits"].startswith(f"OK int32 [5, -7] {warned}")
    assert results["from_numpy_float64"].startswith("OK float32") and warned in results["from_numpy_float64"]
    assert "rounded to float32" in results["from_numpy_float64"]
    assert results["from_torch_float64"].startswith(f"OK float32 [0.5] {warned}")
    assert results["zeros_float64"].startswith(f"OK float32 [0.0, 0.0] {warned}")
    assert results["randn_float64"].startswith("OK float32") and warned in results["randn_float64"]
    assert results["to_int64_fits"].startswith(f"OK int32 [3] {warned}")
    assert results["inf_passes"].startswith("OK float32 [inf, 1.0]")
    for name in (
        "from_numpy_int64_big",
        "from_torch_int64_big",
        "full_int64_big",
        "tensor_python_big",
        "arange_big",
        "to_int64_big",
    ):
        assert results[name].startswith("ERROR"), (name, results[name])
        assert "do not fit in int32" in results[name] and "jax_enable_x64" in results[name], results[name]
    for name in ("from_numpy_float64_huge", "from_torch_float64_huge"):
        assert results[name].startswith("ERROR") and "overflow float32" in results[name], results[name]
        assert "jax_enable_x64" in results[name]
    assert "overflow float32" in results["tensor_python_huge"]
    # Python numbers without a dtype: torch's defaults as far as JAX holds them, no warning.
    assert results["tensor_python_ints"] == "OK int32 [1, 2] [] []"
    assert results["tensor_python_floats"] == "OK float32 [0.5] [] []"


# ---------------------------------------------------------------------------------------- clone / detach / to


def test_clone_matches_torch_and_uses_new_memory(dtype, torch_dtype):
    t = torch.randn(3, 2, dtype=torch_dtype)
    x = tensors.from_torch(t)
    y = tensors.clone(x)
    assert_trees_close(y, t.clone(), dtype=dtype, atol=0.0, rtol=0.0)
    assert y.unsafe_buffer_pointer() != x.unsafe_buffer_pointer()
    tree = tensors.clone({"a": x, "b": [x]})
    assert set(tree) == {"a", "b"}


def test_detach_stops_the_gradient_like_torch(dtype, torch_dtype):
    t = torch.randn(4, dtype=torch_dtype, requires_grad=True)
    (t.detach() * t * 3).sum().backward()
    ours = jax.grad(lambda x: (tensors.detach(x) * x * 3).sum())(tensors.from_torch(t))
    assert_trees_close(ours, t.grad, dtype=dtype)


@pytest.mark.parametrize("target", ["float16", "bfloat16", "int32", "float64", "bool", "int8"])
def test_to_dtype_matches_torch(target):
    t = torch.tensor([-2.75, 0.0, 1.5, 3.25])
    expected = t.to(getattr(torch, target))
    _assert_same(tensors.to(tensors.from_torch(t), getattr(torch, target)), expected)
    _assert_same(tensors.to(tensors.from_torch(t), dtype=target), expected)
    _assert_same(tensors.to(tensors.from_torch(t), "cpu", target), expected)  # device and dtype


def test_to_device_and_errors():
    cpu = jax.devices("cpu")[0]
    moved = tensors.to({"w": jnp.ones(2)}, "cpu")
    assert moved["w"].devices() == {cpu}
    with pytest.raises(TypeError, match="to: dtype given twice"):
        tensors.to(jnp.ones(2), "float32", dtype="float16")
    with pytest.raises(TypeError, match="to: device given twice"):
        tensors.to(jnp.ones(2), "cpu", device="cpu")
    with pytest.raises(ValueError, match="unknown device string 'cpux'"):
        tensors.to(jnp.ones(2), "cpux")


# ---------------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 4, 5)], ids=["NCHW", "CHW"])
def test_layout_helpers_match_torch_permute(shape):
    t = torch.randn(*shape)
    first_to_last = (0, 2, 3, 1) if len(shape) == 4 else (1, 2, 0)
    nhwc = tensors.nchw_to_nhwc(tensors.from_torch(t))
    assert torch.equal(tensors.to_torch(nhwc), t.permute(*first_to_last).contiguous())
    back = tensors.nhwc_to_nchw(nhwc)
    assert torch.equal(tensors.to_torch(back), t)


@pytest.mark.parametrize("fn", [tensors.nchw_to_nhwc, tensors.nhwc_to_nchw], ids=["nchw_to_nhwc", "nhwc_to_nchw"])
@pytest.mark.parametrize("shape", [(4,), (2, 3), (1, 2, 3, 4, 5)], ids=["1d", "2d", "5d"])
def test_layout_helpers_reject_bad_rank(fn, shape):
    with pytest.raises(ValueError, match=rf"{fn.__name__}: x must be 3-D or 4-D, got a {len(shape)}-D array"):
        fn(jnp.zeros(shape))
