"""Option types: every on/off option of the layers and optimizers is a bool, and no error prints array values.

Layers: each constructor option whose default is a bool (found by ``inspect`` over every layer of
``test_layer_facts.ARGS``), plus the bool options without a bool default (``Upsample(align_corners=)``) and the
call-time flags of ``MultiheadAttention``, refuses ``1`` and ``"yes"`` with a TypeError naming the layer, the
option, the expected type and the received value. torch raises its own TypeError only for the RNN family's
``bias`` / ``batch_first``; elsewhere it takes any truthy value: fnml refuses those too (a typo guard, the same
rule for every layer), and the tests pin both sides.

Optimizers: torch's ``SGD(params=...)`` / ``SGD(model.parameters())`` habits get the ``TrainState.create``
lesson; wrong types name the argument and the type; array and tensor values never reach a message.
"""

from __future__ import annotations

import inspect

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from test_layer_facts import ARGS

from fnml import _validation, layers, optim

MARKER = 123.456789  # a value no message may print: it would mean an array's values were printed


def _bool_options() -> list[tuple[str, str]]:
    found = []
    for name, _ in sorted(ARGS.items()):
        cls = getattr(layers, name)
        for option, parameter in inspect.signature(cls.__init__).parameters.items():
            if isinstance(parameter.default, bool):
                found.append((name, option))
    return found


BOOL_OPTIONS = _bool_options()


def _build(name: str, **options):
    cls = getattr(layers, name)
    if "rngs" in inspect.signature(cls.__init__).parameters:
        options["rngs"] = nnx.Rngs(0)
    return cls(*ARGS[name], **options)


def test_the_walk_finds_every_option_family():
    options = {option for _, option in BOOL_OPTIONS}
    expected = {
        "bias",
        "batch_first",
        "bidirectional",
        "affine",
        "track_running_stats",
        "elementwise_affine",
        "inplace",
        "ceil_mode",
        "count_include_pad",
        "return_indices",
        "scale_grad_by_freq",
        "sparse",
    }
    assert expected <= options, expected - options
    assert ("LSTM", "bias") in BOOL_OPTIONS and ("BatchNorm1d", "affine") in BOOL_OPTIONS


@pytest.mark.parametrize("value", [1, "yes"], ids=["int", "str"])
@pytest.mark.parametrize(("name", "option"), BOOL_OPTIONS, ids=[f"{n}-{o}" for n, o in BOOL_OPTIONS])
def test_layer_bool_options_refuse_other_types(name, option, value):
    with pytest.raises(TypeError, match=rf"{name}: {option} must be a bool.*got.*{value!r}"):
        _build(name, **{option: value})


@pytest.mark.parametrize(("name", "option"), BOOL_OPTIONS, ids=[f"{n}-{o}" for n, o in BOOL_OPTIONS])
def test_layer_bool_options_take_numpy_bools(name, option):
    default = inspect.signature(getattr(layers, name).__init__).parameters[option].default
    assert isinstance(_build(name, **{option: np.bool_(default)}), nnx.Module)


@pytest.mark.parametrize(
    ("torch_cls", "option"), [(torch.nn.RNN, "bias"), (torch.nn.LSTM, "batch_first"), (torch.nn.GRU, "bias")]
)
def test_torch_raises_the_same_type_error_for_the_rnn_family(torch_cls, option):
    with pytest.raises(TypeError, match=rf"{option} should be of type bool"):
        torch_cls(4, 4, **{option: 1})
    with pytest.raises(TypeError, match=rf"{torch_cls.__name__}: {option} must be a bool \(True or False\), got 1"):
        _build(torch_cls.__name__, **{option: 1})


@pytest.mark.parametrize(
    ("torch_module", "name", "option"),
    [
        (lambda: torch.nn.BatchNorm1d(4, affine=1), "BatchNorm1d", "affine"),
        (lambda: torch.nn.LayerNorm(4, elementwise_affine=1), "LayerNorm", "elementwise_affine"),
        (lambda: torch.nn.LSTM(4, 4, bidirectional=1), "LSTM", "bidirectional"),
    ],
)
def test_where_torch_takes_an_int_fnml_refuses_it(torch_module, name, option):
    assert isinstance(torch_module(), torch.nn.Module)  # torch: any truthy value (the documented difference)
    with pytest.raises(TypeError, match=rf"{name}: {option} must be a bool"):
        _build(name, **{option: 1})


