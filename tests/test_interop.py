"""fnml.interop against real torch: state dict round trips per layer kind, files, from_torch twins."""

from __future__ import annotations

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from flax import nnx
from helpers import max_abs_diff, tolerance

from fnml import interop, layers, parity

# ----------------------------------------------------------------------------------------------------
# Models written exactly as a PyTorch user writes them
# ----------------------------------------------------------------------------------------------------


class SimpleNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 2)  # input -> hidden
        self.fc2 = nn.Linear(2, 1)  # hidden -> output

    def forward(self, x):
        x = torch.relu(self.fc1(x))
        x = self.fc2(x)
        return x


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 4, 3, stride=1, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.25)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(nn.functional.relu(self.conv2(x)))
        x = self.drop(x)
        return self.fc(self.flatten(x))


class LSTMClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(12, 6, padding_idx=0)
        self.lstm = nn.LSTM(6, 8, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(16, 3)

    def forward(self, tokens):
        out, (h_n, c_n) = self.lstm(self.embedding(tokens))
        return self.head(out[:, -1, :]) + h_n[-1].sum(dim=-1, keepdim=True)


def nested_sequentials():
    return nn.Sequential(
        nn.Sequential(nn.Linear(4, 8), nn.Tanh()),
        nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 2))),
    )


class Functional(nn.Module):
    """Common torch functions and tensor methods between layers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 2 * 2 + 4, 3)
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.mix = nn.Parameter(torch.randn(3, 3))

    def forward(self, x):
        y = F.max_pool2d(torch.tanh(self.conv(x)), 2)  # (N, 4, 4, 4)
        pooled = F.adaptive_avg_pool2d(y, 1).view(x.size(0), -1)  # (N, 4)
        z = F.avg_pool2d(y, kernel_size=2).reshape(x.shape[0], -1)  # (N, 16)
        z = torch.cat([z, pooled * self.scale], dim=1)
        z = F.gelu(self.fc(z)) + z[:, :3].permute(1, 0).transpose(0, 1) @ self.mix
        return F.log_softmax(z - z.mean(dim=1, keepdim=True), dim=-1), torch.sigmoid(y[:, 0, 1:3, ::2])


def _perturb_buffers(module):
    """Non-default BatchNorm statistics so round trips and eval-mode forwards test real values."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.track_running_stats:
                sub.running_mean.uniform_(-1, 1)
                sub.running_var.uniform_(0.5, 2)
                sub.num_batches_tracked.fill_(7)
    return module


def _np(tensor):
    return tensor.detach().numpy()


# ----------------------------------------------------------------------------------------------------
# Round trips torch -> fnml -> torch, every layer kind (bit-exact)
# ----------------------------------------------------------------------------------------------------

LAYER_KINDS = {
    "linear": lambda: nn.Linear(5, 3),
    "linear_nobias": lambda: nn.Linear(5, 3, bias=False),
    "conv2d": lambda: nn.Conv2d(4, 6, (3, 2), stride=2, padding=1, groups=2),
    "conv2d_nobias": lambda: nn.Conv2d(3, 5, 3, bias=False),
    "conv1d": lambda: nn.Conv1d(4, 6, 3, groups=2),
    "conv_transpose1d": lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, groups=2),
    "conv_transpose2d": lambda: nn.ConvTranspose2d(3, 4, (3, 2), stride=2, bias=False),
    "batchnorm1d": lambda: nn.BatchNorm1d(5),
    "batchnorm2d_no_affine": lambda: nn.BatchNorm2d(5, affine=False),
    "batchnorm2d_no_stats": lambda: nn.BatchNorm2d(5, track_running_stats=False),
    "layernorm": lambda: nn.LayerNorm((3, 4)),
    "embedding": lambda: nn.Embedding(7, 4, padding_idx=1),
    "rnn": lambda: nn.RNN(3, 4, num_layers=2, nonlinearity="relu"),
    "lstm_bidirectional": lambda: nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True),
    "gru_nobias": lambda: nn.GRU(3, 4, bias=False, bidirectional=True),
}


