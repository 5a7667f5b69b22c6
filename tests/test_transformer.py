"""The transformer layers against real torch: encoder/decoder layers, stacks and the full Transformer.

torch's weights are copied into the fnml modules with ``interop.load_state_dict`` (torch's state_dict keys
map one-to-one), then the output and the gradients of the inputs and of every parameter are compared
in float64 (<= 1e-12) and float32. torch's modules run in training mode with dropout 0, so their fused
inference fast path is never taken (fnml computes torch's reference path in both modes).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from helpers import torch_dtype
from scipy import stats
from test_linear_norm import _data, module_parity

from fnml import interop, layers

D, NHEAD, FF, T, S, N = 8, 2, 16, 4, 5, 3


def _torch_quiet(make):
    # torch warns that its nested-tensor fast path is unavailable (batch_first=False / norm_first): not ours.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return make()


def _seq(dtype, length, seed, *, batch_first):
    return _data((N, length, D) if batch_first else (length, N, D), dtype, seed)


def _causal(length, dtype):
    return np.triu(np.full((length, length), -np.inf), 1).astype(dtype)


def _padding(length, dtype=None):
    """Key padding (N, length): bool True = padding, or with a dtype the additive 0 / -inf form.

    torch warns when a padding mask and an attention mask of the same call differ in kind, so pairs match.
    """
    mask = np.zeros((N, length), bool)
    mask[0, -2:] = True
    return mask if dtype is None else np.where(mask, -np.inf, 0.0).astype(dtype)


def _randomise(torch_module, dtype):
    # LayerNorm weights / biases and the zero-initialised attention biases become non-trivial.
    with torch.no_grad():
        for index, (name, param) in enumerate(torch_module.named_parameters()):
            if param.dim() == 1:
                param.copy_(torch.tensor(_data(tuple(param.shape), dtype, 100 + index, scale=0.5)) + ("norm" in name))


ENCODER_LAYER_CASES = {
    # name: (constructor settings, call kwargs builder)
    "post-norm-relu": ({}, lambda dt: {}),
    "pre-norm-gelu": ({"norm_first": True, "activation": "gelu"}, lambda dt: {}),
    "causal-mask+padding": ({}, lambda dt: {"src_mask": _causal(T, dt), "src_key_padding_mask": _padding(T, dt)}),
    "is_causal-hint": ({"norm_first": True}, lambda dt: {"src_mask": _causal(T, dt), "is_causal": True}),
    "GELU-module-no-bias": ({"activation": "GELU-module", "bias": False}, lambda dt: {}),
    "layer_norm_eps": ({"layer_norm_eps": 1e-3}, lambda dt: {"src_key_padding_mask": _padding(T)}),
}


def _activation_pair(settings):
    """The same activation for both frameworks: strings as they are, the GELU module as each's class."""
    fnml_settings, torch_settings = dict(settings), dict(settings)
    if settings.get("activation") == "GELU-module":
        fnml_settings["activation"], torch_settings["activation"] = layers.GELU(), torch.nn.GELU()
    return fnml_settings, torch_settings


def _alternating(cases):
    """Each case once, batch_first alternating between cases (both layouts covered, half the runs)."""
    return [
        pytest.param(case, index % 2 == 1, id=f"{case}-{'batch_first' if index % 2 else 'seq-first'}")
        for index, case in enumerate(cases)
    ]


@pytest.mark.parametrize(("case", "batch_first"), _alternating(ENCODER_LAYER_CASES))
def test_encoder_layer_matches_torch(case, batch_first, dtype):
    settings, call = ENCODER_LAYER_CASES[case]
    fnml_settings, torch_settings = _activation_pair(settings)
    torch_layer = torch.nn.TransformerEncoderLayer(
        D, NHEAD, FF, dropout=0.0, batch_first=batch_first, **torch_settings
    ).to(torch_dtype(dtype))
    _randomise(torch_layer, dtype)
    fnml_layer = layers.TransformerEncoderLayer(
        D, NHEAD, FF, dropout=0.0, batch_first=batch_first, **fnml_settings, param_dtype=dtype, rngs=nnx.Rngs(0)
    )
    module_parity(torch_layer, fnml_layer, [_seq(dtype, T, 1, batch_first=batch_first)], dtype, constants=call(dtype))