OTHER_FLAGS = {
    "Upsample-align_corners": (
        lambda: layers.Upsample(scale_factor=2, mode="bilinear", align_corners=1),
        "align_corners",
    ),
    "TransformerEncoderLayer-norm_first": (
        lambda: layers.TransformerEncoderLayer(4, 2, 8, norm_first=1, rngs=nnx.Rngs(0)),
        "norm_first",
    ),
    "Transformer-batch_first": (
        lambda: layers.Transformer(4, 2, 1, 1, 8, batch_first=1, rngs=nnx.Rngs(0)),
        "batch_first",
    ),
    "TransformerEncoder-enable_nested_tensor": (
        lambda: layers.TransformerEncoder(
            layers.TransformerEncoderLayer(4, 2, 8, rngs=nnx.Rngs(0)), 1, enable_nested_tensor=1
        ),
        "enable_nested_tensor",
    ),
    "MultiheadAttention-need_weights": (
        lambda: layers.MultiheadAttention(4, 2, rngs=nnx.Rngs(0))(*[jnp.ones((3, 1, 4))] * 3, need_weights=1),
        "need_weights",
    ),
    "MultiheadAttention-average_attn_weights": (
        lambda: layers.MultiheadAttention(4, 2, rngs=nnx.Rngs(0))(*[jnp.ones((3, 1, 4))] * 3, average_attn_weights=1),
        "average_attn_weights",
    ),
    "Embedding.from_pretrained-freeze": (
        lambda: layers.Embedding.from_pretrained(jnp.ones((3, 2)), freeze=1),
        "freeze",
    ),
    "Module.train-mode": (lambda: layers.ReLU().train(1), "mode"),
}


@pytest.mark.parametrize("case", list(OTHER_FLAGS))
def test_other_bool_flags_refuse_ints(case):
    build, option = OTHER_FLAGS[case]
    with pytest.raises(TypeError, match=rf"{option} must be a bool.*1"):
        build()


# ------------------------------------------------------------------------------------------------
# Optimizers
# ------------------------------------------------------------------------------------------------

FACTORIES = ["sgd", "adam", "adamw", "adamax", "nadam", "radam", "rmsprop", "adagrad", "adadelta"]


def _params():
    return {"fc": {"kernel": jnp.full((3, 4), MARKER), "bias": jnp.full((4,), MARKER)}}


PARAMETER_VALUES = {
    "jax-tree": _params,
    "nnx-state": lambda: nnx.state(layers.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.Param),
    "torch-list": lambda: [torch.full((3,), MARKER)],
    "torch-generator": lambda: torch.nn.Linear(2, 2).parameters(),
}


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("keyword", ["params", "parameters", "model"])
def test_parameters_by_keyword_get_the_train_state_lesson_without_values(factory, keyword):
    lesson = rf"optim\.{factory}: fnml optimizers take no parameters \(got {keyword}=a dict"
    with pytest.raises(TypeError, match=lesson):
        getattr(optim, factory)(lr=0.1, **{keyword: _params()})
    with pytest.raises(TypeError) as info:
        getattr(optim, factory)(**{keyword: _params()})
    assert "TrainState.create(model, optim." in str(info.value) and "123.45" not in str(info.value)


@pytest.mark.parametrize("habit", list(PARAMETER_VALUES))
def test_parameters_as_first_argument_name_their_type_only(habit):
    lesson = r"optim\.sgd: fnml optimizers take no parameters \(got .* as the first"
    with pytest.raises(TypeError, match=lesson) as info:
        optim.sgd(PARAMETER_VALUES[habit](), lr=0.1)
    assert "123.45" not in str(info.value)


