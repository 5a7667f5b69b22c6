"""Layers check their settings once, at construction; a call checks only what the call brings.

Every settings check in fnml goes through ``fnml._validation``'s ``check_*`` functions (or a functional op's own
settings checker). A spy replaces each of them, in every fnml module that imported it, with a recorder; each
layer family is then built (the spy must see its settings checked) and called twice: the calls must check no
setting again (``check_ndim``, a check of the input's rank, is the input's and is not spied). The public
functional ops keep their checks for direct callers: the spy sees them too.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import fnml._validation
from fnml import functional as F
from fnml import layers

# The functional ops' own settings checkers (beside the shared validators), spied as well.
OP_CHECKERS = {
    "fnml.functional.activation": ("_check_inplace", "_softmax_input"),
    "fnml.functional.attention": ("_projection_weight",),
    "fnml.functional.dropout": ("_dropout_args",),
    "fnml.functional.embedding": ("_check_renorm_args",),
    "fnml.functional.padding": ("_pad_tuple",),
    "fnml.functional.resample": ("check_interpolate_settings",),
    "fnml.layers.padding": ("_padding_tuple",),
    "fnml.layers.sparse": ("_check_padding_idx", "_check_options"),
}


class Spy:
    """Records ``checker:argument`` for every spied check that runs."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            named = args[0] if args and isinstance(args[0], str) else ""
            self.calls.append(f"{label}:{named}")
            return function(*args, **kwargs)

        return recorded

    def settings_checked(self) -> set[str]:
        return {call.split(":", 1)[1] or call.split(":", 1)[0] for call in self.calls}


def _spied_functions() -> dict[int, tuple[str, Callable[..., Any]]]:
    """id(function) -> (label, function) for every validator and op checker."""
    found = {}
    for name, value in vars(fnml._validation).items():
        if name.startswith("check_") and name != "check_ndim" and callable(value):
            found[id(value)] = (name, value)
    for module_name, names in OP_CHECKERS.items():
        module = sys.modules[module_name]
        for name in names:
            value = getattr(module, name)
            found[id(value)] = (name, value)
    return found


@pytest.fixture
def spy(monkeypatch) -> Spy:
    recorder = Spy()
    spied = _spied_functions()
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "fnml" or module_name.startswith("fnml.")):
            continue
        for attribute, value in list(vars(module).items()):
            if id(value) in spied and spied[id(value)][1] is value:
                label, function = spied[id(value)]
                monkeypatch.setattr(module, attribute, recorder.wrap(label, function))
    return recorder


RNGS = {"rngs": nnx.Rngs(0)}
KEY = jax.random.key(0)
X2 = jnp.linspace(-3.0, 3.0, 24).reshape(4, 6)  # (N, C)
NLC = jnp.linspace(-2.0, 2.0, 2 * 6 * 3).reshape(2, 6, 3)  # (N, L, C)
NHWC = jnp.linspace(-2.0, 2.0, 2 * 4 * 6 * 8).reshape(2, 4, 6, 8)  # (N, H, W, C)
SEQ = jnp.linspace(-1.0, 1.0, 5 * 2 * 8).reshape(5, 2, 8)  # (T, N, E)
MEMORY = jnp.linspace(1.0, -1.0, 3 * 2 * 8).reshape(3, 2, 8)  # (S, N, E)
CAUSAL = layers.Transformer.generate_square_subsequent_mask(5)
PADDING = jnp.array([[False, False, True], [False, False, False]])  # (N, S)


def _recurrent(cls: type) -> Any:
    return cls(3, 4, num_layers=2, dropout=0.5, rngs=nnx.Rngs(0, dropout=1))


