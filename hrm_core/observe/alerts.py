"""Alert rules over a run's metric stream, and the ``AlertMonitor`` that watches it.

The stream is what the trainer emits: ``(step, {key: value})`` records, train metrics at
every logged step, eval + ``diag/*`` metrics at every eval step (a "report"). The rules
are pure functions of the stream and the ``alerts:`` config (``AlertsConfig``); each fires
at most once per run, at its first firing, with a one-line message. Rules
(``names.ALERT_RULES``; thresholds and defaults in ``hrm_core/config/schema.py``):

- ``grad_explosion``: ``diag/grad_norm`` > ``grad_factor`` x the median of the previous
  reports' grad norms (the last ``grad_window``, once there are ``grad_min_reports``)
  and > ``grad_floor``; or a non-finite grad norm.
- ``nonfinite``: a non-finite loss (any ``.../*loss`` metric: train, eval, a variant's)
  or ``diag/*`` value.
- ``act_always_max``: ``diag/halt_steps/train/at_max_share`` >= ``act_max_share`` at
  ``act_patience`` consecutive reports after ``act_after_step`` (default: the lr
  warm-up), while the model solves puzzles (latest ``train/exact_accuracy`` >=
  ``act_min_exact_accuracy``): ACT never learnt to halt early on what it solves. (A model
  that solves nothing is right not to halt early: Q-halt learns "this row is solved".)
  Not checked with ``halt_max_steps`` = 1.
- ``puzzle_emb_frozen``: ``diag/puzzle_emb/updated_share`` == 0 at a report after
  ``puzzle_after_step``: no puzzle-embedding row changed (e.g. ``puzzle_emb_lr=0``).
- ``gates_saturated``: for a gated module, ``gate/<m>/sat_low + sat_high`` (its latest
  train value) > ``gate_saturation`` at a report after ``gate_after_step`` (default: the
  lr warm-up; gates start at sigmoid(gate_init_bias) ~ 0.1, counted as saturated).
- ``eval_collapse``: ``eval_metric`` fell below ``peak - max(eval_abs_drop,
  eval_rel_drop x peak)`` once its peak reached ``eval_min_peak``. On a dataset with a
  validation split the rule watches the metric's ``val/*`` counterpart (``eval/*``, the test
  split, is logged at the final step only).

The monitor's state (histories, streaks, peak, fired rules) is part of the checkpoint,
so a resumed run neither fires a rule again nor forgets one it was building up.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping

from hrm_core import names
from hrm_core.config.schema import AlertsConfig

_TRAIN_AT_MAX = names.DIAG_HALT_AT_MAX.format(split=names.TRAIN)
_TRAIN_SHARE_2 = names.DIAG_HALT_SHARE.format(split=names.TRAIN, k=2)
_TRAIN_EXACT = names.metric(names.TRAIN, names.EXACT_ACCURACY)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def is_report(metrics: Mapping[str, float]) -> bool:
    """An eval step's record: it carries eval, val or diag metrics."""
    return any(k.startswith((names.EVAL + "/", names.VAL + "/", names.DIAG_PREFIX)) for k in metrics)


