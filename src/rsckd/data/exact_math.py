"""``exp`` and ``log`` whose float64 results are the same bits on every IEEE-754 machine.

numpy picks its ``exp``/``log``/``power`` kernels at run time by CPU (SVML-style AVX-512 code on one machine,
AVX2 or plain C on another), and they differ in the last bit. The synthetic corpus feeds such values straight
into its PCM samples, so it computes them here from operations that IEEE-754 rounds exactly (``+ - * /``,
``rint``, ``ldexp``, ``frexp``) in a fixed order: range reduction, then a polynomial, accurate to ~1 ulp.
"""

from __future__ import annotations

import math

import numpy as np

# ln 2 split so that k * LN2_HI is exact for |k| < 2**20 (fdlibm's constants)
LN2_HI, LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
EXP_TERMS = 14  # Taylor terms of exp(r), |r| <= ln2/2: truncation error < 1e-17
LOG_TERMS = 11  # odd terms of 2 atanh(s), |s| <= 0.172: truncation error < 1e-18


def exp(x: np.ndarray | float) -> np.ndarray:
    """e**x (float64): x = k ln2 + r, exp(r) by Horner's rule, times 2**k."""
    x = np.asarray(x, dtype=np.float64)
    k = np.rint(x / 0.6931471805599453)
    r = (x - k * LN2_HI) - k * LN2_LO
    poly = np.ones_like(r)
    for n in range(EXP_TERMS, 0, -1):
        poly = poly * r / n + 1.0
    return np.ldexp(poly, k.astype(np.int64))


def log(x: np.ndarray | float) -> np.ndarray:
    """Natural log (float64, x > 0): x = m 2**e, m in [sqrt(1/2), sqrt(2)), log m = 2 atanh((m-1)/(m+1))."""
    m, e = np.frexp(np.asarray(x, dtype=np.float64))
    low = m < math.sqrt(0.5)
    m, e = np.where(low, 2.0 * m, m), np.where(low, e - 1, e)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    series = np.full_like(s, 1.0 / (2 * LOG_TERMS - 1))
    for n in range(LOG_TERMS - 1, 0, -1):
        series = series * s2 + 1.0 / (2 * n - 1)
    return (e * LN2_HI + 2.0 * s * series) + e * LN2_LO