# family -> (build, call, the call's own arguments a call may check)
CALL_ARGUMENTS = {"need_weights", "average_attn_weights", "is_causal"}
LAYERS: dict[str, tuple[Callable[[], Any], Callable[[Any], Any], set[str]]] = {
    # dropout
    "Dropout": (lambda: layers.Dropout(0.3, **RNGS), lambda m: m(X2), set()),
    "Dropout-eval": (lambda: layers.Dropout(0.3).eval(), lambda m: m(X2), set()),
    "Dropout1d": (lambda: layers.Dropout1d(0.3, **RNGS), lambda m: m(NLC), set()),
    "Dropout2d": (lambda: layers.Dropout2d(0.3, **RNGS), lambda m: m(NHWC), set()),
    "AlphaDropout": (lambda: layers.AlphaDropout(0.3, **RNGS), lambda m: m(X2), set()),
    "LSTM-dropout": (lambda: _recurrent(layers.LSTM), lambda m: m(NLC), set()),
    "GRU-dropout": (lambda: _recurrent(layers.GRU), lambda m: m(NLC), set()),
    "RNN-dropout": (lambda: _recurrent(layers.RNN), lambda m: m(NLC), set()),
    # embedding
    "Embedding": (lambda: layers.Embedding(10, 3, padding_idx=0, **RNGS), lambda m: m(jnp.array([[1, 0, 9]])), set()),
    "Embedding-max_norm": (
        lambda: layers.Embedding(10, 3, max_norm=1.0, scale_grad_by_freq=True, **RNGS),
        lambda m: m(jnp.array([1, 2, 2])),
        set(),
    ),
    # padding
    **{
        f"{cls.__name__}": (functools.partial(cls, (1, 2)), lambda m: m(NLC), set())
        for cls in (layers.ZeroPad1d, layers.ReflectionPad1d, layers.ReplicationPad1d, layers.CircularPad1d)
    },
    **{
        f"{cls.__name__}": (functools.partial(cls, (1, 2, 0, 1)), lambda m: m(NHWC), set())
        for cls in (layers.ZeroPad2d, layers.ReflectionPad2d, layers.ReplicationPad2d, layers.CircularPad2d)
    },
    "ConstantPad1d": (lambda: layers.ConstantPad1d((2, -1), 3.5), lambda m: m(NLC), set()),
    "ConstantPad2d": (lambda: layers.ConstantPad2d(1, -1.0), lambda m: m(NHWC), set()),
    # resampling
    "Upsample-nearest": (lambda: layers.Upsample(scale_factor=2), lambda m: m(NHWC), set()),
    "Upsample-bilinear-size": (
        lambda: layers.Upsample(size=(5, 7), mode="bilinear", align_corners=True),
        lambda m: m(NHWC),
        set(),
    ),
    "Upsample-bicubic": (lambda: layers.Upsample(scale_factor=(1.5, 2), mode="bicubic"), lambda m: m(NHWC), set()),
    "Upsample-linear": (lambda: layers.Upsample(scale_factor=2.5, mode="linear"), lambda m: m(NLC), set()),
    "Upsample-area": (lambda: layers.Upsample(size=3, mode="area"), lambda m: m(NHWC), set()),
    "PixelShuffle": (lambda: layers.PixelShuffle(2), lambda m: m(NHWC), set()),
    "PixelUnshuffle": (lambda: layers.PixelUnshuffle(2), lambda m: m(NHWC), set()),
    # activations
    "ReLU": (lambda: layers.ReLU(), lambda m: m(X2), set()),
    "ReLU6": (lambda: layers.ReLU6(inplace=True), lambda m: m(X2), set()),
    "LeakyReLU": (lambda: layers.LeakyReLU(0.2), lambda m: m(X2), set()),
    "ELU": (lambda: layers.ELU(0.5), lambda m: m(X2), set()),
    "CELU": (lambda: layers.CELU(2.0), lambda m: m(X2), set()),
    "SELU": (lambda: layers.SELU(), lambda m: m(X2), set()),
    "GELU": (lambda: layers.GELU("tanh"), lambda m: m(X2), set()),
    "SiLU": (lambda: layers.SiLU(), lambda m: m(X2), set()),
    "Mish": (lambda: layers.Mish(), lambda m: m(X2), set()),
    "Hardtanh": (lambda: layers.Hardtanh(-2.0, 2.0), lambda m: m(X2), set()),
    "Hardswish": (lambda: layers.Hardswish(), lambda m: m(X2), set()),
    "Hardsigmoid": (lambda: layers.Hardsigmoid(), lambda m: m(X2), set()),
    "Softplus": (lambda: layers.Softplus(2.0, 3.0), lambda m: m(X2), set()),
    "Threshold": (lambda: layers.Threshold(0.5, -1.0), lambda m: m(X2), set()),
    "GLU": (lambda: layers.GLU(1), lambda m: m(X2), set()),
    "PReLU": (lambda: layers.PReLU(6, 0.1), lambda m: m(X2), set()),
    "Softmax": (lambda: layers.Softmax(dim=-1), lambda m: m(X2), set()),
    "LogSoftmax": (lambda: layers.LogSoftmax(dim=1), lambda m: m(X2), set()),
    # attention and the transformer layers
    "MultiheadAttention": (
        lambda: layers.MultiheadAttention(8, 2, dropout=0.1, add_bias_kv=True, **RNGS),
        lambda m: m(SEQ, MEMORY, MEMORY, key_padding_mask=PADDING, average_attn_weights=False),
        CALL_ARGUMENTS,
    ),
    "MultiheadAttention-kdim-sdpa": (
        lambda: layers.MultiheadAttention(8, 2, kdim=5, vdim=3, batch_first=True, **RNGS).eval(),
        lambda m: m(SEQ, jnp.ones((5, 4, 5)), jnp.ones((5, 4, 3)), need_weights=False),
        CALL_ARGUMENTS,
    ),
    "TransformerEncoderLayer": (
        lambda: layers.TransformerEncoderLayer(8, 2, 16, activation="gelu", **RNGS),
        lambda m: m(SEQ, src_mask=CAUSAL, is_causal=True),
        CALL_ARGUMENTS,
    ),
    "TransformerDecoderLayer": (
        lambda: layers.TransformerDecoderLayer(8, 2, 16, norm_first=True, **RNGS),
        lambda m: m(SEQ, MEMORY, tgt_mask=CAUSAL, memory_key_padding_mask=PADDING),
        CALL_ARGUMENTS,
    ),
    "Transformer": (
        lambda: layers.Transformer(8, 2, 1, 1, 16, **RNGS),
        lambda m: m(MEMORY, SEQ, tgt_mask=CAUSAL),
        CALL_ARGUMENTS,
    ),
}


