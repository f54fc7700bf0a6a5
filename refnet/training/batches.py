"""Minibatch indices for :func:`refnet.training.train`: random reshuffling with drop_last."""
from __future__ import annotations

import numpy as np

from .._validate import as_rng, check_positive_int

__all__ = ["minibatches"]


def minibatches(n: int, batch_size: int, seed=0):
    """An endless iterator of minibatch index arrays by random reshuffling.

    Each epoch is a permutation π of ``range(n)`` drawn from ``seed`` (``rng.permutation(n)``)
    cut into ⌊n / b⌋ consecutive batches π[k b : (k+1) b], k = 0, ..., ⌊n / b⌋ − 1, for
    b = ``batch_size``; the incomplete remainder (n mod b indices) is dropped, like
    ``torch.utils.data.DataLoader(shuffle=True, drop_last=True)``.

    The permutation of an epoch is drawn when its first batch is requested, not before, so a
    caller sharing the Generator (e.g. a ``grad_fn`` drawing sketches from it after each
    batch) sees the same stream as the training loop always has.

    Parameters
    ----------
    n : int >= 1, the number of samples
    batch_size : int in [1, n]
    seed : int or np.random.Generator (a Generator is used, and advanced, in place)

    Returns
    -------
    iterator of int ndarray ``(batch_size,)`` (views into the epoch's permutation)
    """
    n = check_positive_int(n, "n")
    batch_size = check_positive_int(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(f"batch_size: expected at most the number of samples {n}; "
                         f"received {batch_size}")
    return _epochs(n, batch_size, as_rng(seed))


def _epochs(n, b, rng):
    per_epoch = n // b
    while True:
        perm = rng.permutation(n)
        for k in range(per_epoch):
            yield perm[k * b:(k + 1) * b]
