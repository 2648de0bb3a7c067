"""Looks: every report written on a new set of completed pairs is a look at the data, by
any entry point (a sweep's end, ``--extend``, ``resume``, ``make report``). Each look is
recorded on the sweep's parent run, in the tag ``hrm.looks`` (a JSON list of
``{time, pairs, seeds}``), only when the set of paired seeds changed; the verdict's alpha
spending (``analysis.sequential``) counts them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hrm_core import names

MAX_KEPT = 40  # a tag holds at most a few thousand characters: the latest looks are kept


def parse(tags: dict[str, str]) -> list[dict]:
    """The looks recorded in a parent run's tags ([] when none or unreadable)."""
    try:
        looks = json.loads(tags.get(names.TAG_LOOKS) or "[]")
    except ValueError:
        return []
    return [lk for lk in looks if isinstance(lk, dict) and "pairs" in lk] if isinstance(looks, list) else []


def is_new(looks: list[dict], seeds: list[int]) -> bool:
    """Whether the paired seeds differ from the last recorded look's."""
    return not looks or sorted(looks[-1].get("seeds", [])) != sorted(seeds)


def with_current(looks: list[dict], pairs: int, seeds: list[int]) -> list[dict]:
    """The looks including this one (appended when its set of pairs is new)."""
    if not is_new(looks, seeds):
        return list(looks)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return [*looks, {"time": now, "pairs": int(pairs), "seeds": sorted(int(s) for s in seeds)}]


def record(client, parent_run_id: str, looks: list[dict]) -> None:
    """Write the looks to the parent run's tag (the latest ``MAX_KEPT``)."""
    client.set_tag(parent_run_id, names.TAG_LOOKS, json.dumps(looks[-MAX_KEPT:], separators=(",", ":")))