@pytest.mark.parametrize("family", sorted(LAYERS))
def test_settings_are_checked_at_construction_only(spy, family):
    build, call, call_arguments = LAYERS[family]
    layer = build()
    # Softmax / LogSoftmax check their one setting, dim, by hand (torch's deprecation hint in the message).
    assert spy.calls or family in ("Softmax", "LogSoftmax"), f"{family}: the spy saw no check at construction"
    spy.calls.clear()
    first = call(layer)
    assert spy.settings_checked() <= call_arguments, f"{family} re-checked its settings: {sorted(spy.calls)}"
    spy.calls.clear()
    second = call(layer)
    assert spy.settings_checked() <= call_arguments, f"{family} re-checked its settings: {sorted(spy.calls)}"
    # The calls ran (shapes agree); dropout layers draw a fresh mask each call.
    assert jax.tree.structure(first) == jax.tree.structure(second)


def test_the_spy_sees_the_public_ops_checks(spy):
    # Direct callers of the functional ops keep every check: the spy is wired to what the ops call.
    F.dropout(X2, 0.3, key=KEY)
    F.pad(NLC, (1, 1), mode="reflect")
    F.leaky_relu(X2, 0.2)
    F.interpolate(NLC, scale_factor=2)
    F.pixel_shuffle(NHWC, 2)
    F.embedding(jnp.array([1]), jnp.ones((3, 2)), padding_idx=0)
    x = jnp.ones((3, 2, 4))
    F.multi_head_attention_forward(
        x, x, x, 4, 2, jnp.ones((12, 4)), None, None, None, False, 0.0, jnp.eye(4), None, training=False
    )
    checked = spy.settings_checked()
    for setting in ("p", "mode", "negative_slope", "upscale_factor", "padding_idx", "num_heads", "training"):
        assert setting in checked, setting


def test_layer_and_public_op_give_the_same_numbers():
    # One core behind both entries: a layer equals its functional twin on the same settings.
    np.testing.assert_array_equal(layers.LeakyReLU(0.2)(X2), F.leaky_relu(X2, 0.2))
    np.testing.assert_array_equal(
        layers.ReflectionPad1d((1, 2))(NLC), F.pad(NLC, (1, 2), mode="reflect", channels_last=True)
    )
    np.testing.assert_array_equal(
        layers.Upsample(scale_factor=1.5, mode="bicubic")(NHWC),
        F.interpolate(NHWC, scale_factor=1.5, mode="bicubic", channels_last=True),
    )
    drop = layers.Dropout(0.3, rngs=nnx.Rngs(dropout=0))
    key = nnx.Rngs(dropout=0)["dropout"].fork()()
    np.testing.assert_array_equal(drop(X2), F.dropout(X2, 0.3, key=key))
