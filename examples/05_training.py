"""05 training: the PyTorch basics tutorial's training loop, side by side with fnml's ``train.fit``.

The tutorial's exact loop (SimpleNN, MSELoss, Adam lr=0.001, X = randn(10, 2), Y = randn(10, 1),
100 epochs, the loss printed every 10). Both columns start from the same initial weights (torch's,
loaded into fnml) and the same data, and print the same ten lines. Then the two things fnml adds:
the split-once jitted step (a pure function of a TrainState), and the fused path (many steps in one
``lax.scan``). Run: ``python examples/05_training.py``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from flax import nnx

from fnml import interop, layers, losses, train
from fnml import optim as fnml_optim
from fnml.sidebyside import SideBySide

tour = SideBySide("05 training", "The training loop: fit, the split-once jitted step, fused epochs")


class SimpleNN(nn.Module):
    """The tutorial's model, verbatim."""

    def __init__(self):
        super(SimpleNN, self).__init__()  # noqa: UP008 - the tutorial's spelling
        self.fc1 = nn.Linear(2, 2)  # input -> hidden
        self.fc2 = nn.Linear(2, 1)  # hidden -> output

    def forward(self, x):
        x = torch.relu(self.fc1(x))
        x = self.fc2(x)
        return x


# Shared inputs: torch draws the initial weights and the data once; the fnml column loads the same values.
torch.manual_seed(0)
INITIAL = {k: v.clone() for k, v in SimpleNN().state_dict().items()}
X = torch.randn(10, 2)  # 10 samples, 2 features
Y = torch.randn(10, 1)  # 10 targets

tour.section(
    "The tutorial's training loop",
    "Left: the tutorial's loop. Right: train.fit, which prints the same lines. Same initial weights, same data.",
)


def torch_loop():
    model = SimpleNN()
    model.load_state_dict(INITIAL)
    criterion = nn.MSELoss()
    optimizer = optim.Adam(model.parameters(), lr=0.001)
    step_losses = []
    for epoch in range(100):
        optimizer.zero_grad()
        output = model(X)
        loss = criterion(output, Y)
        loss.backward()
        optimizer.step()
        step_losses.append(loss.item())
        if (epoch + 1) % 10 == 0:
            print(f"Epoch [{epoch + 1}/100], Loss: {loss.item():.4f}")
    return np.array(step_losses)


def fnml_fit():
    model = layers.SimpleNN(rngs=nnx.Rngs(0))
    interop.load_state_dict(model, INITIAL)
    criterion = losses.MSELoss()
    optimizer = fnml_optim.adam(lr=0.001)
    result = train.fit(model, optimizer, criterion, X.numpy(), Y.numpy(), epochs=100, log_every=10)
    return result.losses


torch_losses, fnml_losses = tour.compare("100 epochs, loss every 10", torch_loop, fnml_fit)
tour.record("per-step loss, 100 Adam steps (float32)", float(np.max(np.abs(torch_losses - fnml_losses))), tol=1e-5)
printed_torch = [f"{v:.4f}" for v in torch_losses[9::10]]
printed_fnml = [f"{v:.4f}" for v in fnml_losses[9::10]]
tour.record("printed lines identical (count of differing lines)", float(printed_torch != printed_fnml), tol=0.0)

tour.section(
    "The step itself: split once, then a pure jitted function",
    "TrainState holds the arrays (params, BatchNorm stats, RNG state, optimizer state, step); the module's "
    "structure stays static. make_train_step returns step(state, x, y) -> (state, loss): compiled once, "
    "no per-call module traversal. Timings are per optimizer step on this machine (after warm-up).",
)


def torch_step():
    model = SimpleNN()
    model.load_state_dict(INITIAL)
    criterion = nn.MSELoss()
    optimizer = optim.Adam(model.parameters(), lr=0.001)
    start = time.perf_counter()
    for epoch in range(100):
        optimizer.zero_grad()
        loss = criterion(model(X), Y)
        loss.backward()
        optimizer.step()
    per_step = (time.perf_counter() - start) / 100
    print(f"torch eager: {per_step * 1e6:.0f} us/step, last loss {loss.item():.4f}")
    return loss.item()


def fnml_step():
    model = layers.SimpleNN(rngs=nnx.Rngs(0))
    interop.load_state_dict(model, INITIAL)
    state = train.TrainState.create(model, fnml_optim.adam(lr=0.001))
    step = train.make_train_step(losses.MSELoss())
    x, y = X.numpy(), Y.numpy()
    step(state, x, y)[1].block_until_ready()  # compile once (the result is discarded)
    start = time.perf_counter()
    for epoch in range(100):
        state, loss = step(state, x, y)
    loss.block_until_ready()
    per_step = (time.perf_counter() - start) / 100
    print(f"fnml jitted step: {per_step * 1e6:.0f} us/step, last loss {float(loss):.4f}")
    return float(loss)


t_last, f_last = tour.compare("split-once jitted step", torch_step, fnml_step)
tour.check("loss after 100 steps (float32)", t_last, f_last, tol=1e-5)

tour.section(
    "Fused epochs: many steps inside one lax.scan",
    "With the data on the device, fit(fused=True) runs whole epochs (here: 10 epochs between log lines) in "
    "one compiled lax.scan. Same batches, same losses as the step-by-step loop. fused='auto' (the default) "
    "chooses it for models like this one; not for conv nets on CPU, where XLA's scan is slower.",
)


def torch_reference():
    print("(the tutorial loop above: one Python iteration per step)")
    return torch_losses


def fnml_fused():
    model = layers.SimpleNN(rngs=nnx.Rngs(0))
    interop.load_state_dict(model, INITIAL)
    unfused = train.fit(
        model, fnml_optim.adam(lr=0.001), losses.MSELoss(), X.numpy(), Y.numpy(), epochs=100, fused=False, verbose=False
    )
    fused = train.fit(
        model, fnml_optim.adam(lr=0.001), losses.MSELoss(), X.numpy(), Y.numpy(), epochs=100, fused=True, verbose=False
    )
    print(f"max |fused - unfused| over 100 losses: {np.max(np.abs(fused.losses - unfused.losses)):.2e}")
    print(f"final loss {fused.losses[-1]:.4f}")
    return fused.losses, unfused.losses


_, (fused_losses, unfused_losses) = tour.compare("fused vs step-by-step", torch_reference, fnml_fused)
tour.record("fused == unfused per-step loss (float32)", float(np.max(np.abs(fused_losses - unfused_losses))), tol=1e-6)
tour.check("fused per-step loss vs torch (float32)", torch_losses, fused_losses, tol=1e-5)
tour.finish()
