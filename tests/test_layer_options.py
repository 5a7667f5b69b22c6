"""Layer options: what a layer takes it honours; flax options it does not honour are refused by name.

``layers.Linear`` is built on ``nnx.Linear``: ``precision`` is taken and reaches the matmul; nnx.Linear's other
options (its own matmul, promotion and initialisation) are refused with a TypeError naming the option. The
other layers are written on ``fnml.functional`` directly: a flax option passed to them is refused by name too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from fnml import layers

R = nnx.Rngs(0)


def _dot_precisions(fn, *args) -> list[str]:
    """The ``precision`` parameter of every dot_general in ``fn``'s jaxpr."""
    jaxpr = jax.make_jaxpr(fn)(*args)
    return [str(eqn.params["precision"]) for eqn in jaxpr.eqns if eqn.primitive.name == "dot_general"]


def test_linear_precision_reaches_the_matmul():
    x = jnp.ones((4, 3), jnp.float32)
    highest = layers.Linear(3, 2, precision=lax.Precision.HIGHEST, rngs=nnx.Rngs(0))
    default = layers.Linear(3, 2, precision=lax.Precision.DEFAULT, rngs=nnx.Rngs(0))
    assert layers.Linear(3, 2, rngs=R).precision is None  # None: jax.default_matmul_precision decides
    assert _dot_precisions(highest, x) == [str((lax.Precision.HIGHEST, lax.Precision.HIGHEST))]
    assert _dot_precisions(default, x) == [str((lax.Precision.DEFAULT, lax.Precision.DEFAULT))]
    np.testing.assert_array_equal(np.asarray(highest.kernel[...]), np.asarray(default.kernel[...]))


def test_linear_precision_is_kept_by_split_and_merge():
    layer = layers.Linear(3, 2, precision="highest", rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(layer)
    assert nnx.merge(graphdef, state).precision == "highest"


REFUSED_LINEAR_OPTIONS = {
    "dot_general": lax.dot_general,
    "promote_dtype": lambda arrays, dtype=None: arrays,
    "preferred_element_type": jnp.float32,
    "kernel_init": nnx.initializers.zeros,
    "bias_init": nnx.initializers.zeros,
    "use_bias": False,
    "kernel_metadata": {"sharding": ("data", None)},
    "bias_metadata": {"sharding": (None,)},
}


@pytest.mark.parametrize("name", sorted(REFUSED_LINEAR_OPTIONS))
def test_linear_refuses_the_flax_options_it_does_not_honour(name):
    with pytest.raises(TypeError, match=rf"Linear: {name}=.* is a flax\.nnx\.Linear option that fnml's Linear"):
        layers.Linear(3, 2, rngs=R, **{name: REFUSED_LINEAR_OPTIONS[name]})


def test_linear_refusal_points_at_the_torch_spelling():
    with pytest.raises(TypeError, match=r"use_bias=False .*pass bias=True/False"):
        layers.Linear(3, 2, use_bias=False, rngs=R)


def test_linear_refuses_an_unknown_keyword_by_name():
    with pytest.raises(TypeError, match=r"Linear: unexpected keyword argument bais=False"):
        layers.Linear(3, 2, bais=False, rngs=R)


def test_non_dynamically_quantizable_linear_refuses_them_too():
    with pytest.raises(TypeError, match=r"dot_general=.* flax\.nnx\.Linear option"):
        layers.NonDynamicallyQuantizableLinear(3, 2, dot_general=lax.dot_general, rngs=R)


# Set after construction, the flax options the call would ignore are refused too (not silently kept).
IGNORED_ATTRIBUTES = {
    "dot_general": lambda *args, **kwargs: lax.dot_general(*args, **kwargs) * 0,
    "promote_dtype": lambda arrays, dtype=None: arrays,
    "preferred_element_type": jnp.float64,
}


@pytest.mark.parametrize("name", sorted(IGNORED_ATTRIBUTES))
@pytest.mark.parametrize("cls", [layers.Linear, layers.NonDynamicallyQuantizableLinear], ids=lambda c: c.__name__)
def test_linear_refuses_assigning_the_flax_options_it_ignores(cls, name):
    layer = cls(3, 2, rngs=nnx.Rngs(0))
    before = getattr(layer, name)
    with pytest.raises(
        AttributeError, match=rf"{cls.__name__}: {name} cannot be set; it is a flax\.nnx\.Linear option"
    ):
        setattr(layer, name, IGNORED_ATTRIBUTES[name])
    assert getattr(layer, name) is before


def test_linear_guard_leaves_nnx_transforms_and_other_attributes_alone():
    layer = layers.Linear(3, 2, rngs=nnx.Rngs(0))
    x = jnp.ones((4, 3))
    expected = np.asarray(layer(x))
    layer.precision = "highest"  # an option fnml honours stays assignable
    graphdef, state = nnx.split(layer)
    for copy in (nnx.merge(graphdef, state), nnx.clone(layer)):
        np.testing.assert_array_equal(np.asarray(copy(x)), expected)
        assert copy.precision == "highest"
    nnx.update(layer, nnx.state(layer))
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda m, v: m(v))(layer, x)), expected)
    np.testing.assert_array_equal(np.asarray(nnx.jit(lambda m, v: m(v))(layer, x)), expected)


