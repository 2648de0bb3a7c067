"""Step 4 of reproduce: every metric the original logged (timings excluded) against the
rerun's, step by step, exactly (NaN equals NaN); the table and the verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hrm_core import names


@dataclass
class Comparison:
    key: str
    steps: int = 0
    equal: int = 0
    max_abs: float = 0.0
    first_diff: int | None = None
    missing: int = 0  # steps the original logged that the rerun did not

    @property
    def bitwise(self) -> bool:
        return self.steps > 0 and self.equal == self.steps and self.missing == 0


def _history(client, run_id: str, key: str) -> dict[int, float]:
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return {m.step: m.value for m in points}


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def compare_metrics(client, original_id: str, rerun_id: str, upto: int) -> tuple[list[Comparison], list[str]]:
    """Per metric key the original logged (timings excluded): exact comparison at common steps.
    Also returns the keys only the rerun logged."""
    keys = sorted(client.get_run(original_id).data.metrics)
    rerun_keys = set(client.get_run(rerun_id).data.metrics)
    out = []
    for key in keys:
        if names.is_timing(key) or key == names.RESUMED_FROM_STEP:
            continue
        a = {s: v for s, v in _history(client, original_id, key).items() if s <= upto}
        b = _history(client, rerun_id, key) if key in rerun_keys else {}
        out.append(_compare(key, a, b))
    only_rerun = sorted(k for k in rerun_keys - set(keys) if not names.is_timing(k))
    return out, only_rerun


def _compare(key: str, a: dict[int, float], b: dict[int, float]) -> Comparison:
    c = Comparison(key)
    for step in sorted(a):
        if step not in b:
            c.missing += 1
            continue
        c.steps += 1
        if _same(a[step], b[step]):
            c.equal += 1
        else:
            diff = abs(a[step] - b[step])
            c.max_abs = max(c.max_abs, diff) if not math.isnan(diff) else math.inf
            if c.first_diff is None:
                c.first_diff = step
    return c


def format_table(comparisons: list[Comparison]) -> str:
    width = max([len("metric")] + [len(c.key) for c in comparisons])
    missing = any(c.missing for c in comparisons)
    head = f"  {'metric':<{width}}  {'steps':>5}  {'bitwise':>7}" + (f"  {'missing':>7}" if missing else "")
    rows = [head + f"  {'max |diff|':>10}  {'first diff':>10}"]
    for c in comparisons:
        first = "-" if c.first_diff is None else str(c.first_diff)
        row = f"  {c.key:<{width}}  {c.steps:>5}  {c.equal:>7}" + (f"  {c.missing:>7}" if missing else "")
        rows.append(row + f"  {c.max_abs:>10.3g}  {first:>10}")
    return "\n".join(rows)


def matches(comparisons: list[Comparison]) -> bool:
    return bool(comparisons) and all(c.bitwise for c in comparisons)


def verdict(comparisons: list[Comparison], expected_differences: bool) -> str:
    if matches(comparisons):
        n_steps = max((c.steps for c in comparisons), default=0)
        return f"verdict: bitwise identical: {len(comparisons)} metrics at up to {n_steps} steps each"
    bad = [c for c in comparisons if not c.bitwise]
    first = min((c for c in bad if c.first_diff is not None), key=lambda c: c.first_diff, default=None)
    where = f", first at step {first.first_diff} ({first.key})" if first else ""
    if expected_differences:
        why = " (expected: see the differences above)"
    else:
        why = " (unexpected: the contexts match)"
    return f"verdict: differs: {len(bad)} of {len(comparisons)} metrics not bitwise{where}{why}"