@pytest.mark.parametrize("kind", LAYER_KINDS, ids=list(LAYER_KINDS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_state_dict_round_trip_is_bit_exact(kind, dtype):
    torch_dtype = getattr(torch, dtype)
    source = _perturb_buffers(nn.Sequential(LAYER_KINDS[kind]()).to(torch_dtype))
    with torch.no_grad():  # nonzero values everywhere (BatchNorm starts at ones/zeros)
        for p in source.parameters():
            p.uniform_(-1, 1)
    # A twin of a differently initialised module, then the source's weights loaded into it.
    torch.manual_seed(1)
    twin = interop.from_torch(nn.Sequential(LAYER_KINDS[kind]()).to(torch_dtype))
    assert interop.load_state_dict(twin, source.state_dict()) is twin
    exported = interop.state_dict(twin)
    assert list(exported) == list(source.state_dict())  # same names, same order
    target = nn.Sequential(LAYER_KINDS[kind]()).to(torch_dtype)
    target.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()})
    for name, expected in source.state_dict().items():
        actual = target.state_dict()[name]
        assert actual.dtype == expected.dtype, name
        assert torch.equal(actual, expected), name
    # The fnml variables kept the model's dtype.
    for name, value in exported.items():
        if not name.endswith("num_batches_tracked"):
            assert value.dtype == np.dtype(dtype), name


def test_layouts_are_jax_native_after_loading():
    source = nn.Sequential(nn.Conv2d(3, 5, (3, 2)), nn.Linear(4, 6), nn.LSTM(4, 2)).double()
    model = interop.from_torch(nn.Sequential(nn.Conv2d(3, 5, (3, 2)), nn.Linear(4, 6), nn.LSTM(4, 2)).double())
    interop.load_state_dict(model, source.state_dict())
    conv, linear, lstm = (
        model["0"] if False else getattr(model, "0"),
        getattr(model, "1"),
        getattr(model, "2"),
    )
    np.testing.assert_array_equal(conv.kernel[...], _np(source[0].weight).transpose(2, 3, 1, 0))  # OIHW -> HWIO
    np.testing.assert_array_equal(linear.kernel[...], _np(source[1].weight).T)  # (out, in) -> (in, out)
    np.testing.assert_array_equal(lstm.kernel_ih_l0[...], _np(source[2].weight_ih_l0).T)


def test_hand_written_simple_nn_loads_torch_weights():
    torch_model = SimpleNN().double()
    model = layers.SimpleNN(param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    interop.load_state_dict(model, torch_model.state_dict())
    assert list(interop.state_dict(model)) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    x = torch.randn(6, 2, dtype=torch.float64)
    assert max_abs_diff(model(jnp.asarray(_np(x))), torch_model(x)) <= tolerance("float64")["atol"]


def test_float64_weights_are_rounded_into_a_float32_model():
    torch_model = SimpleNN().double()
    model = layers.SimpleNN(rngs=nnx.Rngs(0))  # float32 parameters
    interop.load_state_dict(model, torch_model.state_dict())
    assert model.fc1.kernel[...].dtype == jnp.float32
    np.testing.assert_array_equal(model.fc1.kernel[...], _np(torch_model.fc1.weight).T.astype(np.float32))


def test_numpy_and_jax_values_are_accepted():
    torch_model = SimpleNN()
    model = layers.SimpleNN(rngs=nnx.Rngs(0))
    values = {
        k: (_np(v) if i % 2 else jnp.asarray(_np(v))) for i, (k, v) in enumerate(torch_model.state_dict().items())
    }
    interop.load_state_dict(model, values)
    assert all(np.array_equal(interop.state_dict(model)[k], _np(v)) for k, v in torch_model.state_dict().items())


# ----------------------------------------------------------------------------------------------------
# conv -> flatten -> Linear in a hand-written channels-last model
# ----------------------------------------------------------------------------------------------------


def _nhwc_cnn(dtype):
    rngs = nnx.Rngs(0)
    return layers.Sequential(
        layers.Conv2d(3, 4, 3, padding=1, param_dtype=dtype, rngs=rngs),
        layers.Flatten(),
        layers.Linear(4 * 5 * 6, 3, param_dtype=dtype, rngs=rngs),
    )


def test_flatten_nhwc_permutes_the_linear_after_a_conv():
    torch_model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 6, 3)).double()
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    x_nhwc = jnp.asarray(_np(x).transpose(0, 2, 3, 1))  # (N, C, H, W) -> (N, H, W, C)

    naive = interop.load_state_dict(_nhwc_cnn(jnp.float64), torch_model.state_dict())
    assert max_abs_diff(naive(x_nhwc), torch_model(x)) > 1e-3  # the plain transpose is wrong

    model = interop.load_state_dict(_nhwc_cnn(jnp.float64), torch_model.state_dict(), flatten_nhwc={"2": (4, 5, 6)})
    assert max_abs_diff(model(x_nhwc), torch_model(x)) <= 1e-12
    exported = interop.state_dict(model, flatten_nhwc={"2": (4, 5, 6)})
    assert all(np.array_equal(exported[k], _np(v)) for k, v in torch_model.state_dict().items())


