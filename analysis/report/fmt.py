"""How the report writes numbers: metric values (rates in %), differences (rates in
percentage points), p-values, FLOPs and seconds. Used by the tables, the prose and the
run links alike, so a number reads the same everywhere."""

from __future__ import annotations

import numpy as np

from analysis import stats


def _finite(x: float | None) -> bool:
    return x is not None and bool(np.isfinite(x))


def value(metric: str, x: float | None) -> str:
    """A value of ``metric``: ``61.2%`` for rates, 4 significant digits otherwise."""
    if not _finite(x):
        return "n/a"
    return f"{x * 100:.1f}%" if stats.is_rate(metric) else f"{x:.4g}"


def diff(metric: str, x: float | None, signed: bool = True) -> str:
    """A difference of ``metric``: ``+3.1 points`` for rates, 3 significant digits otherwise."""
    if not _finite(x):
        return "n/a"
    scale, unit = stats.display_scale(metric)
    if unit:  # rates: percentage points
        return (f"{x * scale:+.1f}" if signed else f"{x * scale:.1f}") + unit
    return f"{x:+.3g}" if signed else f"{x:.3g}"


def p_value(p: float) -> str:
    """``= 0.012`` or ``< 0.001``, to follow a 'p'."""
    if not np.isfinite(p):
        return "= n/a"
    return "< 0.001" if p < 0.001 else f"= {p:.3f}" if p < 0.1 else f"= {p:.2f}"


def flops(x: float | None) -> str:
    """FLOPs in 3 significant digits (``1.5e+12``)."""
    return f"{x:.3g}" if _finite(x) else "n/a"


def seconds(x: float | None) -> str:
    """Device-seconds with thousands separators (``1,234.5``)."""
    return f"{x:,.1f}" if _finite(x) else "n/a"
