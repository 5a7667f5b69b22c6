"""Each layer's torch facts, declared once on the layer class, and the views derived from them.

Every layer class exported by ``fnml.layers`` carries ``torch_facts``; state dicts, capture, parity, autocast and
``fit`` read it. The walk below fails for a layer missing its declaration or declaring something its torch
counterpart does not have. The drift bugs the scattered tables had are pinned below it.
"""

from __future__ import annotations

import inspect

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from fnml import _fit, _step, interop, layers, losses, optim, parity, train
from fnml.interop import lowering
from fnml.interop.state_dicts import _slots
from fnml.layers._facts import CHILDREN, LAYOUTS, LayerCall, TorchFacts

# Constructor arguments valid for both the torch layer and the fnml layer (sizes first, as both take them).
ARGS = {
    "AdaptiveAvgPool1d": (3,),
    "AdaptiveAvgPool2d": ((2, 3),),
    "AdaptiveMaxPool1d": (3,),
    "AdaptiveMaxPool2d": (2,),
    "AlphaDropout": (0.2,),
    "AvgPool1d": (3,),
    "AvgPool2d": (3,),
    "BatchNorm1d": (4,),
    "BatchNorm2d": (4,),
    "CELU": (),
    "CircularPad1d": (1,),
    "CircularPad2d": (1,),
    "ConstantPad1d": (1, 2.0),
    "ConstantPad2d": (1, 2.0),
    "Conv1d": (2, 4, 3),
    "Conv2d": (2, 4, 3),
    "ConvTranspose1d": (2, 4, 3),
    "ConvTranspose2d": (2, 4, 3),
    "Dropout": (),
    "Dropout1d": (),
    "Dropout2d": (),
    "ELU": (),
    "Embedding": (5, 3),
    "Flatten": (),
    "GELU": (),
    "GLU": (),
    "GRU": (3, 4),
    "GRUCell": (3, 4),
    "GroupNorm": (2, 4),
    "Hardsigmoid": (),
    "Hardswish": (),
    "Hardtanh": (),
    "Identity": (),
    "InstanceNorm1d": (4,),
    "InstanceNorm2d": (4,),
    "LSTM": (3, 4),
    "LSTMCell": (3, 4),
    "LayerNorm": (4,),
    "LeakyReLU": (),
    "Linear": (3, 4),
    "LocalResponseNorm": (2,),
    "LogSigmoid": (),
    "LogSoftmax": (1,),
    "MaxPool1d": (2,),
    "MaxPool2d": (2,),
    "Mish": (),
    "MultiheadAttention": (8, 2),
    "NonDynamicallyQuantizableLinear": (3, 4),
    "PReLU": (),
    "PixelShuffle": (2,),
    "PixelUnshuffle": (2,),
    "RMSNorm": (4,),
    "RNN": (3, 4),
    "RNNCell": (3, 4),
    "ReLU": (),
    "ReLU6": (),
    "ReflectionPad1d": (1,),
    "ReflectionPad2d": (1,),
    "ReplicationPad1d": (1,),
    "ReplicationPad2d": (1,),
    "SELU": (),
    "SiLU": (),
    "Sigmoid": (),
    "Softmax": (1,),
    "Softplus": (),
    "Softsign": (),
    "Tanh": (),
    "Threshold": (0.1, 2.0),
    "TransformerDecoderLayer": (8, 2, 16),
    "TransformerEncoderLayer": (8, 2, 16),
    "Unflatten": (1, (2, 2)),
    "Upsample": (None, 2.0),
    "ZeroPad1d": (1,),
    "ZeroPad2d": (1,),
}
# Containers and stacks built from other modules: declared, but not built from sizes alone here.
BUILT_FROM_MODULES = {
    "Module",
    "ModuleDict",
    "ModuleList",
    "Sequential",
    "SimpleNN",
    "Transformer",
    "TransformerDecoder",
    "TransformerEncoder",
}
# torch __constants__ that are not settings to compare: no effect in JAX (inplace), derived from the class (mode,
# name), refused at construction (proj_size), a submodule (norm), or fixed by the class (ReLU6's bounds, the
# output_padding of a non-transposed convolution).
NOT_SETTINGS = {"inplace", "mode", "name", "proj_size", "norm"}
FIXED_BY_CLASS = {"Conv1d": {"output_padding"}, "Conv2d": {"output_padding"}, "ReLU6": {"min_val", "max_val"}}


def _layer_classes() -> dict[str, type]:
    return {
        name: value
        for name, value in vars(layers).items()
        if isinstance(value, type) and issubclass(value, nnx.Module) and value.__module__.startswith("fnml.layers")
    }


def _undeclared(classes) -> list[str]:
    return [cls.__name__ for cls in classes if not isinstance(cls.__dict__.get("torch_facts"), TorchFacts)]


def _torch_class(name: str) -> type | None:
    if hasattr(torch.nn, name):
        return getattr(torch.nn, name)
    return getattr(torch.nn.modules.linear, name, None)  # NonDynamicallyQuantizableLinear


