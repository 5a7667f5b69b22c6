"""13 fine-tuning: a torch recipe for a pretrained network, ported as is, next to torch.

The recipe, as torch users write it for a torchvision model:

- a pretrained backbone (``features``), frozen (``requires_grad_(False)``) AND in eval mode
  (``model.train(); model.features.eval()``), so its BatchNorm layers keep normalising with the running
  statistics of pretraining and never update them;
- a new classifier head, trained with AdamW under a linear warm-up then a cosine decay
  (``SequentialLR([LinearLR, CosineAnnealingLR], milestones=[3])``), one scheduler step per optimizer step;
- a torch ``DataLoader`` of micro-batches of 16, four of them per optimizer step
  (``(loss / 4).backward(); if (i + 1) % 4 == 0: optimizer.step()``);
- a checkpoint after two epochs, then a fresh process-like resume for the last two.

The fnml side ports the torch model with ``interop.from_torch`` (which keeps each submodule's mode and the
``requires_grad`` marking), then runs ``train.fit(loader=the same kind of DataLoader, accumulate_steps=4,
keep_modes=True)`` with ``schedules.sequential_lr``, checkpoints with ``checkpoint_dir`` and resumes with
``resume_from``. Data: scikit-learn's bundled 8x8 digits (no download).

Run: ``python examples/13_finetune.py``.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

from fnml import interop, losses, optim, schedules, train
from fnml.sidebyside import SideBySide, output_dir, quick_mode

tour = SideBySide("13 fine-tuning", "Frozen eval-mode backbone, warm-up + cosine, micro-batches, resume")
torch.manual_seed(0)

MICRO, ACCUMULATE, EPOCHS, RESUME_AT = 16, 4, 4, 2
SAMPLES = 128 if quick_mode() else 512  # a multiple of MICRO * ACCUMULATE: whole optimizer steps per epoch

digits = load_digits()
IMAGES = torch.tensor(digits.images[:SAMPLES, None] / 16.0, dtype=torch.float32)  # (N, 1, 8, 8)
LABELS = torch.tensor(digits.target[:SAMPLES], dtype=torch.int64)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock at stride 1: conv-BN-ReLU-conv-BN, plus the identity, ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + x)


class SmallResNet(nn.Module):
    """A torchvision-style network: ``features`` (the backbone) then ``classifier`` (the head)."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            BasicBlock(16),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(16, classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def pretrained() -> dict[str, torch.Tensor]:
    """'Pretraining': 30 SGD steps in training mode, so the BatchNorm running statistics are not the defaults."""
    model = SmallResNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for i in range(30):
        rows = slice((i * 32) % SAMPLES, (i * 32) % SAMPLES + 32)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(IMAGES[rows]), LABELS[rows]).backward()
        optimizer.step()
    weights = model.state_dict()
    head = nn.Linear(16, 10)  # the new head of the fine-tuning task
    weights.update({f"classifier.{k}": v for k, v in head.state_dict().items()})
    return {k: v.clone() for k, v in weights.items()}


PRETRAINED = pretrained()


def finetune_model() -> SmallResNet:
    """The recipe's model: pretrained weights, backbone frozen and in eval mode, the head training."""
    model = SmallResNet()
    model.load_state_dict(PRETRAINED)
    model.features.requires_grad_(False)
    model.train()
    model.features.eval()
    return model


def loader() -> torch.utils.data.DataLoader:
    """The same shuffled micro-batches for both sides: a DataLoader with its own seeded generator."""
    dataset = torch.utils.data.TensorDataset(IMAGES, LABELS)
    return torch.utils.data.DataLoader(
        dataset, batch_size=MICRO, shuffle=True, generator=torch.Generator().manual_seed(7)
    )


# ---- the torch loop ----------------------------------------------------------------------------------

tour.section(
    "Fine-tuning a frozen, eval-mode backbone",
    "torch: the loop below, a torch.save checkpoint after epoch 2, then new model/optimizer/scheduler objects "
    "loaded from it for epochs 3-4 (with a new DataLoader, as a restarted script would make). fnml: from_torch "
    "keeps the modes and the frozen marking; fit(loader=..., accumulate_steps=4, keep_modes=True), "
    "checkpoint_dir, then resume_from.",
)


