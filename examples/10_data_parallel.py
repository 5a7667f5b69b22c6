"""10 data parallel: DistributedDataParallel's job, done by jax.sharding on 4 simulated CPU devices.

torch's DDP runs one process per GPU, each on ``B / world_size`` samples, and all-reduces the
gradients: the result equals single-process training on the global batch of ``B`` samples. fnml puts
the global batch on a ``Mesh`` with a "data" axis (``device.mesh()``), replicates the parameters, and
jits the step; XLA splits the work and inserts the all-reduce itself (``train.fit(..., mesh=m)``).
So the torch side here is the single-process run on the global batch, which DDP matches.
BatchNorm under fnml's data parallelism normalises with GLOBAL batch statistics: torch's
``SyncBatchNorm`` (== plain ``BatchNorm2d`` over the whole batch in one process), not DDP's default
per-GPU statistics.
Run: ``python examples/10_data_parallel.py`` (``FNML_QUICK=1`` for fewer steps).
"""

from __future__ import annotations

import os

# 4 CPU devices for this process: the flag must be set BEFORE jax is imported (existing flags kept).
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4"])

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from flax import nnx  # noqa: E402

from fnml import device, interop, layers, losses, optim, train  # noqa: E402
from fnml.sidebyside import SideBySide, quick_mode  # noqa: E402

tour = SideBySide("10 data parallel", "Data parallelism: DDP's result with jax.sharding (4 simulated CPU devices)")
STEPS = 10 if quick_mode() else 100
BATCH = 32  # global batch: 8 samples per device

# Data and weights created once by torch; fnml gets the same values (NCHW -> NHWC for the images).
torch.manual_seed(0)
X_TORCH = torch.randn(64, 3, 8, 8)  # 64 images, 3 channels, 8x8
Y_TORCH = torch.randint(0, 5, (64,))  # 5 classes
X_NHWC = X_TORCH.permute(0, 2, 3, 1).numpy()  # (N, C, H, W) -> (N, H, W, C)
Y_NP = Y_TORCH.numpy()


def torch_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


TORCH_MODEL = torch_cnn()
INIT = {k: v.clone() for k, v in TORCH_MODEL.state_dict().items()}
FNML_MODEL = layers.Sequential(
    layers.Conv2d(3, 8, 3, padding=1, rngs=nnx.Rngs(0)),
    layers.BatchNorm2d(8),
    layers.ReLU(),
    layers.AdaptiveAvgPool2d(1),  # (N, H, W, C) -> (N, 1, 1, C); flatten order then matches torch
    layers.Flatten(),
    layers.Linear(8, 5, rngs=nnx.Rngs(1)),
)
interop.load_state_dict(FNML_MODEL, INIT)

# ------------------------------------------------------------------------------------- the mesh
tour.section(
    "The device group",
    "torch: one process per GPU joined by init_process_group. fnml: one Mesh over every device; "
    "the batch is split along its 'data' axis, parameters are replicated.",
)


def torch_setup():
    # Per process (torchrun starts 4 of them):
    #   dist.init_process_group("nccl"); model = DDP(model.to(rank), device_ids=[rank])
    #   sampler = DistributedSampler(dataset)  -> each rank loads BATCH / 4 samples
    world_size = 4
    print(f"world_size={world_size}, per-rank batch={BATCH // world_size}")
    return world_size


def fnml_setup():
    m = device.mesh()  # all 4 devices on the "data" axis
    print(m)
    xb = device.shard_batch(X_NHWC[:BATCH], m)  # the GLOBAL batch, split over devices
    print(xb.sharding.spec, [s.data.shape for s in xb.addressable_shards])
    return m.shape["data"]


t, f = tour.compare("DDP process group vs device.mesh()", torch_setup, fnml_setup)
tour.check("devices in the data-parallel group", t, f, tol=0.0)

# ------------------------------------------------------------------------------------- training
tour.section(
    "Training data-parallel",
    "DDP == single-process training on the global batch; fnml's fit(mesh=m) computes that same "
    "global-batch step, gradients averaged by the all-reduce XLA inserts.",
)


def torch_train():
    model = TORCH_MODEL  # single process, global batch: what DDP (with SyncBatchNorm) reproduces
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    history = []
    for step in range(STEPS):
        start = (step * BATCH) % len(X_TORCH)
        x, y = X_TORCH[start : start + BATCH], Y_TORCH[start : start + BATCH]
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    print(f"{STEPS} steps, loss {history[0]:.4f} -> {history[-1]:.4f}")
    return np.array(history), model.state_dict()


def fnml_train():
    m = device.mesh()
    result = train.fit(
        FNML_MODEL,
        optim.sgd(lr=0.05, momentum=0.9),
        losses.CrossEntropyLoss(),
        X_NHWC,
        Y_NP,
        epochs=STEPS * BATCH // len(X_NHWC),
        batch_size=BATCH,  # the global batch; 8 samples per device
        mesh=m,  # data parallel
        verbose=False,
    )
    print(f"{len(result.losses)} steps, loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}")
    kernel = result.state.params["layers"][0]["kernel"][...]
    print("conv kernel:", kernel.sharding.spec, "on", len(kernel.devices()), "devices")
    return result.losses, interop.state_dict(result.model)


(t_losses, t_state), (f_losses, f_state) = tour.compare(
    "DDP(model) training loop vs train.fit(..., mesh=device.mesh())", torch_train, fnml_train
)
tour.check(f"loss trajectory, {STEPS} steps (float32)", t_losses, f_losses, tol=1e-5)
tour.check(
    "final parameters and BatchNorm running stats (float32)",
    t_state,
    f_state,
    tol=1e-5,
)

# ------------------------------------------------------------------------------------- BatchNorm
tour.section(
    "BatchNorm statistics under data parallelism",
    "Inside one jitted step the batch mean is a mean over the GLOBAL batch: SyncBatchNorm semantics. "
    "DDP's default BatchNorm would use each GPU's 8 samples.",
)


def torch_batchnorm():
    bn = nn.BatchNorm2d(3)
    x = X_TORCH[:BATCH]
    with torch.no_grad():
        global_stats = bn(x)  # == SyncBatchNorm over 4 ranks of 8
        per_rank = torch.cat([nn.BatchNorm2d(3)(chunk) for chunk in x.chunk(4)])  # DDP default
    print("per-rank vs global statistics differ by", (per_rank - global_stats).abs().max().item())
    return global_stats.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)


def fnml_batchnorm():
    m = device.mesh()
    bn = device.replicate(layers.BatchNorm2d(3), m)
    graphdef, state = nnx.split(bn)

    @jax.jit
    def forward(state, x):  # x sharded over 4 devices; jnp.mean over the batch is a global mean
        return nnx.merge(graphdef, state)(x)

    y = forward(state, device.shard_batch(X_NHWC[:BATCH], m))
    print("output sharding:", y.sharding.spec)
    return y


t, f = tour.compare("BatchNorm2d on a batch split over 4 devices", torch_batchnorm, fnml_batchnorm)
tour.check("BatchNorm2d output == torch BatchNorm over the global batch (SyncBatchNorm)", t, f, tol=1e-5)

tour.finish()