def test_an_array_as_first_argument_is_a_parameter_not_a_learning_rate():
    with pytest.raises(TypeError, match=r"got a jax\.Array of shape \(3, 4\) and dtype float64 as the first argument"):
        optim.adam(jnp.full((3, 4), MARKER))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: optim.sgd(lr=jnp.full((3,), MARKER)), TypeError, r"sgd: lr must be a number, got a jax\.Array"),
        (
            lambda: optim.sgd(lr=0.1, foo=torch.full((100,), MARKER, dtype=torch.float64)),
            TypeError,
            r"optim\.sgd: unknown keyword foo=a torch\.Tensor of shape \(100,\) and dtype torch\.float64\?",
        ),
        (lambda: optim.adam(betas=jnp.full((2,), MARKER)), TypeError, r"adam: betas must be a pair .*got a jax\.Array"),
        (lambda: optim.adam(betas=0.9), TypeError, r"adam: betas must be a pair \(beta1, beta2\), got 0\.9"),
        (lambda: optim.adam(betas=(0.9, 0.99, 0.9)), ValueError, r"adam: betas must be a pair .*got betas=\(0\.9"),
        (lambda: optim.rmsprop(alpha=_params()), TypeError, r"rmsprop: alpha must be a number, got a dict of 1 entry"),
        (lambda: optim.param_groups(_params(), labels=None), TypeError, r"groups\['fc'\] must be .*got a dict"),
        (lambda: optim.param_groups([0.1], labels=None), TypeError, r"groups must be a non-empty .*got \[0\.1\]"),
        (lambda: optim.label_by(jnp.full((3,), MARKER)), TypeError, r"fn must be a callable .*got a jax\.Array"),
        (lambda: optim.clip_grad_norm(1.0, error_if_nonfinite=1), TypeError, r"error_if_nonfinite must be a bool"),
        (lambda: optim.get_total_norm(_params(), error_if_nonfinite="no"), TypeError, r"error_if_nonfinite must be"),
    ],
)
def test_optimizer_errors_name_the_argument_and_type_never_values(call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    assert "123.45" not in str(info.value)


OPTIMIZER_FLAGS = [
    (factory, option)
    for factory in FACTORIES
    for option, parameter in inspect.signature(getattr(optim, factory)).parameters.items()
    if isinstance(parameter.default, bool)
]


def test_every_optimizer_has_its_flags_checked():
    assert ("sgd", "nesterov") in OPTIMIZER_FLAGS and ("rmsprop", "centered") in OPTIMIZER_FLAGS
    assert {factory for factory, _ in OPTIMIZER_FLAGS} == set(FACTORIES)  # maximize everywhere


@pytest.mark.parametrize(("factory", "option"), OPTIMIZER_FLAGS, ids=[f"{f}-{o}" for f, o in OPTIMIZER_FLAGS])
def test_optimizer_bool_options_refuse_ints(factory, option):
    with pytest.raises(TypeError, match=rf"{factory}: {option} must be a bool \(True or False\), got 1 \(int\)"):
        getattr(optim, factory)(lr=0.1, **{option: 1})
    assert isinstance(getattr(optim, factory)(lr=0.1, **{option: np.bool_(False)}), optax.GradientTransformation)


# ------------------------------------------------------------------------------------------------
# How a message quotes a value
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, "3 (int)"),
        ("3", "'3' (str)"),
        ((3, 0), "(3, 0) (tuple)"),
        (np.float32(0.5), "np.float32(0.5) (float32)"),
        (np.full((2, 3), MARKER), "a numpy.ndarray of shape (2, 3) and dtype float64"),
        (jnp.full((2,), MARKER), "a jax.Array of shape (2,) and dtype float64"),
        (torch.full((2,), MARKER, dtype=torch.float64), "a torch.Tensor of shape (2,) and dtype torch.float64"),
        (
            torch.nn.Parameter(torch.full((2,), MARKER, dtype=torch.float64)),
            "a torch.Parameter of shape (2,) and dtype torch.float64",
        ),
        ({"w": jnp.ones(2), "b": jnp.ones(2)}, "a dict of 2 entries (not shown)"),
        ([torch.ones(2)], "a list of 1 item (not shown)"),
        (torch.nn.Sequential(torch.nn.Linear(2, 2)), "a Sequential object"),
        ("x" * 200, "'" + "x" * 76 + "... (str)"),
    ],
)
def test_received_quotes_plain_values_and_summarises_the_rest(value, expected):
    assert _validation.received(value) == expected