def torch_objects(model):
    optimizer = torch.optim.AdamW(model.classifier.parameters(), lr=0.01, weight_decay=0.01)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=3)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS * SAMPLES // (MICRO * ACCUMULATE) - 3)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[3])
    return optimizer, scheduler


def torch_epochs(model, optimizer, scheduler, batches, epochs, step_losses):
    for _ in epochs:
        model.train()
        model.features.eval()  # the recipe, re-applied each epoch after model.train()
        micro_losses = []
        for i, (x, y) in enumerate(batches):
            loss = nn.functional.cross_entropy(model(x), y)
            (loss / ACCUMULATE).backward()
            micro_losses.append(loss.item())
            if (i + 1) % ACCUMULATE == 0:
                optimizer.step()
                optimizer.zero_grad()
                scheduler.step()
                step_losses.append(np.mean(micro_losses))
                micro_losses = []


def torch_finetune():
    model = finetune_model()
    optimizer, scheduler = torch_objects(model)
    step_losses = []
    torch_epochs(model, optimizer, scheduler, loader(), range(RESUME_AT), step_losses)
    path = os.path.join(tempfile.mkdtemp(dir=output_dir()), "ckpt.pt")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "losses": step_losses}, path)  # fmt: skip
    saved = torch.load(path, weights_only=False)  # the restarted script
    model = finetune_model()
    model.load_state_dict(saved["model"])
    optimizer, scheduler = torch_objects(model)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    step_losses = saved["losses"]
    torch_epochs(model, optimizer, scheduler, loader(), range(RESUME_AT, EPOCHS), step_losses)
    print(f"{len(step_losses)} optimizer steps; loss {step_losses[0]:.4f} -> {step_losses[-1]:.4f}; "
          f"lr now {scheduler.get_last_lr()[0]:.3g}")  # fmt: skip
    return np.array(step_losses), {k: v.numpy() for k, v in model.state_dict().items()}


# ---- the fnml side ----------------------------------------------------------------------------------


def fnml_finetune():
    twin = interop.from_torch(finetune_model(), IMAGES[:MICRO])  # modes and requires_grad=False kept
    steps = EPOCHS * SAMPLES // (MICRO * ACCUMULATE)
    warmup = schedules.linear_lr(0.01, start_factor=0.1, total_iters=3)
    cosine = schedules.cosine_annealing_lr(0.01, T_max=steps - 3)
    tx = optim.adamw(lr=schedules.sequential_lr([warmup, cosine], milestones=[3]), weight_decay=0.01)
    folder = tempfile.mkdtemp(dir=output_dir())
    options = dict(accumulate_steps=ACCUMULATE, keep_modes=True, verbose=False)
    train.fit(twin, tx, losses.CrossEntropyLoss(), loader=loader(), epochs=RESUME_AT, checkpoint_dir=folder,
              **options)  # fmt: skip
    result = train.fit(twin, tx, losses.CrossEntropyLoss(), loader=loader(), epochs=EPOCHS, resume_from=folder,
                       **options)  # fmt: skip
    print(f"{len(result.losses)} optimizer steps; loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}; "
          f"lr now {result.history['lr'][-1]:.3g}")  # fmt: skip
    return result.losses, {k: np.asarray(v) for k, v in interop.state_dict(result.model).items()}


(t_losses, t_weights), (f_losses, f_weights) = tour.compare(
    "fit(loader=, accumulate_steps=4, keep_modes=True) + resume vs the torch loop + torch.save/load",
    torch_finetune,
    fnml_finetune,
)
statistics = [k for k in t_weights if "running" in k]
tour.check("per-optimizer-step loss (float32)", t_losses, f_losses, tol=1e-5)
tour.check("head weights after fine-tuning", t_weights["classifier.weight"], f_weights["classifier.weight"], tol=1e-5)
tour.check("backbone BatchNorm statistics (eval mode)", [t_weights[k] for k in statistics],
           [f_weights[k] for k in statistics], tol=0.0)  # fmt: skip
unchanged = max(float(np.max(np.abs(f_weights[k] - PRETRAINED[k].numpy()))) for k in statistics)
tour.record("backbone statistics moved from pretraining", unchanged, tol=0.0)
tour.finish()
