"""A training loop that records what the theory talks about: loss, gradient norm,
sharpness (top Hessian eigenvalue) and local rank, along the trajectory.

The package: :func:`train` and :class:`Run` (:mod:`.loop`, whose top holds the only code that
knows the network type); the update rules :class:`GD`, :class:`SGD`, :class:`Momentum`,
:class:`Adam` (:mod:`.optimizers`); the records :data:`RECORDERS` and
:func:`record_schedule` (:mod:`.records`); the minibatches :func:`minibatches`
(:mod:`.batches`).

Optimizers (θ the flat parameters, g_t the (minibatch) gradient of the mean loss at θ_t):

* ``gd``       θ_{t+1} = θ_t − η g_t, full batch. With MSE L = (1/n) Σ ½‖f − y‖² it is
  linearly stable at a minimum iff λ_max(∇²L) ≤ 2/η (Cohen et al. 2021, ICLR, §2).
* ``sgd``      the same update on minibatches.
* ``momentum`` heavy ball in PyTorch's form (``torch.optim.SGD(momentum=μ)``):
  b_t = μ b_{t−1} + g_t (b_0 = g_0), θ_{t+1} = θ_t − η b_t.
* ``adam``     Kingma & Ba 2015 (ICLR), Algorithm 1, with ε added to the bias-corrected
  root, as ``torch.optim.Adam``: m_t = β₁ m_{t−1} + (1 − β₁) g_t,
  v_t = β₂ v_{t−1} + (1 − β₂) g_t², θ_{t+1} = θ_t − η m̂_t / (√v̂_t + ε),
  m̂_t = m_t / (1 − β₁^{t+1}), v̂_t = v_t / (1 − β₂^{t+1}).

``weight_decay`` λ > 0 adds decoupled decay on the weight matrices (not the biases) before
each update, θ_W ← (1 − ηλ) θ_W: for ``adam`` this is AdamW (Loshchilov & Hutter 2019, ICLR,
Algorithm 2; ``torch.optim.AdamW`` with the biases in a group of their own with
``weight_decay=0``); for ``gd``/``sgd`` it equals an L2 penalty ½λ‖W‖² in the loss; for
``momentum`` it is applied outside the buffer.

``grad_fn`` replaces the gradient used for the update, e.g. by a randomized-backprop
estimate (:func:`refnet.randomized.randomized_loss_and_grad`): it is called as
``grad_fn(net, x_batch, y_batch, loss=name, seed=rng)`` with the loop's Generator (so its
randomness also comes from ``seed``) and must return ``(loss_value, grad)``. The records and
the divergence and convergence checks stay exact (full batch, computed at recorded steps).

Minibatches (``batch_size`` given) follow random reshuffling: each epoch is a permutation of
the n samples drawn from ``seed``, cut into ⌊n / batch_size⌋ consecutive batches (the
incomplete remainder is dropped, like ``DataLoader(drop_last=True)``). ``batch_size=None`` is
full batch for every optimizer.

Steps
-----
"Step t" is the state after t updates; the run evaluates θ_0, θ_1, ... θ_T. Records are taken
at step 0, at the scheduled steps and at the final step T (where the run stopped). A run
stops as

* ``"converged"`` at the first step with full-batch ‖∇L(θ_t)‖ < ``tol`` (checked every step for
  full-batch optimizers, at the recorded steps for minibatch ones, where the full gradient
  is computed anyway);
* ``"diverged"`` at the first step whose loss or gradient is not finite, or whose loss exceeds
  ``diverge_factor`` × L(θ_0) (the minibatch loss for minibatch optimizers), or whose update
  gave non-finite parameters: the history up to and including that step is kept (the
  expensive records are NaN there) and no exception is raised;
* ``"max_steps"`` otherwise, at T = ``steps``.

Minibatches come from ``seed``; the sharpness' Lanczos start from ``sharpness_kw["seed"]``
(default 0), so recording more or less never changes the trajectory. The same arguments
give the same bits.
"""
from .batches import minibatches
from .loop import STATUSES, Run, train
from .optimizers import OPTIMIZERS, SGD, Adam, GD, Momentum
from .records import RECORDERS, RECORDS, record_schedule

__all__ = ["Run", "train", "record_schedule", "OPTIMIZERS", "RECORDS", "RECORDERS", "GD",
           "SGD", "Momentum", "Adam", "minibatches"]