@pytest.mark.parametrize(
    "flag, message",
    [
        ({"0": (4, 5, 6)}, "not a Linear layer"),
        ({"2": (4, 5, 5)}, "C\\*H\\*W == in_features=120"),
        ([1], "mapping"),
    ],
    ids=["not_linear", "wrong_size", "not_mapping"],
)
def test_flatten_nhwc_errors(flag, message):
    with pytest.raises((ValueError, TypeError), match=message):
        interop.state_dict(_nhwc_cnn(jnp.float32), flatten_nhwc=flag)


# ----------------------------------------------------------------------------------------------------
# Strict mode, errors
# ----------------------------------------------------------------------------------------------------


def test_strict_error_lists_every_bad_key_and_assigns_nothing():
    model = layers.SimpleNN(rngs=nnx.Rngs(0))
    before = interop.state_dict(model)
    bad = dict(SimpleNN().state_dict())
    del bad["fc2.bias"], bad["fc1.bias"]
    bad["extra.weight"] = torch.zeros(2)
    bad["fc3.bias"] = torch.zeros(1)
    bad["fc1.weight"] = torch.zeros(2, 3)
    with pytest.raises(interop.StateDictError) as info:
        interop.load_state_dict(model, bad)
    message = str(info.value)
    for key in ("'fc2.bias'", "'fc1.bias'", "'extra.weight'", "'fc3.bias'", "fc1.weight: shape (2, 3)"):
        assert key in message, (key, message)
    assert "Missing key(s)" in message and "Unexpected key(s)" in message and "size mismatch" in message
    after = interop.state_dict(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_non_strict_returns_missing_and_unexpected_like_torch():
    torch_model = SimpleNN()
    partial = dict(torch_model.state_dict())
    del partial["fc2.weight"]
    partial["head.bias"] = torch.zeros(1)
    model = layers.SimpleNN(rngs=nnx.Rngs(0))
    result = interop.load_state_dict(model, partial, strict=False)
    expected = SimpleNN().load_state_dict(partial, strict=False)
    assert result.missing_keys == list(expected.missing_keys) == ["fc2.weight"]
    assert result.unexpected_keys == list(expected.unexpected_keys) == ["head.bias"]
    np.testing.assert_array_equal(model.fc1.kernel[...], _np(torch_model.fc1.weight).T)


def test_shape_mismatch_raises_even_when_not_strict():
    bad = dict(SimpleNN().state_dict())
    bad["fc2.weight"] = torch.zeros(2, 2)
    with pytest.raises(interop.StateDictError, match=r"size mismatch for fc2.weight: shape \(2, 2\)"):
        interop.load_state_dict(layers.SimpleNN(rngs=nnx.Rngs(0)), bad, strict=False)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m: interop.load_state_dict(m, SimpleNN()), TypeError, "pass torch_model.state_dict"),
        (lambda m: interop.load_state_dict(m, 3), TypeError, "must be a mapping"),
        (lambda m: interop.load_state_dict(m, "weights.npz"), ValueError, "unknown extension"),
        (lambda m: interop.load_state_dict(m, {"fc1.weight": "x"}), TypeError, r"state_dict\['fc1.weight'\]"),
        (lambda m: interop.load_state_dict(m, {}, strict="yes"), TypeError, "strict must be a bool"),
        (lambda m: interop.state_dict(SimpleNN()), TypeError, "flax.nnx.Module"),
    ],
    ids=["torch_model", "not_mapping", "extension", "bad_value", "strict_type", "state_dict_of_torch"],
)
def test_argument_errors(call, error, message):
    with pytest.raises(error, match=message):
        call(layers.SimpleNN(rngs=nnx.Rngs(0)))