# The other layers are not flax layers: a flax option given to them is refused, named, by Python itself.
FLAX_OPTIONS_ON_OTHER_LAYERS = {
    "Conv1d-precision": (lambda **kw: layers.Conv1d(3, 4, 3, rngs=R, **kw), "precision", "highest"),
    "Conv2d-precision": (lambda **kw: layers.Conv2d(3, 4, 3, rngs=R, **kw), "precision", "highest"),
    "Conv2d-feature_group_count": (lambda **kw: layers.Conv2d(4, 4, 3, rngs=R, **kw), "feature_group_count", 2),
    "ConvTranspose2d-transpose_kernel": (
        lambda **kw: layers.ConvTranspose2d(3, 4, 3, rngs=R, **kw),
        "transpose_kernel",
        True,
    ),
    "Embedding-promote_dtype": (lambda **kw: layers.Embedding(5, 3, rngs=R, **kw), "promote_dtype", None),
    "Embedding-embedding_init": (lambda **kw: layers.Embedding(5, 3, rngs=R, **kw), "embedding_init", None),
    "LayerNorm-epsilon": (lambda **kw: layers.LayerNorm(4, rngs=R, **kw), "epsilon", 1e-6),
    "LayerNorm-use_fast_variance": (lambda **kw: layers.LayerNorm(4, rngs=R, **kw), "use_fast_variance", False),
    "BatchNorm2d-use_running_average": (
        lambda **kw: layers.BatchNorm2d(4, rngs=R, **kw),
        "use_running_average",
        True,
    ),
    "BatchNorm2d-axis_name": (lambda **kw: layers.BatchNorm2d(4, rngs=R, **kw), "axis_name", "data"),
    "GroupNorm-group_size": (lambda **kw: layers.GroupNorm(2, 4, rngs=R, **kw), "group_size", 2),
    "RMSNorm-epsilon": (lambda **kw: layers.RMSNorm(4, rngs=R, **kw), "epsilon", 1e-6),
    "MultiheadAttention-qkv_dot_general": (
        lambda **kw: layers.MultiheadAttention(8, 2, rngs=R, **kw),
        "qkv_dot_general",
        None,
    ),
    "LSTM-gate_fn": (lambda **kw: layers.LSTM(3, 4, rngs=R, **kw), "gate_fn", None),
}


@pytest.mark.parametrize("case", sorted(FLAX_OPTIONS_ON_OTHER_LAYERS))
def test_other_layers_refuse_flax_options_by_name(case):
    make, name, value = FLAX_OPTIONS_ON_OTHER_LAYERS[case]
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        make(**{name: value})
