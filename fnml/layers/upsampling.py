"""Upsampling and pixel shuffling.

PyTorch equivalent: ``torch/nn/modules/upsampling.py``, ``pixelshuffle.py``.
"""

from __future__ import annotations

__all__: list[str] = []