DECODER_LAYER_CASES = {
    "post-norm": ({}, lambda dt: {}),
    "pre-norm-gelu-masks": (
        {"norm_first": True, "activation": "gelu"},
        lambda dt: {"tgt_mask": _causal(T, dt), "memory_key_padding_mask": _padding(S, dt)},
    ),
    "all-masks": (
        {},
        lambda dt: {
            "tgt_mask": _causal(T, dt),
            "tgt_key_padding_mask": _padding(T, dt),
            "memory_mask": np.random.default_rng(3).random((T, S)) > 0.7,
            "memory_key_padding_mask": _padding(S),
        },
    ),
    "tgt_is_causal-hint": ({}, lambda dt: {"tgt_mask": _causal(T, dt), "tgt_is_causal": True}),
}


@pytest.mark.parametrize(("case", "batch_first"), _alternating(DECODER_LAYER_CASES))
def test_decoder_layer_matches_torch(case, batch_first, dtype):
    settings, call = DECODER_LAYER_CASES[case]
    torch_layer = torch.nn.TransformerDecoderLayer(D, NHEAD, FF, dropout=0.0, batch_first=batch_first, **settings)
    torch_layer = torch_layer.to(torch_dtype(dtype))
    _randomise(torch_layer, dtype)
    fnml_layer = layers.TransformerDecoderLayer(
        D, NHEAD, FF, dropout=0.0, batch_first=batch_first, **settings, param_dtype=dtype, rngs=nnx.Rngs(0)
    )
    inputs = [_seq(dtype, T, 1, batch_first=batch_first), _seq(dtype, S, 2, batch_first=batch_first)]
    module_parity(torch_layer, fnml_layer, inputs, dtype, constants=call(dtype))


# The stacks and the full model: each setting once, the dtype alternating (float64 exactness on the first, float32's
# working tolerance on the second); every layer setting is checked in both dtypes by the layer tests above.
@pytest.mark.parametrize(
    ("norm_first", "dtype"), [(False, "float64"), (True, "float32")], ids=["post-norm-float64", "pre-norm-float32"]
)
def test_two_layer_encoder_forward_and_backward_match_torch(norm_first, dtype):
    torch_encoder = _torch_quiet(
        lambda: torch.nn.TransformerEncoder(
            torch.nn.TransformerEncoderLayer(D, NHEAD, FF, dropout=0.0, norm_first=norm_first),
            num_layers=2,
            norm=torch.nn.LayerNorm(D),
        )
    ).to(torch_dtype(dtype))
    _randomise(torch_encoder, dtype)
    fnml_encoder = layers.TransformerEncoder(
        layers.TransformerEncoderLayer(
            D, NHEAD, FF, dropout=0.0, norm_first=norm_first, param_dtype=dtype, rngs=nnx.Rngs(0)
        ),
        num_layers=2,
        norm=layers.LayerNorm(D, param_dtype=dtype),
    )
    constants = {"mask": _causal(T, dtype), "src_key_padding_mask": _padding(T, dtype)}
    module_parity(torch_encoder, fnml_encoder, [_seq(dtype, T, 1, batch_first=False)], dtype, constants=constants)


@pytest.mark.parametrize(
    ("batch_first", "dtype"), [(False, "float64"), (True, "float32")], ids=["seq-first-float64", "batch_first-float32"]
)
def test_full_transformer_forward_and_backward_match_torch(batch_first, dtype):
    torch_model = _torch_quiet(
        lambda: torch.nn.Transformer(D, NHEAD, 2, 2, FF, dropout=0.0, activation="gelu", batch_first=batch_first)
    ).to(torch_dtype(dtype))
    _randomise(torch_model, dtype)
    fnml_model = layers.Transformer(
        D, NHEAD, 2, 2, FF, dropout=0.0, activation="gelu", batch_first=batch_first, param_dtype=dtype, rngs=nnx.Rngs(0)
    )
    constants = {
        "tgt_mask": _causal(T, dtype),
        "src_key_padding_mask": _padding(S),
        "memory_key_padding_mask": _padding(S),
        "tgt_key_padding_mask": _padding(T, dtype),
    }
    inputs = [_seq(dtype, S, 1, batch_first=batch_first), _seq(dtype, T, 2, batch_first=batch_first)]
    module_parity(torch_model, fnml_model, inputs, dtype, constants=constants)


