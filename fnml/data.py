"""In-memory datasets: splits, standardisation, keyed mini-batches and device-resident epoch batches.

PyTorch equivalent: ``torch.utils.data.random_split``, ``TensorDataset``, ``DataLoader``, and
``sklearn.preprocessing.StandardScaler`` for the standardisation step.

Randomness is explicit: every shuffle takes a ``jax.random`` key, and the order of epoch ``e`` is
``jax.random.permutation(jax.random.fold_in(key, e), n)`` (:func:`epoch_permutation`). The unfused
training loop, the fused ``lax.scan`` loop and a resumed run all call that same function, so they see
exactly the same batches. Torch's global-generator permutations cannot be reproduced in JAX; parity
tests feed torch the permutation computed here instead.

>>> import jax
>>> import numpy as np
>>> from fnml import data
>>> X, Y = np.arange(20.0).reshape(10, 2), np.arange(10)
>>> train_idx, val_idx = data.random_split(jax.random.key(0), 10, [0.8, 0.2])
>>> scaler = data.Standardizer.fit(X[train_idx])  # statistics of the training split only
>>> loader = data.DataLoader(scaler.transform(X[train_idx]), Y[train_idx], batch_size=4,
...                          shuffle=True, key=jax.random.key(1))
>>> [tuple(xb.shape) for xb, yb in loader]  # 8 training samples: two batches of 4
[(4, 2), (4, 2)]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fnml._validation import check_bool, check_int, check_key, check_number, check_positive_int

__all__ = [
    "DataLoader",
    "Standardizer",
    "batch_indices",
    "epoch_batches",
    "epoch_permutation",
    "num_batches",
    "random_split",
    "split_lengths",
]


def _length(arrays: Sequence[Any], *, where: str) -> int:
    """Common leading length of ``arrays``; clear errors for none, scalars, mismatches, empties."""
    if not arrays:
        raise ValueError(f"{where}: expected at least one array, got none")
    lengths = []
    for index, array in enumerate(arrays):
        shape = getattr(array, "shape", None)
        if shape is None or len(shape) == 0:
            raise ValueError(f"{where}: array {index} must have a leading sample axis, got shape {shape}")
        lengths.append(shape[0])
    if len(set(lengths)) != 1:
        raise ValueError(
            f"{where}: all arrays must have the same number of samples (leading axis), got lengths {lengths}"
        )
    if lengths[0] == 0:
        raise ValueError(f"{where}: the dataset is empty (0 samples)")
    return lengths[0]


def split_lengths(n: int, lengths: Sequence[float]) -> list[int]:
    """Integer split sizes from ``lengths`` (counts, or fractions summing to 1) with torch's rules.

    PyTorch equivalent: the length computation inside ``torch.utils.data.random_split``.
    Fractions: ``floor(n * f)`` each, then the remainder is added one by one round-robin starting at
    the first split. Counts must sum to ``n``.

    >>> split_lengths(10, [0.7, 0.15, 0.15]), split_lengths(10, [6, 4])
    ([8, 1, 1], [6, 4])
    """
    if isinstance(lengths, (str, bytes)) or not isinstance(lengths, (Sequence, np.ndarray)):
        raise TypeError(f"random_split: lengths must be a sequence of counts or fractions, got lengths={lengths!r}")
    lengths = list(lengths)
    if not lengths:
        raise ValueError("random_split: lengths must be a non-empty sequence, got []")
    for index, length in enumerate(lengths):
        check_number(f"lengths[{index}]", length, where="random_split")
    total = sum(lengths)
    if math.isclose(total, 1) and total <= 1:
        sizes = []
        for index, fraction in enumerate(lengths):
            if not 0 <= fraction <= 1:
                raise ValueError(f"random_split: fraction at index {index} must be in [0, 1], got {fraction!r}")
            sizes.append(int(math.floor(n * fraction)))
        for i in range(n - sum(sizes)):
            sizes[i % len(sizes)] += 1
        return sizes
    for index, count in enumerate(lengths):
        if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 0:
            raise ValueError(
                f"random_split: lengths must be non-negative integers or fractions summing to 1, "
                f"got lengths[{index}]={count!r}"
            )
    if total != n:
        raise ValueError(
            f"random_split: sum of lengths {total} does not equal the length of the dataset ({n}); "
            f"got lengths={lengths}"
        )
    return [int(c) for c in lengths]


def random_split(key: jax.Array, dataset: Any, lengths: Sequence[float]) -> tuple[Any, ...]:
    """Randomly split a dataset (or ``range(n)``) into non-overlapping parts.

    PyTorch equivalent: ``torch.utils.data.random_split(dataset, lengths, generator=...)``.

    ``dataset`` is an int ``n`` (returns index arrays), one array (returns sub-arrays) or a tuple of
    arrays with the same leading length, like ``TensorDataset(X, Y)`` (returns one tuple per split).
    ``lengths`` are counts summing to ``n`` or fractions summing to 1 (``floor(n * f)`` each, the
    remainder added round-robin from the first split, exactly like torch). The permutation is
    ``jax.random.permutation(key, n)``; torch's generator draws a different one (random streams
    never match across frameworks), the split sizes are identical.

    >>> train_idx, val_idx, test_idx = random_split(jax.random.key(0), 10, [0.7, 0.15, 0.15])
    >>> len(train_idx), len(val_idx), len(test_idx)  # floor(n * f), the remainder round-robin, as torch
    (8, 1, 1)
    >>> X, Y = np.arange(20.0).reshape(10, 2), np.arange(10)
    >>> (X_tr, Y_tr), (X_va, Y_va) = random_split(jax.random.key(0), (X, Y), [0.8, 0.2])
    >>> X_tr.shape, Y_va.shape
    ((8, 2), (2,))
    """
    check_key("key", key, where="random_split")
    if isinstance(dataset, (int, np.integer)) and not isinstance(dataset, bool):
        if dataset < 1:
            raise ValueError(f"random_split: the dataset is empty; got n={dataset}, expected n >= 1")
        n, arrays = int(dataset), None
    elif isinstance(dataset, (tuple, list)):
        arrays = tuple(dataset)
        n = _length(arrays, where="random_split")
    else:
        arrays = (dataset,)
        n = _length(arrays, where="random_split")
    sizes = split_lengths(n, lengths)
    order = np.array(jax.random.permutation(key, n))
    offsets = np.cumsum([0, *sizes])
    index_parts = [order[offsets[i] : offsets[i + 1]] for i in range(len(sizes))]
    if arrays is None:
        return tuple(index_parts)
    if isinstance(dataset, (tuple, list)):
        return tuple(tuple(array[idx] for array in arrays) for idx in index_parts)
    return tuple(dataset[idx] for idx in index_parts)


@dataclass(frozen=True)
class Standardizer:
    """Per-feature standardisation ``(x - mean) / scale`` with statistics from the training split.

    PyTorch equivalent: none in torch; the counterpart of ``sklearn.preprocessing.StandardScaler``
    (``ddof=0``; features with zero variance get ``scale = 1``, as in scikit-learn). Fit on the
    training split only and apply the same transform to validation and test data.

    ``mean``, ``scale``: (features...) arrays over the leading sample axis.

    >>> scaler = Standardizer.fit(np.array([[1.0, 5.0], [3.0, 5.0]]))
    >>> print(scaler.mean, scaler.scale)  # the constant feature gets scale 1
    [2. 5.] [1. 1.]
    >>> print(scaler.transform(np.array([[2.0, 5.0], [4.0, 6.0]])))
    [[0. 0.]
     [2. 1.]]
    """

    mean: jax.Array
    scale: jax.Array

    def __post_init__(self) -> None:
        # Built by fit() or directly (e.g. from saved statistics): same shapes, positive scales.
        for name in ("mean", "scale"):
            value = getattr(self, name)
            array = value if isinstance(value, jax.Array) else np.asarray(value)
            if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
                raise TypeError(f"Standardizer: {name} must be a real numeric array, got dtype {array.dtype}")
            object.__setattr__(self, name, jnp.asarray(array))
        if self.mean.shape != self.scale.shape:
            raise ValueError(
                f"Standardizer: mean and scale must have the same shape, got {self.mean.shape} and {self.scale.shape}"
            )
        if not isinstance(self.scale, jax.core.Tracer) and not bool(jnp.all(self.scale > 0)):
            raise ValueError("Standardizer: every scale must be > 0 (constant features use scale 1)")

    @classmethod
    def fit(cls, X: Any) -> Standardizer:
        """Statistics over axis 0 of ``X`` (samples, features...)."""
        X = jnp.asarray(X)
        _length((X,), where="Standardizer.fit")
        if not jnp.issubdtype(X.dtype, jnp.floating):
            X = X.astype(jnp.result_type(float))
        mean = jnp.mean(X, axis=0)
        std = jnp.std(X, axis=0)  # ddof=0, like StandardScaler
        # Constant features: divide by 1 instead of 0 (scikit-learn's rule).
        scale = jnp.where(std == 0, jnp.ones_like(std), std)
        return cls(mean=mean, scale=scale)

    def transform(self, X: Any) -> jax.Array:
        """``(X - mean) / scale``; ``X``: (samples, features...) with the fitted feature shape."""
        X = jnp.asarray(X)
        if X.shape[1:] != self.mean.shape:
            raise ValueError(
                f"Standardizer.transform: X has feature shape {X.shape[1:]}, "
                f"expected {self.mean.shape} (the shape it was fitted on)"
            )
        return (X - self.mean) / self.scale

    def inverse_transform(self, X: Any) -> jax.Array:
        """``X * scale + mean``: undo :meth:`transform`."""
        return jnp.asarray(X) * self.scale + self.mean


def num_batches(n: int, batch_size: int, *, drop_last: bool = False) -> int:
    """How many batches one epoch has: ``n // batch_size`` or ``ceil(n / batch_size)``.

    PyTorch equivalent: ``len(DataLoader(..., batch_size, drop_last))``.

    >>> num_batches(10, 4), num_batches(10, 4, drop_last=True)
    (3, 2)
    """
    check_int("n", n, minimum=0, where="num_batches")
    check_positive_int("batch_size", batch_size, where="num_batches")
    check_bool("drop_last", drop_last, where="num_batches")
    return n // batch_size if drop_last else -(-n // batch_size)


def epoch_permutation(key: jax.Array, n: int, epoch: Any) -> jax.Array:
    """The sample order of epoch ``epoch``: ``permutation(fold_in(key, epoch), n)``; works under jit.

    PyTorch equivalent: the permutation ``RandomSampler`` draws for one epoch.

    The single definition of the data order shared by :class:`DataLoader`, ``train.fit`` (fused and
    unfused) and resumed runs.

    >>> order = epoch_permutation(jax.random.key(0), 5, 0)
    >>> sorted(order.tolist())
    [0, 1, 2, 3, 4]
    >>> bool((order == epoch_permutation(jax.random.key(0), 5, 0)).all())  # same key and epoch, same order
    True
    """
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


def _check_batching(n: int, batch_size: Any, drop_last: bool, *, where: str) -> None:
    """``batch_size`` positive, ``drop_last`` a bool, and at least one batch with ``drop_last``."""
    check_positive_int("batch_size", batch_size, where=where)
    check_bool("drop_last", drop_last, where=where)
    if drop_last and batch_size > n:
        raise ValueError(
            f"{where}: batch_size={batch_size} is larger than the dataset ({n} samples) with drop_last=True; "
            f"that leaves no batch at all"
        )


def batch_indices(
    n: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    drop_last: bool = False,
    key: jax.Array | None = None,
    epoch: int = 0,
) -> list[np.ndarray]:
    """Index arrays of the batches of one epoch (what ``DataLoader`` would yield), as numpy.

    PyTorch equivalent: ``list(BatchSampler(RandomSampler or SequentialSampler, batch_size, drop_last))``.
    With ``shuffle`` the order is :func:`epoch_permutation` ``(key, n, epoch)``. Parity tests feed these
    exact indices to torch so both sides train on identical batches.

    >>> [batch.tolist() for batch in batch_indices(5, 2)]
    [[0, 1], [2, 3], [4]]
    >>> [batch.tolist() for batch in batch_indices(5, 2, drop_last=True)]
    [[0, 1], [2, 3]]
    """
    check_positive_int("n", n, where="batch_indices")
    _check_batching(n, batch_size, drop_last, where="batch_indices")
    check_bool("shuffle", shuffle, where="batch_indices")
    check_int("epoch", epoch, minimum=0, where="batch_indices")
    if shuffle:
        if key is None:
            raise ValueError("batch_indices: shuffle=True needs key=jax.random.key(seed), got key=None")
        check_key("key", key, where="batch_indices")
        order = np.array(epoch_permutation(key, n, epoch))  # a writable copy (torch.as_tensor warns otherwise)
    else:
        order = np.arange(n)
    count = num_batches(n, batch_size, drop_last=drop_last)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(count)]


def epoch_batches(
    arrays: Sequence[jax.Array], order: jax.Array, batch_size: int, *, drop_last: bool = False
) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...] | None]:
    """Device-resident batches of one epoch for fused training; traceable under ``jit``.

    PyTorch equivalent: iterating ``DataLoader(TensorDataset(...))`` for one epoch, stacked on the device.

    Returns ``(stacked, remainder)``: ``stacked[i]`` is ``arrays[i][order[:k * B]]`` reshaped to
    ``(k, B, ...)`` (k full batches of size B), ``remainder[i]`` is the last partial batch
    ``arrays[i][order[k * B:]]`` or ``None`` when there is none (or ``drop_last``).
    Batch ``j`` of ``stacked`` holds exactly the samples of :func:`batch_indices`'s batch ``j``.

    >>> stacked, remainder = epoch_batches((jnp.arange(5.0),), jnp.arange(5), 2)
    >>> stacked[0].shape, remainder[0].shape  # 2 batches of 2, then 1 sample
    ((2, 2), (1,))
    """
    check_positive_int("batch_size", batch_size, where="epoch_batches")
    check_bool("drop_last", drop_last, where="epoch_batches")
    n = order.shape[0]
    full = n // batch_size
    # (full * B,) -> (full, B): one gather per array builds every batch of the epoch at once.
    index = order[: full * batch_size].reshape(full, batch_size)
    stacked = tuple(jnp.asarray(a)[index] for a in arrays)
    if drop_last or full * batch_size == n:
        return stacked, None
    rest = order[full * batch_size :]
    return stacked, tuple(jnp.asarray(a)[rest] for a in arrays)


class DataLoader:
    """Keyed mini-batch iterator over in-memory arrays.

    PyTorch equivalent: ``DataLoader(TensorDataset(*arrays), batch_size, shuffle, drop_last)``.

    Yields tuples ``(x_batch, y_batch, ...)`` of shape (batch_size, ...) (the last one smaller unless
    ``drop_last``). ``len(loader)`` is the number of batches per epoch. Each ``iter(loader)`` starts the
    next epoch (like torch, which reshuffles every epoch); the order of epoch ``e`` is
    :func:`epoch_permutation` ``(key, n, e)``, so ``loader.epoch(e)`` replays any epoch exactly.
    Difference from torch: ``shuffle=True`` requires an explicit ``key`` (no global generator).

    >>> X, Y = np.arange(20.0).reshape(10, 2), np.arange(10)
    >>> loader = DataLoader(X, Y, batch_size=4, shuffle=True, key=jax.random.key(0))
    >>> len(loader), [tuple(xb.shape) for xb, yb in loader]  # the last batch is smaller
    (3, [(4, 2), (4, 2), (2, 2)])
    >>> epoch_1 = [yb.tolist() for _, yb in loader]  # each iter() is the next epoch, reshuffled
    >>> epoch_1 == [yb.tolist() for _, yb in loader.epoch(1)]  # any epoch can be replayed
    True
    """

    def __init__(
        self,
        *arrays: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        key: jax.Array | None = None,
    ) -> None:
        self.arrays = tuple(jnp.asarray(a) for a in arrays)
        self.n = _length(self.arrays, where="DataLoader")
        _check_batching(self.n, batch_size, drop_last, where="DataLoader")
        check_bool("shuffle", shuffle, where="DataLoader")
        if shuffle:
            if key is None:
                raise ValueError("DataLoader: shuffle=True needs key=jax.random.key(seed), got key=None")
            check_key("key", key, where="DataLoader")
        self.batch_size, self.shuffle, self.drop_last, self.key = batch_size, shuffle, drop_last, key
        self._next_epoch = 0

    def __len__(self) -> int:
        return num_batches(self.n, self.batch_size, drop_last=self.drop_last)

    def indices(self, epoch: int) -> list[np.ndarray]:
        """The batch index arrays of epoch ``epoch``."""
        return batch_indices(
            self.n, self.batch_size, shuffle=self.shuffle, drop_last=self.drop_last, key=self.key, epoch=epoch
        )

    def epoch(self, epoch: int) -> Iterator[tuple[jax.Array, ...]]:
        """Iterate the batches of epoch ``epoch`` (pure: does not advance the epoch counter)."""
        for index in self.indices(epoch):
            yield tuple(a[index] for a in self.arrays)

    def __iter__(self) -> Iterator[tuple[jax.Array, ...]]:
        epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        return self.epoch(epoch)
