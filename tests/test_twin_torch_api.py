"""A ported twin answers torch's module API, and refuses the inputs torch's forward refuses.

``interop.from_torch`` returns a ``TorchTwin``: ``parameters()``, ``named_parameters()``, ``buffers()``,
``state_dict()``, ``load_state_dict()``, ``to()``, ``double()``... answer with torch's names, order and
layouts (checked against the torch module itself); the rest of ``torch.nn.Module``'s API raises an
``AttributeError`` that says what fnml offers instead, without breaking NNX (``nnx.split``, ``hasattr``,
``TrainState.create``). A call with an input dtype torch's forward refuses (an int32 image into a conv net)
is a ``TypeError`` naming the argument; each case shows torch raising too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn as nn
from flax import nnx
from helpers import assert_trees_close

from fnml import device, interop, layers, losses, optim, train


class TinyResNet(nn.Module):
    """conv -> BN -> ReLU -> residual block -> global pool -> Linear, with a registered scale buffer."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.register_buffer("scale", torch.full((4, 1, 1), 0.5))
        self.register_buffer("offset", torch.zeros(1), persistent=False)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.stem(x)
        h = torch.relu(h + self.block(h) * self.scale) + self.offset
        return self.fc(h.mean(dim=(2, 3)))


class TiedLM(nn.Module):
    """Embedding tied to the output head (one parameter under two names), a frozen parameter, a custom one."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(4))
        self.emb = nn.Embedding(7, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 7, bias=False)
        self.head.weight = self.emb.weight
        self.norm.bias.requires_grad_(False)

    def forward(self, ids):
        return self.head(self.norm(self.emb(ids)) * self.gain)


def _resnet(dtype=torch.float64):
    torch.manual_seed(0)
    net = TinyResNet().to(dtype)
    with torch.no_grad():  # non-trivial running statistics, so eval mode reads them
        for bn in (net.stem[1], net.block[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 5, 5, dtype=dtype)
    return net, x


def _tied():
    torch.manual_seed(1)
    net = TiedLM().double()
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    return net, ids


@pytest.fixture(scope="module")
def resnet():
    net, x = _resnet()
    return net, x, interop.from_torch(net, x)


def _torch_layout_values(pairs):
    return {name: np.asarray(value) for name, value in pairs}


# ----------------------------------------------------------------------------------------------------
# parameters / buffers / modules: torch's names, order, layouts
# ----------------------------------------------------------------------------------------------------


def test_named_parameters_are_torchs_names_order_and_values(resnet):
    net, x, twin = resnet
    names = [name for name, _ in twin.named_parameters()]
    assert names == [name for name, _ in net.named_parameters()]
    assert_trees_close(
        _torch_layout_values(twin.named_parameters()),
        {n: p.detach() for n, p in net.named_parameters()},
        atol=0,
        rtol=0,
    )
    shapes = [tuple(p.shape) for p in twin.parameters()]
    assert shapes == [tuple(p.shape) for p in net.parameters()]
    assert sum(p.size for p in twin.parameters()) == sum(p.numel() for p in net.parameters())
    assert all(isinstance(p, jax.Array) for p in twin.parameters())


def test_named_parameters_prefix_and_recurse_follow_torch():
    net, ids = _tied()
    twin = interop.from_torch(net, ids)
    assert [n for n, _ in twin.named_parameters(prefix="lm")] == [n for n, _ in net.named_parameters(prefix="lm")]
    assert [n for n, _ in twin.named_parameters(recurse=False)] == [n for n, _ in net.named_parameters(recurse=False)]
    assert [n for n, _ in twin.named_parameters(recurse=False)] == ["gain"]
    with pytest.raises(TypeError, match="recurse must be a bool"):
        list(twin.named_parameters(recurse=1))
    with pytest.raises(TypeError, match="prefix must be a str, got prefix=3"):
        twin.named_parameters(prefix=3)


def test_tied_parameter_is_listed_once_as_in_torch():
    net, ids = _tied()
    twin = interop.from_torch(net, ids)
    assert [n for n, _ in twin.named_parameters()] == [n for n, _ in net.named_parameters()]
    assert "head.weight" not in dict(twin.named_parameters())
    everything = [n for n, _ in net.named_parameters(remove_duplicate=False)]
    assert [n for n, _ in twin.named_parameters(remove_duplicate=False)] == everything
    assert len(list(twin.parameters())) == len(list(net.parameters())) == 4
    # Frozen parameters (requires_grad=False) are parameters, as in torch.
    assert "norm.bias" in dict(twin.named_parameters())


def test_buffers_include_non_persistent_ones_in_torchs_order(resnet):
    net, x, twin = resnet
    assert [n for n, _ in twin.named_buffers()] == [n for n, _ in net.named_buffers()]
    assert_trees_close(
        _torch_layout_values(twin.named_buffers()), {n: b for n, b in net.named_buffers()}, atol=0, rtol=0
    )
    assert [tuple(b.shape) for b in twin.buffers()] == [tuple(b.shape) for b in net.buffers()]
    assert "offset" in dict(twin.named_buffers()) and "offset" not in twin.state_dict()
    assert [n for n, _ in twin.named_buffers(recurse=False)] == [n for n, _ in net.named_buffers(recurse=False)]


def test_children_and_modules_have_torchs_names(resnet):
    net, x, twin = resnet
    assert [n for n, _ in twin.named_children()] == [n for n, _ in net.named_children()]
    assert [n for n, _ in twin.named_modules()] == [n for n, _ in net.named_modules()]
    # the root is a TorchTwin (printed under torch's class name); the modules under it carry torch's class names
    modules = list(twin.modules())
    assert modules[0] is twin and str(twin).startswith("TinyResNet(")
    assert [type(m).__name__ for m in modules[1:]] == [type(m).__name__ for m in list(net.modules())[1:]]
    assert [type(m).__name__ for m in twin.children()] == [type(m).__name__ for m in net.children()]
    assert [n for n, _ in twin.named_modules(prefix="m")] == [n for n, _ in net.named_modules(prefix="m")]
    with pytest.raises(TypeError, match="prefix must be a str, got prefix=None"):
        twin.named_modules(prefix=None)


# ----------------------------------------------------------------------------------------------------
# state_dict / load_state_dict
# ----------------------------------------------------------------------------------------------------


def test_state_dict_is_torchs(resnet):
    net, x, twin = resnet
    sd = twin.state_dict()
    assert list(sd) == list(net.state_dict())
    assert_trees_close(dict(sd), dict(net.state_dict()), atol=0, rtol=0)
    assert sd["stem.1.num_batches_tracked"].dtype == np.int64


def test_load_state_dict_takes_torchs_weights_and_computes_like_torch():
    net, x = _resnet()
    twin = interop.from_torch(net, x).eval()
    other, _ = _resnet()
    torch.manual_seed(5)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p))
    result = twin.load_state_dict(other.state_dict())
    assert result == other.load_state_dict(other.state_dict())  # torch's _IncompatibleKeys([], [])
    assert result == interop.IncompatibleKeys([], [])
    assert_trees_close(twin(x), other.eval()(x).detach())
    # numpy and jax arrays too
    twin.load_state_dict({k: jnp.asarray(v.numpy()) for k, v in net.state_dict().items()})
    assert_trees_close(twin(x), net.eval()(x).detach())


def test_load_state_dict_strict_errors_match_torch():
    net, x = _resnet()
    twin = interop.from_torch(net, x)
    sd = dict(net.state_dict())
    missing = {k: v for k, v in sd.items() if k != "fc.bias"}
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: 'fc.bias'"):
        twin.load_state_dict(missing)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "fc.bias"'):
        net.load_state_dict(missing)
    extra = dict(sd, ghost=torch.zeros(1))
    with pytest.raises(interop.StateDictError, match=r"Unexpected key\(s\) in state_dict: 'ghost'"):
        twin.load_state_dict(extra)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        net.load_state_dict(extra)
    wrong = dict(sd, **{"fc.weight": torch.zeros(3, 5, dtype=torch.float64)})
    for strict in (True, False):
        with pytest.raises(interop.StateDictError, match=r"size mismatch for fc.weight: .*\(3, 5\).*\(3, 4\)"):
            twin.load_state_dict(wrong, strict=strict)
        with pytest.raises(RuntimeError, match="size mismatch for fc.weight"):
            net.load_state_dict(wrong, strict=strict)
    before = twin.state_dict()
    with pytest.raises(interop.StateDictError):
        twin.load_state_dict(dict(wrong, ghost=torch.zeros(1)))
    assert_trees_close(dict(twin.state_dict()), dict(before), atol=0, rtol=0)  # nothing assigned
    with pytest.raises(TypeError, match="strict must be a bool"):
        twin.load_state_dict(sd, strict=1)
    with pytest.raises(TypeError, match="not the torch model"):
        twin.load_state_dict(net)


def test_load_state_dict_non_strict_returns_torchs_keys():
    net, x = _resnet()
    twin = interop.from_torch(net, x)
    partial = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    partial["ghost"] = torch.zeros(1)
    ours = twin.load_state_dict(partial, strict=False)
    theirs = net.load_state_dict(partial, strict=False)
    assert ours.missing_keys == theirs.missing_keys == ["fc.weight", "fc.bias"]
    assert ours.unexpected_keys == theirs.unexpected_keys == ["ghost"]


def test_load_state_dict_counts_each_name_of_a_tied_parameter_as_torch_does():
    net, ids = _tied()
    twin = interop.from_torch(net, ids)
    sd = {k: v for k, v in net.state_dict().items() if k != "head.weight"}
    with pytest.raises(RuntimeError, match="head.weight"):
        net.load_state_dict(sd)
    with pytest.raises(interop.StateDictError, match=r"Missing key\(s\) in state_dict: 'head.weight'"):
        twin.load_state_dict(sd)
    new = {k: v + 1 for k, v in net.state_dict().items()}
    net.load_state_dict(new)
    twin.load_state_dict(new)
    assert_trees_close(twin(ids), net(ids).detach())


# ----------------------------------------------------------------------------------------------------
# train / eval / to / double / float / cuda
# ----------------------------------------------------------------------------------------------------


def test_train_and_eval_return_the_twin_and_switch_like_torch(resnet):
    net, x, _ = resnet
    twin = interop.from_torch(net, x)
    assert twin.eval() is twin and twin.training is False
    assert_trees_close(twin(x), net.eval()(x).detach())
    assert twin.train() is twin and twin.train(True).training is True
    net.train()
    assert_trees_close(twin(x), net(x).detach())


def test_to_a_device_moves_in_place_and_returns_the_twin(resnet):
    net, x, _ = resnet
    twin = interop.from_torch(net, x)
    cpu = jax.devices("cpu")[0]
    for spec in ("cpu", cpu, torch.device("cpu"), "cpu:0"):
        assert twin.to(spec) is twin
        assert all(p.devices() == {cpu} for p in twin.parameters())
    assert twin.to(device="cpu", non_blocking=True) is twin
    assert twin.cpu() is twin
    with pytest.raises(device.DeviceNotFoundError, match="'cpu:7' does not exist"):
        twin.to("cpu:7")
    with pytest.raises(ValueError, match="unknown device string 'tpuu'"):
        twin.to("tpuu")
    with pytest.raises(TypeError, match="expected a device .* got int 3"):
        twin.to(3)
    with pytest.raises(TypeError, match=r"unexpected keyword\(s\) \['memory_format'\]"):
        twin.to("cpu", memory_format=torch.channels_last)
    with pytest.raises(TypeError, match="non_blocking must be a bool"):
        twin.to("cpu", non_blocking=1)


@pytest.mark.skipif(device.cuda_is_available(), reason="the no-GPU error")
def test_cuda_without_a_gpu_says_to_use_fnml_device(resnet):
    net, x, twin = resnet
    with pytest.raises(device.DeviceNotFoundError, match=r"TorchTwin.cuda: JAX sees no GPU.*fnml\.device\.device"):
        twin.cuda()
    with pytest.raises(device.DeviceNotFoundError, match="'cuda' is not available"):
        twin.to("cuda")
    with pytest.raises(TypeError, match="device must be an int"):
        twin.cuda("0")


@pytest.mark.skipif(not device.cuda_is_available(), reason="needs a GPU")
def test_cuda_moves_the_twin_to_the_gpu(resnet):
    net, x, _ = resnet
    twin = interop.from_torch(net, x).eval()
    assert twin.cuda() is twin
    gpu = jax.devices("gpu")[0]
    assert all(p.devices() == {gpu} for p in twin.parameters())
    assert_trees_close(twin(x), net.eval()(x).detach(), atol=1e-6, rtol=1e-6)  # GPU float64 summation order


@pytest.mark.parametrize("convert", ["double", "to_dtype", "to_jnp_dtype"])
def test_double_computes_like_torchs_double(convert):
    net32, x32 = _resnet(torch.float32)
    twin = interop.from_torch(net32, x32)
    result = {
        "double": lambda: twin.double(),
        "to_dtype": lambda: twin.to(torch.float64),
        "to_jnp_dtype": lambda: twin.to("cpu", jnp.float64),
    }[convert]()
    assert result is twin
    net64, x64 = net32.double(), x32.double()  # torch's .double() is in place as well
    assert {n: p.dtype.name for n, p in twin.named_parameters()} == dict.fromkeys(
        dict(net64.named_parameters()), "float64"
    )
    assert np.asarray(dict(twin.named_buffers())["stem.1.num_batches_tracked"]).dtype.kind == "i"  # ints stay
    for mode in (True, False):
        net64.train(mode)
        twin.train(mode)
        out = twin(x64)
        assert out.dtype == jnp.float64
        assert_trees_close(out, net64(x64).detach(), dtype="float64")
    # back to float32: torch's .float()
    assert twin.float() is twin
    net32 = net64.float()
    assert_trees_close(twin.eval()(x32), net32.eval()(x32).detach(), dtype="float32")


def test_double_trains_like_torchs_double():
    net32, x32 = _resnet(torch.float32)
    twin = interop.from_torch(net32, x32).double()
    net = net32.double()
    y = torch.tensor([0, 2])
    x64, y_jax = jnp.asarray(x32.double().numpy()), jnp.asarray(y.numpy())
    state = train.TrainState.create(twin, optim.sgd(lr=0.1))
    step = train.make_train_step(losses.CrossEntropyLoss())
    torch_opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):
        state, loss = step(state, x64, y_jax)
        torch_opt.zero_grad()
        torch_loss = nn.functional.cross_entropy(net(x32.double()), y)
        torch_loss.backward()
        torch_opt.step()
        assert_trees_close(loss, torch_loss.detach())
    trained = state.model()
    assert_trees_close(dict(trained.named_parameters()), {n: p.detach() for n, p in net.named_parameters()})


class CastsInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x.float())


class FinfoMask(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        scores = self.fc(x)
        return torch.softmax(scores.masked_fill(scores < 0, torch.finfo(scores.dtype).min), dim=-1)


@pytest.mark.parametrize("model", [CastsInForward, FinfoMask])
def test_double_refuses_a_forward_captured_with_a_fixed_dtype(model):
    torch.manual_seed(0)
    net, x = model(), torch.randn(2, 3)
    twin = interop.from_torch(net, x)
    before = twin.state_dict()
    with pytest.raises(ValueError, match=r"captured for float32 and fixes that dtype at .*test_twin_torch_api\.py"):
        twin.double()
    with pytest.raises(ValueError, match=r"interop\.from_torch\(model\.to\(torch\.float64\)"):
        twin.to(torch.float64)
    assert {v.dtype.name for v in twin.state_dict().values()} == {"float32"} and list(before) == list(twin.state_dict())
    net64, x64 = model().double(), x.double()
    net64.load_state_dict(net.state_dict())
    ported = interop.from_torch(net64, x64)  # the way the error points to: capture in float64
    if model is CastsInForward:  # torch's float64 model refuses to run: its forward casts to float32 before fc
        with pytest.raises(RuntimeError, match="must have the same dtype"):
            net64(x64)
        with pytest.raises(TypeError, match=r"layer 'fc' got an operand of dtype float32 \(from argument 0 \(x\)\)"):
            ported(x64)
    else:  # finfo(float64).min in torch's float64 model, and in the twin captured in float64
        assert_trees_close(ported(x64), net64(x64).detach())


def test_dtype_conversions_torch_refuses_or_fnml_cannot_follow(resnet):
    net, x, twin = resnet
    with pytest.raises(TypeError, match="only accepts floating point"):
        torch.nn.Linear(2, 2).to(torch.int32)
    with pytest.raises(TypeError, match="only floating dtypes are accepted .* got dtype=int32"):
        twin.to(torch.int32)
    for spec, method in ((torch.float16, "half"), (jnp.bfloat16, "bfloat16")):
        with pytest.raises(TypeError, match=rf"not supported: .*model\.{method}\(\)"):
            twin.to(spec)
    with pytest.raises(TypeError, match="dtype=3 is not a dtype"):
        twin.to(dtype=3)
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match="float64 needs JAX's x64 mode, which is off"):
            twin.double()


# ----------------------------------------------------------------------------------------------------
# The rest of torch's Module API: teaching errors that keep hasattr and NNX working
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, advice",
    [
        ("requires_grad_", r"fnml\.layers\.freeze\(twin\).*fnml\.layers\.unfreeze"),
        ("zero_grad", r"train\.make_train_step"),
        ("register_buffer", "register the buffer on the torch module and port it again"),
        ("apply", r"named_modules\(\)"),
        ("half", r"interop\.from_torch\(model\.half\(\), x\.half\(\)\).*autocast"),
        ("bfloat16", r"model\.bfloat16\(\)"),
        ("forward", r"call the twin itself, twin\(x\)"),
        ("register_forward_hook", "no hooks"),
        ("get_extra_state", "the twin is an fnml \\(flax NNX\\) module"),
    ],
)
def test_unsupported_torch_api_teaches_what_to_use(resnet, name, advice):
    net, x, twin = resnet
    assert callable(getattr(net, name))  # it is torch's
    with pytest.raises(AttributeError, match=rf"TorchTwin has no '{name}': .*{advice}.*answers: parameters, "):
        getattr(twin, name)
    assert not hasattr(twin, name)


def test_every_torch_module_attribute_is_answered_or_explained(resnet):
    net, x, twin = resnet

    # torch's own attributes: libraries may add methods to nn.Module when imported (transformers adds
    # smart_apply), which are theirs, not torch's module API.
    def is_torchs(name: str) -> bool:
        owner = getattr(getattr(nn.Module, name), "__module__", None) or "torch"
        return owner.startswith("torch")

    public = [name for name in dir(nn.Module) if not name.startswith("_") and is_torchs(name)] + ["training"]
    for name in public:
        try:
            getattr(twin, name)
        except AttributeError as error:
            assert f"TorchTwin has no {name!r}" in str(error), name
    with pytest.raises(AttributeError, match="^'TorchTwin' object has no attribute 'not_a_torch_name'$"):
        _ = twin.not_a_torch_name
    with pytest.raises(AttributeError, match="^'TorchTwin' object has no attribute '_parameters'$"):
        _ = twin._parameters


def test_nnx_and_the_training_step_still_work(resnet):
    net, x, twin = resnet
    assert isinstance(twin.stem, layers.Sequential) and isinstance(twin.fc, layers.Linear)
    graphdef, state = nnx.split(twin)
    merged = nnx.merge(graphdef, state)
    assert [n for n, _ in merged.named_parameters()] == [n for n, _ in twin.named_parameters()]
    assert_trees_close(merged.eval()(x), twin.eval()(x))
    assert len(jax.tree.leaves(nnx.state(twin, nnx.Param))) == len(list(twin.parameters()))
    twin.train()
    tx_state = train.TrainState.create(twin, optim.sgd(lr=0.1))
    step = train.make_train_step(losses.CrossEntropyLoss())
    _, loss = step(tx_state, jnp.asarray(x.numpy()), jnp.array([0, 1]))
    assert np.isfinite(float(loss))
    assert hasattr(twin, "training") and hasattr(twin, "rngs") and not hasattr(twin, "dtype")


# ----------------------------------------------------------------------------------------------------
# Inputs torch's forward refuses
# ----------------------------------------------------------------------------------------------------


class KeywordNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.proj = nn.Linear(2, 2)

    def forward(self, x, context):
        return self.fc(x) + self.proj(context)


class Product(nn.Module):
    def forward(self, a, b):
        return (a * 2) @ b


@pytest.mark.parametrize("bad", [torch.int32, torch.bool, torch.int64])
def test_integer_image_into_a_conv_twin_raises_as_torch_does(resnet, bad):
    net, x, twin = resnet
    image = x.to(bad)
    with pytest.raises((RuntimeError, NotImplementedError)):
        net(image)
    received = jnp.asarray(image.numpy()).dtype.name  # as the twin holds it
    message = (
        rf"layer 'stem.0' got an operand of dtype {received} \(from argument 0 \(x\)\), expected float64, its "
        r"parameters' dtype, as torch's forward would refuse it at module 'stem.0' \(Conv2d\)"
    )
    with pytest.raises(TypeError, match=message):
        twin(image)
    with pytest.raises(TypeError, match=message):
        twin(jnp.asarray(image.numpy()))
    graphdef, state = nnx.split(twin.eval())
    with pytest.raises(TypeError, match=message):  # checked while tracing too
        jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))(state, jnp.asarray(image.numpy()))


def test_other_float_dtype_raises_as_torch_does(resnet):
    net, x, twin = resnet
    with pytest.raises(RuntimeError, match="should be the same|same dtype"):
        net(x.float())
    with pytest.raises(TypeError, match=r"got an operand of dtype float32 \(from argument 0 \(x\)\), expected float64"):
        twin(x.float())
    net32, x32 = _resnet(torch.float32)
    twin32 = interop.from_torch(net32, x32).double()
    with pytest.raises(RuntimeError, match="should be the same|same dtype"):
        net32.double()(x32)
    with pytest.raises(TypeError, match=r"got an operand of dtype float32 \(from argument 0 \(x\)\), expected float64"):
        twin32(x32)


def test_the_argument_a_refused_operand_comes_from_is_named():
    torch.manual_seed(0)
    net = KeywordNet().double()
    x, c = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    twin = interop.from_torch(net, x, context=c)
    assert_trees_close(twin(x, context=c), net(x, context=c).detach())
    with pytest.raises(RuntimeError, match="same dtype"):
        net(x, context=c.long())
    with pytest.raises(TypeError, match=r"layer 'proj' got an operand of dtype int64 \(from argument 'context'\)"):
        twin(x, context=c.long())
    positional = interop.from_torch(net, x, c)
    with pytest.raises(TypeError, match=r"\(from argument 1 \(context\)\)"):
        positional(x, c.long())
    # ops outside layers: torch's matmul refuses a float32 / float64 pair too
    a, b = torch.randn(2, 3, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    product = interop.from_torch(Product(), a, b)
    with pytest.raises(RuntimeError, match="same dtype"):
        Product()(a, b.float())
    with pytest.raises(TypeError, match=r"aten.matmul got an operand of dtype float32 \(from argument 1 \(b\)\)"):
        product(a, b.float())
    assert_trees_close(product(a.long(), b.long()), Product()(a.long(), b.long()))  # integers: torch computes


class Shift(nn.Module):
    def forward(self, x):
        return x + torch.zeros(len(x), x.size(1))


def test_elementwise_forwards_promote_as_torch_does():
    twin = interop.from_torch(Shift(), torch.randn(3, 4))
    x = torch.randn(3, 4, dtype=torch.float64)
    assert Shift()(x).dtype == torch.float64
    out = twin(x)
    assert out.dtype == jnp.float64
    assert_trees_close(out, Shift()(x))


class TokenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 3)
        self.fc = nn.Linear(3, 2)

    def forward(self, ids):
        return self.fc(self.emb(ids))


def test_integer_token_ids_of_another_width_run_like_torch():
    torch.manual_seed(0)
    net = TokenNet().double()
    ids = torch.tensor([[1, 2, 6], [0, 3, 5]])
    twin = interop.from_torch(net, ids)
    for dtype in (torch.int32, torch.int64):
        assert_trees_close(twin(ids.to(dtype)), net(ids.to(dtype)).detach())
    with pytest.raises(RuntimeError, match="Expected tensor for argument #1 'indices'"):
        net(ids.double())
    with pytest.raises(TypeError, match=r"layer 'emb' got an operand of dtype float64 \(from argument 0 \(ids\)\), "):
        twin(ids.double())


class Normalises(nn.Module):
    """Takes any image dtype: the forward casts first (x.float() / 255)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x.float() / 255)


def test_a_forward_that_casts_its_input_takes_any_dtype_like_torch():
    torch.manual_seed(0)
    net = Normalises()
    x = torch.randint(0, 256, (2, 1, 5, 5))
    twin = interop.from_torch(net, x.float())
    for dtype in (torch.uint8, torch.int32, torch.float32):
        assert_trees_close(twin(x.to(dtype)), net(x.to(dtype)).detach(), dtype="float32")


class ScalarConstant(nn.Module):
    def forward(self, x):
        return x.sum() * torch.tensor(0.5, dtype=torch.float64)


def test_a_zero_dim_tensor_constant_keeps_its_shape():
    x = torch.randn(2, 3, dtype=torch.float64)
    out = interop.from_torch(ScalarConstant(), x)(x)
    assert out.shape == ScalarConstant()(x).shape == ()  # was (1,): the constant was stored 1-d
    assert_trees_close(out, ScalarConstant()(x))