@nnx.jit
def _run(module, *args):
    """``module(*args)`` as one jitted program (op-by-op dispatch compiles every primitive separately); the
    dropout rng streams advance as in an eager call."""
    return module(*args)


def test_eval_mode_is_the_reference_path_and_dropout_is_off():
    # fnml in eval mode == fnml in training mode with dropout 0 (no fast path of its own).
    torch_layer = torch.nn.TransformerEncoderLayer(D, NHEAD, FF, dropout=0.3).double()
    fnml_layer = layers.TransformerEncoderLayer(D, NHEAD, FF, dropout=0.3, param_dtype="float64", rngs=nnx.Rngs(0))
    reference = layers.TransformerEncoderLayer(D, NHEAD, FF, dropout=0.0, param_dtype="float64", rngs=nnx.Rngs(1))
    interop.load_state_dict(fnml_layer, torch_layer.state_dict())
    interop.load_state_dict(reference, torch_layer.state_dict())
    x = jnp.asarray(_seq("float64", T, 1, batch_first=False))
    assert not np.allclose(_run(fnml_layer, x), _run(reference, x))  # training mode: dropout active
    np.testing.assert_array_equal(_run(fnml_layer.eval(), x), _run(reference, x))
    with torch.no_grad():  # torch's eval mode (its fast path may differ from its reference path by rounding)
        expected = torch_layer.eval()(torch.tensor(np.asarray(x)))
    np.testing.assert_allclose(_run(reference, x), expected.numpy(), atol=1e-12)


def test_clones_share_initial_weights_and_draw_their_own_dropout():
    layer = layers.TransformerEncoderLayer(D, NHEAD, FF, dropout=0.5, rngs=nnx.Rngs(0))
    encoder = layers.TransformerEncoder(layer, num_layers=2)
    first, second = interop.state_dict(encoder.layers[0]), interop.state_dict(encoder.layers[1])
    assert all(np.array_equal(first[k], second[k]) for k in first)  # torch: deep copies
    x = jnp.ones((T, N, D))
    assert not np.array_equal(encoder.layers[0].dropout(x), encoder.layers[1].dropout(x))


def test_transformer_init_is_xavier_uniform_like_torch():
    model = layers.Transformer(64, 4, 1, 1, 128, rngs=nnx.Rngs(0))
    torch_model = _torch_quiet(lambda: torch.nn.Transformer(64, 4, 1, 1, 128))
    ours, theirs = interop.state_dict(model), torch_model.state_dict()
    for name in ("encoder.layers.0.linear1.weight", "decoder.layers.0.self_attn.out_proj.weight"):
        fan_out, fan_in = theirs[name].shape
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        assert np.abs(ours[name]).max() <= bound
        assert stats.kstest(ours[name].ravel(), stats.uniform(loc=-bound, scale=2 * bound).cdf).pvalue > 1e-3
        assert stats.ks_2samp(ours[name].ravel(), theirs[name].numpy().ravel()).pvalue > 1e-3
    # 1-D parameters keep their own init (biases of linear1: torch's U(-1/sqrt(fan_in), ...)).
    assert not np.any(ours["encoder.layers.0.self_attn.in_proj_bias"])


def test_generate_square_subsequent_mask_is_torchs():
    for size in (1, 4):
        np.testing.assert_array_equal(
            layers.Transformer.generate_square_subsequent_mask(size),
            torch.nn.Transformer.generate_square_subsequent_mask(size).numpy(),
        )


REPRS = {
    "encoder-layer-gelu-module": (
        lambda: layers.TransformerEncoderLayer(D, NHEAD, FF, activation=layers.GELU(), rngs=nnx.Rngs(0)),
        lambda: torch.nn.TransformerEncoderLayer(D, NHEAD, FF, activation=torch.nn.GELU()),
    ),
    "decoder-layer": (
        lambda: layers.TransformerDecoderLayer(D, NHEAD, FF, rngs=nnx.Rngs(0)),
        lambda: torch.nn.TransformerDecoderLayer(D, NHEAD, FF),
    ),
    "encoder-2-layers-norm": (
        lambda: layers.TransformerEncoder(
            layers.TransformerEncoderLayer(D, NHEAD, FF, rngs=nnx.Rngs(0)), 2, norm=layers.LayerNorm(D)
        ),
        lambda: torch.nn.TransformerEncoder(
            torch.nn.TransformerEncoderLayer(D, NHEAD, FF), 2, norm=torch.nn.LayerNorm(D), enable_nested_tensor=False
        ),
    ),
    "transformer": (
        lambda: layers.Transformer(D, NHEAD, 2, 1, FF, rngs=nnx.Rngs(0)),
        lambda: _torch_quiet(lambda: torch.nn.Transformer(D, NHEAD, 2, 1, FF)),
    ),
}


