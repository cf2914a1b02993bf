"""cauchy_kernels: the lab's vendored Cauchy-distribution kernels (pure Python).

Vendored into the framework's base image (layer 2) from ``external/``. Kept compatible
with Python 3.6, the oldest interpreter among the lab's upstream images.
"""

import math

__version__ = "1.0.0"


def cauchy_pdf(x, loc=0.0, scale=1.0):
    """Density of the Cauchy distribution at ``x``."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    z = (x - loc) / scale
    return 1.0 / (math.pi * scale * (1.0 + z * z))


def cauchy_cdf(x, loc=0.0, scale=1.0):
    """Cumulative distribution function of the Cauchy distribution at ``x``."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    return 0.5 + math.atan((x - loc) / scale) / math.pi


def cauchy_kernel(x, y, gamma=1.0):
    """The Cauchy kernel ``1 / (1 + |x - y|^2 / gamma^2)`` of two equal-length vectors."""
    if len(x) != len(y):
        raise ValueError("vectors differ in length")
    if gamma <= 0:
        raise ValueError("gamma must be positive")
    squared = sum((x[i] - y[i]) * (x[i] - y[i]) for i in range(len(x)))
    return 1.0 / (1.0 + squared / (gamma * gamma))


def self_test():
    """True when the kernels give their known values (used by health checks)."""
    checks = (
        abs(cauchy_pdf(0.0) - 1.0 / math.pi) < 1e-12,
        abs(cauchy_cdf(0.0) - 0.5) < 1e-12,
        abs(cauchy_kernel([0.0, 0.0], [1.0, 1.0], gamma=1.0) - 1.0 / 3.0) < 1e-12,
    )
    return all(checks)