def _pair(name: str) -> tuple[torch.nn.Module, nnx.Module]:
    fnml_cls = getattr(layers, name)
    kwargs = {"rngs": nnx.Rngs(0)} if "rngs" in inspect.signature(fnml_cls.__init__).parameters else {}
    return _torch_class(name)(*ARGS[name]), fnml_cls(*ARGS[name], **kwargs)


def test_every_layer_class_declares_its_torch_facts():
    classes = _layer_classes()
    assert len(classes) > 70
    assert _undeclared(classes.values()) == []
    assert set(ARGS) | BUILT_FROM_MODULES == set(classes), "a new layer needs constructor arguments in ARGS"

    class Fresh(layers.Module):  # a layer without its own declaration is caught (the base's is not inherited)
        pass

    assert _undeclared([Fresh]) == ["Fresh"]


@pytest.mark.parametrize("name", sorted(_layer_classes()))
def test_each_derived_view_is_complete(name):
    cls = getattr(layers, name)
    facts = cls.torch_facts
    # torch class: a torch.nn class (the tutorial's SimpleNN is the tutorial's own torch module)
    assert facts.torch_classes[0] == name
    assert name == "SimpleNN" or _torch_class(name) is not None
    assert facts.layout in LAYOUTS
    assert facts.capture is None or isinstance(facts.capture, LayerCall)
    for op in facts.capture.aten_ops if facts.capture else ():
        assert hasattr(torch.ops.aten, op.removeprefix("aten.")), op
    assert isinstance(facts.autocast, bool)
    if name in BUILT_FROM_MODULES:
        assert facts.composite and facts.layout == CHILDREN
        return
    torch_layer, fnml_layer = _pair(name)
    # state dict: the declared slots give torch's names and shapes (composites walk their children)
    torch_sd = torch.nn.Sequential(torch_layer).state_dict()
    fnml_sd = interop.state_dict(layers.Sequential(fnml_layer))
    assert {k: tuple(v.shape) for k, v in fnml_sd.items()} == {k: tuple(v.shape) for k, v in torch_sd.items()}
    assert facts.composite or _slots(fnml_layer) is not None
    assert not (facts.parameterless and torch_sd)
    # settings: every torch setting is declared, each exists on both sides and the defaults agree
    constants = set(getattr(type(torch_layer), "__constants__", None) or ())
    assert constants - NOT_SETTINGS - FIXED_BY_CLASS.get(name, set()) <= set(facts.settings)
    for setting in facts.settings:
        assert hasattr(torch_layer, setting) and (hasattr(fnml_layer, setting) or setting == "bias"), setting
    report = parity.check_defaults(torch.nn.Sequential(torch_layer), layers.Sequential(fnml_layer))
    assert report.mismatches == [], report.mismatches
    # autocast: a layer autocast lowers has the computation dtype the step sets
    assert not facts.autocast or hasattr(fnml_layer, "dtype")


# ----------------------------------------------------------------------------------------------------
# The drift bugs of the scattered tables
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "second",
    [
        (lambda: torch.nn.Upsample(scale_factor=2), lambda: layers.Upsample(scale_factor=2)),
        (lambda: torch.nn.AdaptiveMaxPool2d(2), lambda: layers.AdaptiveMaxPool2d(2)),
    ],
    ids=["upsample", "adaptive_max_pool2d"],
)
def test_first_divergence_moves_every_channels_last_layer_back(second):
    torch_second, fnml_second = second
    torch.manual_seed(0)
    torch_model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch_second()).double()
    port = layers.Sequential(layers.Conv2d(3, 4, 3, param_dtype=jnp.float64, rngs=nnx.Rngs(0)), fnml_second())
    interop.load_state_dict(port, torch_model.state_dict())
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    x_nhwc = x.numpy().transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    expected = torch_model(x).detach().numpy()
    np.testing.assert_allclose(np.asarray(port(x_nhwc)).transpose(0, 3, 1, 2), expected, atol=1e-12)  # correct port
    report = parity.first_divergence(torch_model, port, x, fnml_inputs=x_nhwc)
    assert [row.status for row in report.layers] == ["ok", "ok"]
    assert report.first_divergent is None


@pytest.mark.parametrize(
    ("torch_layer", "fnml_layer", "setting"),
    [
        (lambda: torch.nn.Conv1d(2, 4, 3, stride=2), lambda: layers.Conv1d(2, 4, 3, rngs=nnx.Rngs(0)), "stride"),
        (
            lambda: torch.nn.ConvTranspose1d(2, 4, 3, stride=2, output_padding=1),
            lambda: layers.ConvTranspose1d(2, 4, 3, stride=2, rngs=nnx.Rngs(0)),
            "output_padding",
        ),
        (
            lambda: torch.nn.ConvTranspose2d(2, 4, 3, dilation=2),
            lambda: layers.ConvTranspose2d(2, 4, 3, rngs=nnx.Rngs(0)),
            "dilation",
        ),
        (lambda: torch.nn.GroupNorm(2, 4, eps=1e-3), lambda: layers.GroupNorm(2, 4), "eps"),
        (lambda: torch.nn.InstanceNorm2d(4, affine=True), lambda: layers.InstanceNorm2d(4), "affine"),
        (lambda: torch.nn.MaxPool1d(2, padding=1), lambda: layers.MaxPool1d(2), "padding"),
    ],
    ids=["conv1d", "conv_transpose1d", "conv_transpose2d", "group_norm", "instance_norm2d", "max_pool1d"],
)
def test_check_defaults_reports_a_wrong_setting_on_every_layer(torch_layer, fnml_layer, setting):
    report = parity.check_defaults(torch.nn.Sequential(torch_layer()), layers.Sequential(fnml_layer()))
    assert [(m.layer, m.setting) for m in report.mismatches] == [("0", setting)]