@pytest.mark.parametrize("case", list(REPRS), ids=list(REPRS))
def test_print_and_state_dict_keys_match_torch(case):
    fnml_module, torch_module = REPRS[case][0](), REPRS[case][1]()
    assert str(fnml_module) == str(torch_module)
    assert list(interop.state_dict(fnml_module)) == list(torch_module.state_dict())


_LAYER = layers.TransformerEncoderLayer(D, NHEAD, FF, rngs=nnx.Rngs(0))
_MODEL = layers.Transformer(D, NHEAD, 1, 1, FF, rngs=nnx.Rngs(0))

ERRORS = {
    "activation-name": (
        lambda: layers.TransformerEncoderLayer(D, NHEAD, activation="tanh", rngs=nnx.Rngs(0)),
        ValueError,
        "activation should be 'relu' or 'gelu'",
    ),
    "activation-type": (
        lambda: layers.TransformerDecoderLayer(D, NHEAD, activation=3, rngs=nnx.Rngs(0)),
        TypeError,
        "activation must be",
    ),
    "nhead-divides": (
        lambda: layers.TransformerEncoderLayer(6, 4, rngs=nnx.Rngs(0)),
        ValueError,
        r"embed_dim \(6\) must be divisible by num_heads \(4\)",
    ),
    "dropout-range": (
        lambda: layers.TransformerEncoderLayer(D, NHEAD, dropout=-0.1, rngs=nnx.Rngs(0)),
        ValueError,
        "dropout must be in",
    ),
    "norm_first-type": (
        lambda: layers.TransformerEncoderLayer(D, NHEAD, norm_first="yes", rngs=nnx.Rngs(0)),
        TypeError,
        "norm_first must be a bool",
    ),
    "num_layers": (lambda: layers.TransformerEncoder(_LAYER, 0), ValueError, "num_layers must be a positive"),
    "encoder-layer-type": (lambda: layers.TransformerEncoder("layer", 2), TypeError, "encoder_layer must be"),
    "norm-type": (lambda: layers.TransformerDecoder(_LAYER, 1, norm=3), TypeError, "norm must be an fnml layer"),
    "batch-mismatch": (lambda: _MODEL(jnp.ones((S, N, D)), jnp.ones((T, N + 1, D))), ValueError, "batch size"),
    "d_model-mismatch": (lambda: _MODEL(jnp.ones((S, N, D)), jnp.ones((T, N, D + 1))), ValueError, "d_model=8"),
    "is_causal-needs-mask": (lambda: _LAYER(jnp.ones((T, N, D)), is_causal=True), ValueError, "needs attn_mask"),
    "mask-shape": (
        lambda: _LAYER(jnp.ones((T, N, D)), src_mask=jnp.zeros((T, T + 1))),
        ValueError,
        "attn_mask has shape",
    ),
    "mask-size": (lambda: layers.Transformer.generate_square_subsequent_mask(0), ValueError, "sz must be"),
}


@pytest.mark.parametrize("case", list(ERRORS), ids=list(ERRORS))
def test_bad_arguments_raise(case):
    build, error, match = ERRORS[case]
    with pytest.raises(error, match=match):
        build()


def test_encoder_trains_under_jit_without_recompiling():
    encoder = layers.TransformerEncoder(
        layers.TransformerEncoderLayer(D, NHEAD, FF, dropout=0.1, batch_first=True, rngs=nnx.Rngs(0)), 2
    )
    graphdef, params, rest = nnx.split(encoder, nnx.Param, ...)

    @jax.jit
    def step(params, rest, x):
        def loss(params):
            model = nnx.merge(graphdef, params, jax.tree.map(lambda v: v, rest))
            return jnp.mean(model(x) ** 2), nnx.split(model, nnx.Param, ...)[2]

        (value, rest), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), rest, value

    x = jnp.ones((N, T, D))
    params, rest, first = step(params, rest, x)
    params, rest, second = step(params, rest, x)
    assert step._cache_size() == 1
    assert float(second) < float(first)
