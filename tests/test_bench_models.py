"""The W6 (GPT) and W7 (ResNet) benchmark models compute what their torch models compute.

``benchmarks/workloads.py`` times torch eager, torch.compile, an fnml-native model and the
``interop.from_torch`` twin of the torch model; the timings only compare equal computations if the
four agree. Here, at tiny sizes: the forward and 3 training steps (W6: AdamW, W7: SGD momentum 0.9 with
BatchNorm in training mode) of the native model and of the twin against real torch, float64 within
1e-10 (measured ~1e-15), float32 at the working tolerance. Both attention formulations of the native
GPT (``ATTENTION_FORMS``) and both token layouts (``flat``: (B*T, C), the default; (B, T, C)) are covered.
"""

from __future__ import annotations

import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from helpers import jax_dtype, max_abs_diff, tolerance, torch_dtype

from fnml import interop, optim, train

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import workloads as W  # noqa: E402

GPT_TINY = dict(vocab=32, block=8, n_layer=2, n_head=2, n_embd=16)
RESNET_TINY = (4, 8, 8)
STEPS = 3
F64_ATOL = 1e-10  # the brief's bound for these trajectories (the table's float64 1e-12 also holds)


def _atol(dtype: str) -> float:
    return F64_ATOL if dtype == "float64" else tolerance("float32_trajectory")["atol"]


def _build(make):
    """``make()`` as one compiled program: the initial weights (overwritten by the torch weights loaded next)
    are drawn in one compile instead of one eager dispatch per layer and shape."""
    return nnx.jit(make)()


@nnx.jit
def _forward(model, x):
    """The model's forward as one compiled program (eager, every op of the model compiles on its own)."""
    return model(x)


def _torch_steps(model, optimizer, loss, batches) -> list[float]:
    history = []
    for x, y in batches:
        optimizer.zero_grad()
        value = loss(model(x), y)
        value.backward()
        optimizer.step()
        history.append(value.item())
    return history


def _fnml_steps(model, tx, loss_fn, batches) -> tuple[list[float], dict]:
    state = train.TrainState.create(model, tx)
    step = train.make_train_step(loss_fn=loss_fn)
    history = []
    for batch in batches:
        state, value = step(state, *batch)
        history.append(float(value))
    return history, interop.state_dict(train.to_module(state))