def test_check_defaults_compares_attention_settings():
    torch_model = torch.nn.Sequential(torch.nn.MultiheadAttention(8, 2, batch_first=True))
    report = parity.check_defaults(torch_model, layers.Sequential(layers.MultiheadAttention(8, 2, rngs=nnx.Rngs(0))))
    assert [(m.layer, m.setting, m.torch_value, m.fnml_value) for m in report.mismatches] == [
        ("0", "batch_first", True, False)
    ]


class TorchAttention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(16, 4, batch_first=True)
        self.fc = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.attn(x, x, x)[0].mean(1))


class Attention(layers.Module):
    def __init__(self, *, rngs):
        self.attn = layers.MultiheadAttention(16, 4, batch_first=True, rngs=rngs)
        self.fc = layers.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.fc(self.attn(x, x, x)[0].mean(1))


def test_multihead_attention_follows_torch_autocast():
    torch.manual_seed(0)
    torch_model = TorchAttention()
    model = interop.load_state_dict(Attention(rngs=nnx.Rngs(0)), torch_model.state_dict())
    X, Y = torch.randn(8, 5, 16), torch.randint(0, 3, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attention = torch_model.attn(X, X, X)[0]
        expected = torch.nn.functional.cross_entropy(torch_model(X), Y).item()
    seen = []

    def loss_fn(m, x, y):
        seen.append(m.attn(x, x, x)[0].dtype)  # the layer as the autocast step runs it
        return losses.cross_entropy(m(x), y)

    state = train.TrainState.create(model, optim.sgd(lr=0.1))
    _, loss = train.make_train_step(loss_fn=loss_fn, autocast="bfloat16")(state, X.numpy(), Y.numpy())
    assert attention.dtype == torch.bfloat16 and seen == [jnp.bfloat16]  # float32 before: not lowered
    # The softmax of the bfloat16 scores runs in float32 and rounds once, as torch's CPU kernel: the lowered layer
    # gives torch's autocast output bit for bit (measured: 0 of 640 elements differ, eager and under jit;
    # 397 differed by a bfloat16 step when jax rounded each intermediate), and the loss to float32 rounding.
    lowered = nnx.clone(model)
    _step.apply_autocast(lowered, jnp.bfloat16)
    x = jnp.asarray(X.numpy())
    for run in (lambda m: m.attn(x, x, x)[0], nnx.jit(lambda m: m.attn(x, x, x)[0])):
        np.testing.assert_array_equal(np.asarray(run(lowered).astype(jnp.float32)), attention.detach().float().numpy())
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6, atol=0)


def test_has_conv_reads_the_declarations():
    mlp = layers.Sequential(layers.Linear(2, 3, rngs=nnx.Rngs(0)), layers.ReLU())
    assert not _fit._has_conv(mlp)
    assert _fit._has_conv(layers.Sequential(layers.ConvTranspose1d(2, 3, 3, rngs=nnx.Rngs(0))))
    assert _fit._has_conv(layers.Sequential(nnx.Conv(2, 3, (3,), rngs=nnx.Rngs(0))))


# ----------------------------------------------------------------------------------------------------
# The lowering table's properties, and the fx path's layouts
# ----------------------------------------------------------------------------------------------------


def test_lowering_properties_are_read_off_the_entries():
    assert lowering.ELEMENTWISE == {name for name, entry in lowering.OPS.items() if entry.elementwise}
    assert lowering.VIEWS == {name for name, entry in lowering.OPS.items() if entry.view}
    assert {"aten.relu", "aten.add", "aten.dropout"} <= lowering.ELEMENTWISE
    assert {"aten.view", "aten.slice", "aten.detach"} <= lowering.VIEWS
    assert lowering.OPS["aten.dropout"].random and not lowering.OPS["aten.linear"].elementwise
    for name in lowering.ELEMENTWISE | lowering.VIEWS:
        assert lowering.lookup(name) is not None  # no property for an op without a lowering


def test_fx_twin_runs_channels_last_layers_in_torch_layout():
    torch.manual_seed(0)
    torch_model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Upsample(scale_factor=2), torch.nn.PReLU(4))
    twin = interop.from_torch(torch_model)  # no example inputs: torch.fx
    x = torch.randn(2, 3, 6, 6)
    np.testing.assert_allclose(np.asarray(twin(x)), torch_model(x).detach().numpy(), atol=1e-5, rtol=1e-5)