def test_plain_flax_layer_has_no_converter():
    class Net(nnx.Module):
        def __init__(self):
            self.fc = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    with pytest.raises(TypeError, match="flax.nnx.nn.linear.Linear at 'fc' has no torch layout converter"):
        interop.state_dict(Net())


def test_custom_nnx_module_uses_attribute_paths():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.encoder = layers.Sequential(layers.Linear(3, 4, rngs=rngs), layers.ReLU())
            self.blocks = nnx.List([layers.LayerNorm(4, rngs=rngs), layers.Linear(4, 1, rngs=rngs)])

    names = list(interop.state_dict(Net(nnx.Rngs(0))))
    assert names == [
        "encoder.0.weight",
        "encoder.0.bias",
        "blocks.0.weight",
        "blocks.0.bias",
        "blocks.1.weight",
        "blocks.1.bias",
    ]


# ----------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------


def test_safetensors_round_trip_with_torch(tmp_path):
    from safetensors.torch import load_file, save_file

    torch_model = _perturb_buffers(CNN())
    twin = interop.from_torch(torch_model)
    path = tmp_path / "cnn.safetensors"
    assert interop.save_safetensors(twin, path) == str(path)
    loaded = load_file(str(path))
    for name, value in torch_model.state_dict().items():
        assert torch.equal(loaded[name], value), name
    # torch-written file -> fnml model, by path
    save_file(dict(torch_model.state_dict()), str(tmp_path / "torch.safetensors"))
    fresh = interop.from_torch(CNN())
    interop.load_state_dict(fresh, str(tmp_path / "torch.safetensors"))
    assert all(np.array_equal(interop.state_dict(fresh)[k], _np(v)) for k, v in torch_model.state_dict().items())
    assert list(interop.load_safetensors(path)) and not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_truncated_and_corrupted_safetensors_give_clear_errors(tmp_path):
    path = tmp_path / "model.safetensors"
    interop.save_safetensors(layers.SimpleNN(rngs=nnx.Rngs(0)), path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 7])
    with pytest.raises(ValueError, match=r"truncated\.safetensors.*truncated or corrupted"):
        interop.load_safetensors(truncated)
    corrupted = tmp_path / "corrupted.safetensors"
    corrupted.write_bytes(b"\xff" * 8 + b"not json at all" * 4)
    with pytest.raises(ValueError, match=r"corrupted\.safetensors.*truncated or corrupted"):
        interop.load_state_dict(layers.SimpleNN(rngs=nnx.Rngs(0)), str(corrupted))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        interop.load_safetensors(tmp_path / "missing.safetensors")


def test_save_is_atomic_an_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    import safetensors.numpy

    path = tmp_path / "model.safetensors"
    interop.save_safetensors(layers.SimpleNN(rngs=nnx.Rngs(0)), path)
    original = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        interop.save_safetensors(layers.SimpleNN(rngs=nnx.Rngs(1)), path)
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_save_safetensors_errors(tmp_path):
    with pytest.raises(TypeError, match="fnml model or a mapping"):
        interop.save_safetensors([1, 2], tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="metadata must map str -> str"):
        interop.save_safetensors(layers.SimpleNN(rngs=nnx.Rngs(0)), tmp_path / "x.safetensors", metadata={"a": 1})


