"""BLAS thread control shared by refnet's modules (internal).

Small matrix work — the oracle's references and their Monte Carlo arithmetic samples, the
QR steps of the Lyapunov products, the batched SVDs of local rank — gains nothing from BLAS
threads, and with OpenBLAS's default (one thread per core) it is much slower on a busy
machine: measured on this project's 2-core CI machine with two other processes running, a
267 × 267 float32 ``eigvalsh`` took 0.27 s with the default threads and 0.009 s with one
(30×), and the oracle's float32 sharpness comparison 16.5 s against 0.18 s. Environment
variables (``OPENBLAS_NUM_THREADS``) only act before NumPy is imported, so refnet limits the
threads at run time with ``threadpoolctl`` (the package scikit-learn uses for this; a runtime
dependency of refnet since 0.1, see setup.cfg).

:func:`one_blas_thread` is the only entry point; it is re-entrant and restores the caller's
setting on exit.
"""
from __future__ import annotations

import contextlib
import functools

import scipy.linalg  # noqa: F401  (SciPy's own BLAS is loaded before the controller looks)
from threadpoolctl import ThreadpoolController

__all__ = ["one_blas_thread"]


@functools.lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    """The BLAS libraries loaded in this process, found once: ``threadpool_limits`` looks them
    up on every call (2.2 ms measured, as long as a whole medium-net gradient), a cached
    controller's ``limit`` takes 0.02 ms."""
    return ThreadpoolController()


def one_blas_thread(enabled: bool = True):
    """Context manager limiting BLAS/LAPACK to one thread (a no-op if ``enabled`` is false)."""
    if not enabled:
        return contextlib.nullcontext()
    return _controller().limit(limits=1, user_api="blas")
