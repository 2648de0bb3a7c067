"""Optuna search that tells Optuna the truth about early-stopped trials.

Ray's ``OptunaSearch`` reports intermediate values at Tune's iteration count and tells
Optuna an ASHA-stopped trial COMPLETED with its partial value, which biases TPE towards
configurations that were only evaluated early. Here intermediate values are reported at
the global optimizer step, and a trial stopped before its budget is PRUNED.
"""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch

from trainables.tune_sink import OUTCOME, STEP, TOTAL_STEPS


class HRMOptunaSearch(OptunaSearch):
    def _report(self, trial_id: str, result: dict) -> None:
        value, step = result.get(self.metric), result.get(STEP)
        reported = self.__dict__.setdefault("_reported_steps", {}).setdefault(trial_id, set())
        if value is None or step is None or int(step) in reported:
            return
        self._ot_trials[trial_id].report(float(value), int(step))
        reported.add(int(step))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list) or trial_id in self._completed_trials:
            return
        if trial_id not in self._ot_trials:
            return
        self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        import optuna

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        if result and not isinstance(self.metric, list):
            # Tune sends the result that made the scheduler stop a trial here, not to
            # on_trial_result: it is the trial's last intermediate value.
            self._report(trial_id, result)
        before_budget = bool(result) and result.get(STEP, 0) < result.get(TOTAL_STEPS, 0)
        stopped_early = before_budget and not result.get(OUTCOME)
        if error:
            self._ot_study.tell(ot_trial, None, state=optuna.trial.TrialState.FAIL)
        elif stopped_early or not result:
            self._ot_study.tell(ot_trial, None, state=optuna.trial.TrialState.PRUNED)
        else:
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            values = [result.get(m) for m in metrics]
            if any(v is None or v != v for v in values):  # diverged: NaN is no value
                self._ot_study.tell(ot_trial, None, state=optuna.trial.TrialState.FAIL)
            else:
                self._ot_study.tell(ot_trial, values if len(values) > 1 else values[0])
        self._completed_trials.add(trial_id)


def distributions(space: dict) -> dict:
    """Sweep-file params -> Optuna distributions (grid is searched as a categorical)."""
    import optuna.distributions as d

    out = {}
    for key, p in space.items():
        if p.type in ("choice", "grid"):
            out[key] = d.CategoricalDistribution(p.values)
        elif p.type == "uniform":
            out[key] = d.FloatDistribution(p.low, p.high)
        elif p.type == "loguniform":
            out[key] = d.FloatDistribution(p.low, p.high, log=True)
        else:
            out[key] = d.IntDistribution(int(p.low), int(p.high))
    return out
