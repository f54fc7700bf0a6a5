"""Layers: one file per kind, each with the same five methods (:mod:`refnet.layers.base`).

====================  ===========================================  =============================
kind                  map                                          torch equivalent
====================  ===========================================  =============================
:class:`Linear`       y = x Wᵀ + b                                 ``nn.Linear``
:class:`Activation`   y = φ(x), element-wise, with its settings    ``nn.Tanh``, ``nn.GELU``, ...
:class:`Residual`     y = x + F(x) or P x + F(x)                   a module with ``block``/``proj``
:class:`MeanPool`     mean over the sequence axis                  ``x.mean(dim=1)``
:class:`Flatten`      (n, S, d) -> (n, S·d)                        ``nn.Flatten()``
:class:`LayerNorm`    y = γ ⊙ (x − μ)/√(σ² + ε) + β, last axis     ``nn.LayerNorm``
MultiheadAttention    self-attention softmax(QKᵀ/√d_h + M) V       ``nn.MultiheadAttention``
====================  ===========================================  =============================
"""
from .base import Layer
from .linear import Linear
from .activation import Activation
from .residual import Residual
from .pool import Flatten, MeanPool
from .attention import MultiheadAttention
from .layernorm import LayerNorm

__all__ = ["Layer", "Linear", "Activation", "Residual", "MeanPool", "Flatten"]
__all__ += ["MultiheadAttention"]
__all__ += ["LayerNorm"]
