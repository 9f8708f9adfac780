"""Multi-output ridge regression whose penalty is chosen by exact leave-one-out error.

Cold start fits one per per-track weight tensor of the next-track model, from
a track's audio embedding to its weights (``cold_start.py``).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

import numpy as np

DEFAULT_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


@dataclasses.dataclass
class RidgeRegressor:
    """Multi-output ridge regression on z-scored inputs, penalty by leave-one-out.

    Attributes:
        x_mean, x_scale: ``[d_in]`` input standardisation (fitted on the warm tracks).
        y_mean: ``[d_out]`` target mean (the intercept; not penalised).
        coefficients: ``[d_in, d_out]``.
        alpha: the chosen penalty.
        loo_r2: leave-one-out R² of the chosen penalty, over all outputs
            (1 is perfect, 0 is no better than predicting the mean).
    """

    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: np.ndarray
    coefficients: np.ndarray
    alpha: float
    loo_r2: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray,
            alphas: Iterable[float] = DEFAULT_ALPHAS) -> "RidgeRegressor":
        """Fits ``y [n, d_out]`` on ``x [n, d_in]``; needs ``n >= 3``.

        For each ``alpha`` the exact leave-one-out residuals are
        ``(y - ŷ) / (1 - h_ii)`` with the hat matrix ``H = X (XᵀX + αI)⁻¹ Xᵀ``
        of the centred inputs (plus ``1/n`` for the intercept), from one SVD.
        """
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 3:
            raise ValueError(f"need x [n, d_in] and y [n, d_out] with n >= 3, got {x.shape}, {y.shape}")
        x_mean, x_scale = x.mean(axis=0), x.std(axis=0)
        # Constant inputs carry nothing; a unit scale keeps them at 0 after centring.
        x_scale = np.where(x_scale > 1e-8, x_scale, 1.0)
        xs = (x - x_mean) / x_scale
        y_mean = y.mean(axis=0)
        yc = y - y_mean
        u, s, vt = np.linalg.svd(xs, full_matrices=False)
        uty = u.T @ yc
        total = float(np.sum(yc ** 2)) or 1.0
        best = None
        for alpha in sorted(set(float(a) for a in alphas)):
            shrink = s / (s ** 2 + alpha)  # [r]
            fitted = u @ (s[:, None] * shrink[:, None] * uty)
            leverage = np.sum(u ** 2 * (s ** 2 / (s ** 2 + alpha))[None, :], axis=1) + 1.0 / x.shape[0]
            residuals = (yc - fitted) / (1.0 - np.minimum(leverage, 1 - 1e-9))[:, None]
            error = float(np.sum(residuals ** 2))
            if best is None or error < best[0]:
                best = (error, alpha, vt.T @ (shrink[:, None] * uty))
        error, alpha, coefficients = best
        return cls(x_mean, x_scale, y_mean, coefficients, alpha, 1.0 - error / total)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``[n, d_in]`` → ``[n, d_out]``."""
        return ((np.asarray(x, np.float64) - self.x_mean) / self.x_scale) @ self.coefficients + self.y_mean

    def to_dict(self) -> dict:
        """JSON-ready (no pickles): arrays as nested lists."""
        return {name: (value.tolist() if isinstance(value, np.ndarray) else value)
                for name, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping) -> "RidgeRegressor":
        arrays = {"x_mean", "x_scale", "y_mean", "coefficients"}
        return cls(**{name: (np.asarray(v, np.float64) if name in arrays else v)
                      for name, v in values.items()})
