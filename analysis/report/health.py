"""Training health from the runs' alert tags: per run whether it was checked and which
rules fired (``hrm.alerts``: the rules, '' when healthy, absent when not checked), and
per fired alert its step and message (``hrm.alert.<rule>`` = ``step <n>: <message>``)."""

from __future__ import annotations

import math

import pandas as pd

from hrm_core import names

HEALTH_COLUMNS = ["run_id", "run", "who", "arm", "seed", "outcome", "checked", "alerts", "status"]
ALERT_COLUMNS = ["run_id", "run", "who", "arm", "seed", "rule", "step", "message"]
_ALERT_COL = f"tags.{names.TAG_ALERT_PREFIX}"
_ALERTS_COL = f"tags.{names.TAG_ALERTS}"
_RULE_ORDER = {r: i for i, r in enumerate(names.ALERT_RULES)}


def parse_alert(text: str) -> tuple[float, str]:
    """``"step 400: eval accuracy fell ..."`` -> (400, "eval accuracy fell ...")."""
    head, sep, rest = str(text).partition(":")
    words = head.split()
    if sep and len(words) == 2 and words[0] == "step" and words[1].lstrip("-").isdigit():
        return float(words[1]), rest.strip()
    return math.nan, str(text).strip()


def who(row: dict, kind: str) -> str:
    """How the report names a run: its trial (searches) or ``<arm> seed <n>``."""
    if kind == "search":
        return str(row.get("trial_id") or row.get("run_name"))
    seed = row.get("seed")
    if seed is not None and not pd.isna(seed):
        return f"{row['arm']} seed {seed}"
    return str(row.get("run_name") or row["arm"])


def _rule_key(rule: str) -> int:
    return _RULE_ORDER.get(rule, len(_RULE_ORDER))


def _run_alerts(row: dict, alert_cols: list[str]) -> tuple[bool, dict[str, tuple[float, str]]]:
    """(checked, {rule: (step, message)}) of one run, its rules in the alert rules' order."""
    fired = {c[len(_ALERT_COL):]: row[c] for c in alert_cols
             if isinstance(row.get(c), str) and row[c].strip()}
    listed = row.get(_ALERTS_COL)
    checked = isinstance(listed, str)
    rules = set(fired) | ({r.strip() for r in listed.split(",") if r.strip()} if checked else set())
    missing = f"(listed in {names.TAG_ALERTS}; no {names.TAG_ALERT_PREFIX}{{rule}} tag)"
    return checked, {
        rule: parse_alert(fired[rule]) if rule in fired else (math.nan, missing.format(rule=rule))
        for rule in sorted(rules, key=lambda r: (_rule_key(r), r))
    }


def run_health(runs: pd.DataFrame, kind: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(health, alerts): per run its status, whether it was checked and how many rules
    fired; per fired alert the run, rule, step and message, in the alert rules' order."""
    alert_cols = [c for c in runs.columns if c.startswith(_ALERT_COL)]
    health, alerts = [], []
    for row in runs.to_dict("records"):
        checked, fired = _run_alerts(row, alert_cols)
        base = {"run_id": row["run_id"], "run": row["run_name"], "who": who(row, kind), "arm": row["arm"],
                "seed": row.get("seed")}
        alerts += [{**base, "rule": rule, "step": step, "message": message}
                   for rule, (step, message) in fired.items()]
        status = ", ".join(fired) if fired else ("ok" if checked else "not checked")
        health.append({**base, "outcome": row["outcome"], "checked": checked or bool(fired),
                       "alerts": len(fired), "status": status})
    alerts_frame = pd.DataFrame(alerts, columns=ALERT_COLUMNS)
    if len(alerts_frame):
        alerts_frame = alerts_frame.assign(_o=alerts_frame["rule"].map(_rule_key)).sort_values(
            ["_o", "step", "who"], na_position="last").drop(columns="_o").reset_index(drop=True)
    return pd.DataFrame(health, columns=HEALTH_COLUMNS), alerts_frame