def test_pt_checkpoints_load_weights_only(tmp_path):
    torch_model = SimpleNN()
    torch.save(torch_model.state_dict(), tmp_path / "plain.pt")
    torch.save({"state_dict": torch_model.state_dict(), "epoch": 3}, tmp_path / "wrapped.pth")
    for name in ("plain.pt", "wrapped.pth"):
        model = interop.load_state_dict(layers.SimpleNN(rngs=nnx.Rngs(0)), str(tmp_path / name))
        np.testing.assert_array_equal(model.fc2.kernel[...], _np(torch_model.fc2.weight).T)
    torch.save({"epoch": 3}, tmp_path / "no_weights.pt")
    with pytest.raises(ValueError, match="expected a state dict"):
        interop.load_state_dict(layers.SimpleNN(rngs=nnx.Rngs(0)), str(tmp_path / "no_weights.pt"))


class _Payload:
    """A pickle whose loading would create a file: what a malicious checkpoint does."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("protocol", [2, 4], ids=["protocol2", "protocol4"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"fc1.weight": _Payload(str(marker))}, handle, protocol=protocol)
    with pytest.raises(ValueError, match=r"refusing to load .*evil\.pt.*never unpickles"):
        interop.load_state_dict(layers.SimpleNN(rngs=nnx.Rngs(0)), str(path))
    assert not marker.exists()


def test_malicious_zip_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned_zip"
    path = tmp_path / "evil_zip.pth"
    torch.save({"fc1.weight": _Payload(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="refusing to load"):
        interop.load_state_dict(layers.SimpleNN(rngs=nnx.Rngs(0)), str(path))
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------
# from_torch: forward parity
# ----------------------------------------------------------------------------------------------------


def _forward_diff(torch_model, twin, *inputs):
    """max |twin - torch| over every output: parity.compare_forward runs the twin as ONE jitted program (op-by-op
    dispatch compiled every primitive separately) and writes its state updates (BatchNorm statistics) back."""
    return parity.compare_forward(torch_model, twin, inputs).max_abs_diff


def test_from_torch_tutorial_simple_nn(dtype, torch_dtype):
    torch_model = SimpleNN().to(torch_dtype)
    twin = interop.from_torch(torch_model)
    assert isinstance(twin.fc1, layers.Linear) and isinstance(twin.fc1.kernel, nnx.Param)
    assert twin.fc1.kernel[...].dtype == np.dtype(dtype)
    x = torch.randn(16, 2, dtype=torch_dtype)
    assert _forward_diff(torch_model, twin, x) <= tolerance(dtype)["atol"]
    assert "SimpleNN" in repr(twin) and "(fc1): Linear(in_features=2" in repr(twin)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_from_torch_cnn_with_custom_forward(dtype, torch_dtype, mode):
    torch_model = _perturb_buffers(CNN().to(torch_dtype))
    torch_model.drop.p = 0.0 if mode == "train" else 0.25  # masks cannot match; eval ignores p
    getattr(torch_model, mode)()
    twin = interop.from_torch(torch_model)
    x = torch.randn(4, 3, 8, 8, dtype=torch_dtype)
    assert _forward_diff(torch_model, twin, x) <= tolerance(dtype)["atol"]
    # In training mode both updated their BatchNorm statistics identically.
    exported = interop.state_dict(twin)
    for name, value in torch_model.state_dict().items():
        np.testing.assert_allclose(exported[name], _np(value), **tolerance(dtype), err_msg=name)


def test_from_torch_lstm_classifier_batch_first(dtype, torch_dtype):
    torch_model = LSTMClassifier().to(torch_dtype)
    twin = interop.from_torch(torch_model)
    tokens = torch.randint(0, 12, (5, 7))
    assert _forward_diff(torch_model, twin, tokens) <= tolerance(dtype)["atol"]


def test_from_torch_nested_sequentials(dtype, torch_dtype):
    torch_model = nested_sequentials().to(torch_dtype)
    twin = interop.from_torch(torch_model)
    assert isinstance(getattr(twin, "1"), layers.Sequential)
    x = torch.randn(6, 4, dtype=torch_dtype)
    assert _forward_diff(torch_model, twin, x) <= tolerance(dtype)["atol"]
    assert list(interop.state_dict(twin)) == list(torch_model.state_dict())


def test_from_torch_functions_and_methods(dtype, torch_dtype):
    torch_model = Functional().to(torch_dtype)
    twin = interop.from_torch(torch_model)
    x = torch.randn(3, 2, 8, 8, dtype=torch_dtype)
    assert _forward_diff(torch_model, twin, x) <= tolerance(dtype)["atol"]
    assert list(interop.state_dict(twin)) == list(torch_model.state_dict())  # "scale", "mix" first, as torch


def test_twin_trains_with_jax_grad_and_jit():
    torch_model = SimpleNN().double()
    twin = interop.from_torch(torch_model)
    graphdef, params = nnx.split(twin)
    x = jnp.ones((4, 2), jnp.float64)

    @jax.jit
    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p)(x) ** 2)

    grads = jax.grad(loss)(params)
    torch.sum(torch_model(torch.ones(4, 2, dtype=torch.float64)) ** 2).backward()
    np.testing.assert_allclose(grads["fc1"]["kernel"][...], _np(torch_model.fc1.weight.grad).T, atol=1e-12)


def test_twin_program_is_printable():
    assert "relu" in interop.from_torch(SimpleNN()).program_text()


# ----------------------------------------------------------------------------------------------------
# from_torch: unsupported ops
# ----------------------------------------------------------------------------------------------------


class UsesErf(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return torch.erfinv(self.fc(x))


class UsesConv1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Bilinear(2, 2, 3)

    def forward(self, x):
        return self.conv(x, x)


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return x


class UsesNumel(nn.Module):
    def forward(self, x):
        return x.cumsum(0)


@pytest.mark.parametrize(
    "model, message",
    [
        (
            UsesErf(),
            r"unsupported operation torch\.erfinv at fx node 'erfinv'.*test_interop\.py.*torch\.erfinv",
        ),
        (UsesNumel(), r"tensor method \.cumsum\(\) at fx node 'cumsum'.*x\.cumsum\(0\)"),
        (UsesConv1d(), r"torch\.nn\.Bilinear at 'conv' has no fnml layer; pass example inputs"),
        (DataDependent(), "could not trace DataDependent.forward"),
        (nn.Sequential(nn.LSTM(2, 4, proj_size=2)), "proj_size=2"),
        (nn.Linear(2, 2), "pass a model, not a bare torch.nn.Linear"),
    ],
    ids=["function", "method", "module", "control_flow", "setting", "bare_layer"],
)
def test_unsupported_ops_name_the_op_and_where(model, message):
    with pytest.raises(interop.UnsupportedTorchOpError, match=message):
        interop.from_torch(model)


def test_from_torch_rejects_non_modules():
    with pytest.raises(TypeError, match="expects a torch.nn.Module, got int"):
        interop.from_torch(3)


def test_inner_container_is_not_callable_on_its_own():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()

        def forward(self, x):
            return self.block(x)

    twin = interop.from_torch(Net())
    assert list(interop.state_dict(twin)) == ["block.fc.weight", "block.fc.bias"]
    with pytest.raises(TypeError, match="call the root module"):
        twin.block(jnp.ones((1, 2)))


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
def test_recurrent_cells_state_dict_uses_torch_names_and_layouts(kind):
    """torch's weight_ih/weight_hh (G*H, in) <-> fnml's kernel_ih/kernel_hh (in, G*H): names, order, values."""
    torch_cell = getattr(torch.nn, kind)(3, 4).double()
    cell = getattr(layers, kind)(3, 4, param_dtype=np.float64, rngs=nnx.Rngs(0))
    interop.load_state_dict(cell, torch_cell.state_dict())
    exported = interop.state_dict(cell)
    assert list(exported) == list(torch_cell.state_dict())
    for name, value in torch_cell.state_dict().items():
        np.testing.assert_array_equal(exported[name], value.numpy())
    x = np.random.default_rng(0).standard_normal((2, 3))
    torch_out, fnml_out = torch_cell(torch.from_numpy(x)), cell(jnp.asarray(x))
    torch_h = torch_out[0] if isinstance(torch_out, tuple) else torch_out
    fnml_h = fnml_out[0] if isinstance(fnml_out, tuple) else fnml_out
    assert max_abs_diff(fnml_h, torch_h) <= 1e-12