def _gpt_criterion(logits, targets):
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _torch_gpt(dtype: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return W.TorchGPT(**GPT_TINY).to(torch_dtype(dtype))


def _gpt_batches():
    return W.gpt_data(STEPS, batch=4, block=GPT_TINY["block"], vocab=GPT_TINY["vocab"], seed=1)


def _jax_batches(batches):
    return [(jnp.asarray(x.numpy()), jnp.asarray(y.numpy())) for x, y in batches]


def _native_gpt(reference: torch.nn.Module, dtype: str, attention: str, *, flat: bool = True):
    model = _build(lambda: W.FnmlGPT(**GPT_TINY, attention=attention, flat=flat, param_dtype=jax_dtype(dtype)))
    interop.load_state_dict(model, W.gpt_state_dict_for_fnml(reference.state_dict()))
    return model


GPT_FORMS = {
    "native_sdpa": lambda ref, dtype, example: _native_gpt(ref, dtype, "sdpa"),
    "native_einsum": lambda ref, dtype, example: _native_gpt(ref, dtype, "einsum"),
    "native_3d": lambda ref, dtype, example: _native_gpt(ref, dtype, "sdpa", flat=False),
    "twin": lambda ref, dtype, example: interop.from_torch(ref, example).train(),
}


# float64 is the exactness question for every form; float32 (working tolerance) on the native model.
CASES = [
    ("native_sdpa", "float64"),
    ("native_einsum", "float64"),
    ("native_3d", "float64"),
    ("twin", "float64"),
    ("native_sdpa", "float32"),
]
LR_ADAMW = 1e-3


@pytest.mark.parametrize(("form", "dtype"), CASES, ids=[f"{f}-{d}" for f, d in CASES])
def test_gpt_forward_and_training_match_torch(form, dtype):
    reference = _torch_gpt(dtype)
    batches = _gpt_batches()
    model = GPT_FORMS[form](reference, dtype, batches[0][0])
    jbatches = _jax_batches(batches)
    forward = max_abs_diff(_forward(model, jbatches[0][0]), reference(batches[0][0]).detach())
    optimizer = torch.optim.AdamW(reference.parameters(), lr=LR_ADAMW)
    torch_losses = _torch_steps(reference, optimizer, _gpt_criterion, batches)
    fnml_losses, fnml_state = _fnml_steps(model, optim.adamw(lr=LR_ADAMW), W.gpt_loss, jbatches)
    expected = dict(reference.state_dict())
    if form != "twin":  # the native model holds the tied weight once (wte.weight)
        expected = W.gpt_state_dict_for_fnml(expected)
    params = max_abs_diff(fnml_state, expected)
    print(
        f"W6 {form} {dtype}: forward {forward:.2e}, losses {max_abs_diff(fnml_losses, torch_losses):.2e}, "
        f"params after {STEPS} steps {params:.2e}"
    )
    atol = _atol(dtype)
    assert forward <= (F64_ATOL if dtype == "float64" else tolerance("float32")["atol"])
    assert max_abs_diff(fnml_losses, torch_losses) <= atol
    assert params <= atol


def _resnet_batches(dtype: str):
    generator = torch.Generator().manual_seed(2)
    xs = torch.randn(STEPS, 4, 3, 8, 8, generator=generator, dtype=torch_dtype(dtype))
    ys = torch.randint(0, 10, (STEPS, 4), generator=generator)
    return list(zip(xs, ys))


RESNET_CASES = [("native", "float64"), ("twin", "float64"), ("native", "float32")]


@pytest.mark.parametrize(("form", "dtype"), RESNET_CASES, ids=[f"{f}-{d}" for f, d in RESNET_CASES])
def test_resnet_forward_and_training_match_torch(form, dtype):
    torch.manual_seed(0)
    reference = W.TorchResNet(widths=RESNET_TINY).to(torch_dtype(dtype)).train()
    batches = _resnet_batches(dtype)
    labels = [jnp.asarray(y.numpy().astype(np.int32)) for _, y in batches]
    if form == "native":
        model = _build(lambda: W.FnmlResNet(widths=RESNET_TINY, param_dtype=jax_dtype(dtype)))
        interop.load_state_dict(model, reference.state_dict())
        inputs = [jnp.asarray(x.numpy().transpose(0, 2, 3, 1)) for x, _ in batches]  # NCHW -> NHWC
    else:
        model = interop.from_torch(reference, batches[0][0]).train()
        inputs = [jnp.asarray(x.numpy()) for x, _ in batches]  # the twin takes torch's NCHW
    # Forward in training mode changes BatchNorm's running statistics: compare on copies of both.
    probe = W.TorchResNet(widths=RESNET_TINY).to(torch_dtype(dtype)).train()
    probe.load_state_dict(reference.state_dict())
    forward = max_abs_diff(
        _forward(train.to_module(train.TrainState.create(model, optim.sgd(lr=0.0))), inputs[0]),
        probe(batches[0][0]).detach(),
    )
    torch_losses = _torch_steps(
        reference,
        torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9),
        torch.nn.CrossEntropyLoss(),
        batches,
    )
    fnml_losses, fnml_state = _fnml_steps(
        model, optim.sgd(lr=0.05, momentum=0.9), W.classifier_loss, list(zip(inputs, labels))
    )
    params = max_abs_diff(fnml_state, dict(reference.state_dict()))  # running statistics included
    print(
        f"W7 {form} {dtype}: forward {forward:.2e}, losses {max_abs_diff(fnml_losses, torch_losses):.2e}, "
        f"state after {STEPS} steps {params:.2e}"
    )
    atol = _atol(dtype)
    assert forward <= (F64_ATOL if dtype == "float64" else tolerance("float32")["atol"])
    assert max_abs_diff(fnml_losses, torch_losses) <= atol
    assert params <= atol


def test_flop_counts_follow_the_shapes():
    # W6: per layer 12 C^2 per token (qkv 3, proj 1, mlp 8) plus 2 T C per token for attention; head C V.
    tokens, c = 16 * 64, 128
    forward = 4 * (2 * tokens * c * c * 12 + 4 * 16 * 64 * 64 * c) + 2 * tokens * c * 256
    assert W.gpt_flops(16, 64, 4, 128, 256) == 3 * forward
    # W7 at one block of width 4 on 4x4 maps, batch 1: stem 3->4, block 4->4 (two 3x3 convs), fc 4->10.
    assert W.resnet_flops(1, size=4, widths=(4,)) == 3 * (2 * 16 * 3 * 4 * 9 + 2 * 16 * 4 * 8 * 9 + 2 * 4 * 10)