class AlertRules:
    """The six rules over a stream; ``observe`` returns the rules that fire at this record."""

    def __init__(self, cfg: AlertsConfig | None = None, warmup_steps: int = 0):
        self.cfg = cfg or AlertsConfig()
        self.warmup_steps = warmup_steps
        self.fired: dict[str, tuple[int, str]] = {}  # rule -> (first step, message)
        self.state: dict = {"grad_norms": [], "act_streak": 0, "train_exact": 0.0, "gates": {}, "peak": None,
                            "peak_step": None}

    # --- the stream ---------------------------------------------------------------------------
    def observe(self, step: int, metrics: Mapping[str, float]) -> list[tuple[str, str]]:
        """Feed one record; -> [(rule, message)] that fired for the first time here."""
        new = []
        for rule in names.ALERT_RULES:
            message = getattr(self, f"_{rule}")(step, metrics)  # every rule keeps its state up to date
            if message and rule not in self.fired and rule not in self.cfg.disable:
                self.fired[rule] = (step, message)
                new.append((rule, message))
        return new

    # --- rules (each returns a message when its condition holds at this record) ----------------
    def _grad_explosion(self, step: int, m: Mapping[str, float]) -> str | None:
        if names.DIAG_GRAD_NORM not in m:
            return None
        c, g = self.cfg, float(m[names.DIAG_GRAD_NORM])
        history: list[float] = self.state["grad_norms"]
        message = None
        if not math.isfinite(g):
            message = f"{names.DIAG_GRAD_NORM} is {g}"
        elif len(history) >= c.grad_min_reports:
            median = statistics.median(history[-c.grad_window :])
            if g > c.grad_factor * median and g > c.grad_floor:
                message = (f"{names.DIAG_GRAD_NORM} {_fmt(g)} > {_fmt(c.grad_factor)} x the median "
                           f"{_fmt(median)} of the last {min(len(history), c.grad_window)} reports")
        if math.isfinite(g):
            history.append(g)
            del history[: -c.grad_window]
        return message

    def _nonfinite(self, step: int, m: Mapping[str, float]) -> str | None:
        bad = [
            k for k, v in m.items()
            if (("/" in k and k.rsplit("/", 1)[-1].endswith("loss")) or k.startswith(names.DIAG_PREFIX))
            and not math.isfinite(float(v))
        ]
        if not bad:
            return None
        shown = ", ".join(f"{k} = {m[k]}" for k in sorted(bad)[:3])
        return shown + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")

    def _act_always_max(self, step: int, m: Mapping[str, float]) -> str | None:
        if _TRAIN_EXACT in m:
            self.state["train_exact"] = float(m[_TRAIN_EXACT])
        if _TRAIN_AT_MAX not in m or _TRAIN_SHARE_2 not in m:  # no halting data, or halt_max_steps = 1
            return None
        c = self.cfg
        after = c.act_after_step if c.act_after_step is not None else self.warmup_steps
        share, solved = float(m[_TRAIN_AT_MAX]), self.state.get("train_exact", 0.0)
        if step <= after or not share >= c.act_max_share or not solved >= c.act_min_exact_accuracy:
            self.state["act_streak"] = 0
            return None
        self.state["act_streak"] += 1
        if self.state["act_streak"] >= c.act_patience:
            return (f"{_TRAIN_AT_MAX} {_fmt(share)} >= {_fmt(c.act_max_share)} at {self.state['act_streak']} "
                    f"consecutive reports after step {after} ({_TRAIN_EXACT} {_fmt(solved)}): "
                    "ACT never halts early")
        return None

    def _puzzle_emb_frozen(self, step: int, m: Mapping[str, float]) -> str | None:
        share = m.get(names.DIAG_PUZZLE_UPDATED_SHARE)
        if share is None or step <= self.cfg.puzzle_after_step or float(share) != 0:
            return None
        return (f"{names.DIAG_PUZZLE_UPDATED_SHARE} = 0: no puzzle-embedding row changed since the last "
                "report (puzzle_emb_lr = 0?)")

    def _gates_saturated(self, step: int, m: Mapping[str, float]) -> str | None:
        gates: dict[str, dict[str, float]] = self.state["gates"]
        for k, v in m.items():
            if k.startswith(names.GATE_PREFIX) and k.endswith(("/sat_low", "/sat_high")):
                module, which = k[len(names.GATE_PREFIX) :].rsplit("/", 1)
                gates.setdefault(module, {})[which] = float(v)
        after = self.cfg.gate_after_step if self.cfg.gate_after_step is not None else self.warmup_steps
        if not gates or step <= after or not is_report(m):
            return None
        for module, sat in sorted(gates.items()):
            total = sat.get("sat_low", 0.0) + sat.get("sat_high", 0.0)
            if total > self.cfg.gate_saturation:
                low, high = sat.get("sat_low", 0.0), sat.get("sat_high", 0.0)
                return (f"gate/{module}: sat_low {_fmt(low)} + sat_high {_fmt(high)} "
                        f"> {_fmt(self.cfg.gate_saturation)}: the gates are stuck near 0 or 1")
        return None

    def _eval_collapse(self, step: int, m: Mapping[str, float]) -> str | None:
        c, key = self.cfg, names.watched(m, self.cfg.eval_metric)  # on val/* when the data has a val split
        if key not in m or not math.isfinite(float(m[key])):
            return None
        v, peak = float(m[key]), self.state["peak"]
        if peak is None or v > peak:
            self.state["peak"], self.state["peak_step"] = v, step
            return None
        drop = max(c.eval_abs_drop, c.eval_rel_drop * peak)
        if peak >= c.eval_min_peak and v < peak - drop:
            return (f"{key} fell to {_fmt(v)} from its peak {_fmt(peak)} "
                    f"at step {self.state['peak_step']}")
        return None

    # --- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"fired": {r: list(v) for r, v in self.fired.items()}, "state": self.state}

    def load_state_dict(self, state: dict | None) -> None:
        if not state:
            return
        self.fired = {r: (int(s), str(msg)) for r, (s, msg) in state["fired"].items()}
        self.state = {**self.state, **state["state"]}


class AlertMonitor:
    """Watches the records the trainer emits (``observe``, after the callbacks have them) and
    sends each rule's first firing out once, through ``emit(step, rule, message)``."""

    def __init__(self, cfg: AlertsConfig | None = None, warmup_steps: int = 0,
                 emit: Callable[[int, str, str], None] | None = None):
        self.rules = AlertRules(cfg, warmup_steps)
        self.emit = emit or (lambda *_: None)

    @property
    def fired(self) -> dict[str, tuple[int, str]]:
        return self.rules.fired

    def observe(self, step: int, metrics: Mapping[str, float]) -> None:
        for rule, message in self.rules.observe(step, metrics):
            self.emit(step, rule, message)

    def state_dict(self) -> dict:
        return self.rules.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        self.rules.load_state_dict(state)


def alert_tag_value(step: int, message: str) -> str:
    """The value of the ``hrm.alert.<rule>`` tag."""
    return f"step {step}: {message}"[:5000]


def alerts_tag(rules) -> str:
    """The ``hrm.alerts`` tag: the fired rules in ``names.ALERT_RULES`` order ("" = none)."""
    fired = set(rules)
    return ",".join(r for r in names.ALERT_RULES if r in fired)
