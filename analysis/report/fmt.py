"""How the report writes numbers, the one place: metric values (rates in % with one
decimal), differences (rates in percentage points with one decimal), intervals, p-values
(two significant digits), effect sizes, counts (integers), shares, FLOPs and seconds.
Used by the tables, the prose, the figures' labels and the run links alike, so a number
reads the same everywhere."""

from __future__ import annotations

import numpy as np

from analysis import stats

NA = "n/a"


def _finite(x: float | None) -> bool:
    try:
        return x is not None and bool(np.isfinite(x))
    except TypeError:  # pd.NA and other non-numbers
        return False


def value(metric: str, x: float | None) -> str:
    """A value of ``metric``: ``61.2%`` for rates, 4 significant digits otherwise."""
    if not _finite(x):
        return NA
    return f"{x * 100:.1f}%" if stats.is_rate(metric) else f"{x:.4g}"


def diff(metric: str, x: float | None, signed: bool = True) -> str:
    """A difference of ``metric``: ``+3.1 points`` for rates, 3 significant digits otherwise."""
    if not _finite(x):
        return NA
    scale, unit = stats.display_scale(metric)
    if unit:  # rates: percentage points
        v = x * scale if abs(x * scale) >= 0.05 else 0.0  # no "-0.0"
        return (f"{v:+.1f}" if signed else f"{v:.1f}") + unit
    return f"{x:+.3g}" if signed else f"{x:.3g}"


def on_step(x: float | None, step: float | None) -> float | None:
    """A value rounded to the metric's quantisation step (unchanged when the step is unknown)."""
    if step is None or not _finite(x) or not step > 0:
        return x
    return float(np.round(x / step) * step)


def interval(metric: str, lo: float | None, hi: float | None) -> str:
    """A CI of values: ``58.1% to 64.3%``."""
    if not (_finite(lo) and _finite(hi)):
        return NA
    return f"{value(metric, lo)} to {value(metric, hi)}"


def diff_interval(metric: str, lo: float | None, hi: float | None) -> str:
    """A CI of a difference: ``+0.8 to +5.4 points``."""
    if not (_finite(lo) and _finite(hi)):
        return NA
    _, unit = stats.display_scale(metric)
    return f"{diff(metric, lo).removesuffix(unit)} to {diff(metric, hi)}"


def p_number(p: float | None) -> str:
    """A p-value with two significant digits (``0.0043``, ``0.12``, ``1.0``); ``< 0.001``
    below that."""
    if not _finite(p):
        return NA
    if p < 0.001:
        return "< 0.001"
    r = float(f"{p:.2g}")  # rounded to two significant digits, then written without an exponent
    return f"{r:.{max(0, 1 - int(np.floor(np.log10(r))))}f}"


def p_value(p: float | None) -> str:
    """``= 0.012`` or ``< 0.001``, to follow a 'p'."""
    text = p_number(p)
    return text if text.startswith("<") else f"= {text}"


def effect(x: float | None, kind: str = "") -> str:
    """A standardised effect size with two decimals (``d_z = 1.23``)."""
    if not _finite(x):
        return NA
    return f"{kind} = {x:.2f}" if kind else f"{x:.2f}"


def count(x: float | None) -> str:
    """A count as an integer (``12``); '' when missing."""
    return f"{int(x):,d}" if _finite(x) else ""


def share(x: float | None) -> str:
    """A share in whole percent (power, savings): ``80%``."""
    return f"{x:.0%}" if _finite(x) else NA


def number(x: float | None) -> str:
    """Any other quantity, 3 significant digits."""
    return f"{x:.3g}" if _finite(x) else NA


def flops(x: float | None) -> str:
    """FLOPs in 3 significant digits (``1.5e+12``)."""
    return f"{x:.3g}" if _finite(x) else NA


def seconds(x: float | None) -> str:
    """Device-seconds with thousands separators (``1,234.5``)."""
    return f"{x:,.1f}" if _finite(x) else NA
