"""The write spool: the sweep driver's MLflow writes kept through a tracking-server outage.

A server restart in the middle of a sweep makes a metric write raise inside a Tune callback,
which would end the whole experiment. ``SpoolingClient`` turns a failed write into a line of
an on-disk JSONL spool and replays it, in order, once the server answers again.

Why replays never duplicate. Every spooled call is stored with the exact values that the
first attempt sent: metrics keep their original timestamps, ``set_terminated`` its original
end time. MLflow's SQL stores drop a metric row whose (key, value, timestamp, step) already
exists, params accept the same value twice, tags and run status are upserts. So a call that
did reach the server before the connection broke, and is replayed anyway, changes nothing:
delivery is at-least-once and the effect is exactly-once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from hrm_core.tracking.probe import is_transient, short_reason
from hrm_core.tracking.uris import is_http, redact

__all__ = ["SPOOL_SUFFIX", "SpoolingClient", "TrackingUnavailable", "spool_file"]

SPOOL_SUFFIX = ".mlflow-spool.jsonl"
REJECTED_SUFFIX = ".rejected.jsonl"


# --- the spool ------------------------------------------------------------------------------------
def spool_file(folder: str, sweep: str, parent_id: str) -> str:
    """``<folder>/<sweep>-<parent id[:12]>.mlflow-spool.jsonl``: next to the invocation's Tune
    folder and Optuna study, named like them."""
    return os.path.join(folder, f"{sweep}-{parent_id[:12]}{SPOOL_SUFFIX}")


class TrackingUnavailable(RuntimeError):
    """The tracking server stayed away longer than the wait allowed."""


# Reads (and update_run, which sets a status) that are safe to repeat after a failure.
_IDEMPOTENT = frozenset({
    "get_run", "get_metric_history", "search_runs", "get_experiment", "get_experiment_by_name",
    "search_experiments", "list_artifacts", "update_run", "get_parent_run",
})


class SpoolingClient:
    """An ``MlflowClient`` whose writes survive a tracking-server outage.

    ``log_batch``, ``set_tag`` and ``set_terminated`` are tried at once; when the server is
    away (``is_transient``), the call is appended to a JSONL spool on disk instead, and every
    later write queues behind it, so the server sees the calls in the order they were made.
    The spool is replayed, head first, on the next call once the backoff (1 s doubling to
    ``max_backoff_s``) has passed and ``/health`` answers, and by ``flush`` (at the end of a
    sweep, waiting up to ``final_wait_s``). A spool left behind by a dead driver is replayed by
    the next client opened on the same file (``sweeps resume``) or by
    ``python -m sweeps.tracking_health replay``.

    Every other attribute is the wrapped client's. Before any of them runs, the spool is
    emptied, so that a read never sees the store behind what this client already wrote;
    reads in ``_IDEMPOTENT`` are retried while the server is away (up to ``read_wait_s``).

    For a non-HTTP store (SQLite, files) there is no server to lose: calls pass straight
    through, exactly as without this class.
    """

    def __init__(
        self,
        client: Any,
        path: str,
        *,
        max_backoff_s: float = 30.0,
        final_wait_s: float = 600.0,
        read_wait_s: float = 600.0,
        health_timeout_s: float = 2.0,
        log: Callable[[str], None] | None = None,
    ):
        self._client = client
        self.path = path
        self.enabled = is_http(getattr(client, "tracking_uri", None))
        self.max_backoff_s, self.final_wait_s, self.read_wait_s = max_backoff_s, final_wait_s, read_wait_s
        self.health_timeout_s = health_timeout_s
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._pending: list[dict] = self._load() if self.enabled else []
        self._backoff = 0.0
        self._retry_at = 0.0
        self._outage_reported = False
        self.replayed = 0  # calls delivered from the spool (for tests and logs)
        self.spooled = 0  # calls that went to the spool

    # -- the three writes ---------------------------------------------------------------------------
    def log_batch(
        self, run_id: str, metrics: Iterable = (), params: Iterable = (), tags: Iterable = (), **_: Any
    ) -> None:
        entry = {
            "op": "log_batch",
            "run_id": run_id,
            "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
            "params": [[p.key, p.value] for p in params],
            "tags": [[t.key, t.value] for t in tags],
        }
        self._write(entry)

    def set_tag(self, run_id: str, key: str, value: Any, **_: Any) -> None:
        self._write({"op": "set_tag", "run_id": run_id, "key": key, "value": str(value)})

    def set_terminated(self, run_id: str, status: str | None = None, end_time: int | None = None) -> None:
        # the end time is fixed now, so that a replay records when the run really ended
        end = int(time.time() * 1000) if end_time is None else end_time
        status = status or "FINISHED"
        self._write({"op": "set_terminated", "run_id": run_id, "status": status, "end_time": end})

    # -- everything else ----------------------------------------------------------------------------
    @property
    def tracking_uri(self) -> str:
        return self._client.tracking_uri

    @property
    def pending(self) -> int:
        return len(self._pending)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set up (yet): never recurse through self._client
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if not callable(attr) or not self.enabled:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._drain_or_raise(self.read_wait_s)
            if name in _IDEMPOTENT:
                return self.retrying(lambda: attr(*args, **kwargs))
            return attr(*args, **kwargs)

        return call

    def retrying(self, fn: Callable[[], Any], wait_s: float | None = None) -> Any:
        """Run ``fn`` (which must be safe to repeat) until it stops failing transiently, for up
        to ``wait_s`` (default ``read_wait_s``); the spool is emptied first."""
        if not self.enabled:
            return fn()
        wait_s = self.read_wait_s if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        self._drain_or_raise(wait_s)
        delay = 0.5
        while True:
            try:
                result = fn()
                self._recovered()
                return result
            except Exception as err:
                if not is_transient(err) or time.monotonic() + delay > deadline:
                    raise
                self._report_outage(err)
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)

    def flush(self, wait_s: float | None = None) -> bool:
        """Replay the spool, waiting up to ``wait_s`` (default ``final_wait_s``) for the server.
        True when nothing is left; otherwise the spool stays on disk and says so."""
        if not self.enabled:
            return True
        done = self.drain(self.final_wait_s if wait_s is None else wait_s)
        if not done:
            self._log(
                f"MLflow: {len(self._pending)} write(s) still spooled in {self.path} "
                f"({redact(self.tracking_uri)} unreachable); they are replayed by 'sweeps resume' or "
                f"'python -m sweeps.tracking_health replay {self.path}'"
            )
        return done

    # -- the machinery ------------------------------------------------------------------------------
    def _write(self, entry: dict) -> None:
        if not self.enabled:
            self._apply(entry)
            return
        if not self.drain(0.0):  # calls queued before this one go first
            self._append(entry)
            return
        try:
            self._apply(entry)
        except Exception as err:
            if not is_transient(err):
                raise
            self._append(entry)
            self._schedule(err)

    def _drain_or_raise(self, wait_s: float) -> None:
        if not self.drain(wait_s):
            raise TrackingUnavailable(
                f"MLflow tracking server {redact(self.tracking_uri)} unreachable for {wait_s:g} s; "
                f"{len(self._pending)} write(s) kept in {self.path}"
            )

    def drain(self, wait_s: float = 0.0) -> bool:
        """Replay spooled calls in order while the server takes them. Waits (sleeping through
        the backoff) up to ``wait_s``; True when the spool is empty."""
        deadline = time.monotonic() + wait_s
        while self._pending:
            now = time.monotonic()
            if now < self._retry_at:
                if self._retry_at > deadline:
                    return False
                time.sleep(self._retry_at - now)
            if not self._healthy():
                self._schedule(None)
                if self._retry_at > deadline:
                    return False
                continue
            entry = self._pending[0]
            try:
                self._apply(entry)
            except Exception as err:
                if is_transient(err):
                    self._schedule(err)
                    continue
                self._reject(entry, err)
            else:
                self.replayed += 1
            self._pending.pop(0)
            self._rewrite()
            self._backoff = 0.0
            self._retry_at = 0.0
        self._recovered()
        return True

    def _recovered(self) -> None:
        if self._outage_reported and not self._pending:
            uri = redact(self.tracking_uri)
            self._log(f"MLflow: {uri} is back; spooled writes replayed ({self.replayed} so far)")
            self._outage_reported = False

    def _apply(self, entry: dict) -> None:
        op, run_id = entry["op"], entry["run_id"]
        if op == "log_batch":
            from mlflow.entities import Metric, Param, RunTag

            self._client.log_batch(
                run_id,
                metrics=[Metric(k, v, ts, step) for k, v, ts, step in entry["metrics"]],
                params=[Param(k, v) for k, v in entry["params"]],
                tags=[RunTag(k, v) for k, v in entry["tags"]],
            )
        elif op == "set_tag":
            self._client.set_tag(run_id, entry["key"], entry["value"])
        elif op == "set_terminated":
            self._client.set_terminated(run_id, status=entry["status"], end_time=entry["end_time"])
        else:  # pragma: no cover - only this class writes the spool
            raise ValueError(f"unknown spooled call {op!r}")

    def _healthy(self) -> bool:
        """A cheap check before a replay: ``GET /health`` with a short timeout and no retries,
        so that a still-down server costs milliseconds, not MLflow's retry budget."""
        import requests
        from mlflow.utils.credentials import get_default_host_creds

        url = self.tracking_uri.rstrip("/") + "/health"
        try:
            verify = get_default_host_creds(self.tracking_uri).verify
            response = requests.get(url, timeout=self.health_timeout_s, verify=verify)
        except (requests.exceptions.RequestException, OSError, ValueError):
            return False
        return response.status_code < 500  # 401/404 behind a proxy: let the real call decide

    def _schedule(self, err: BaseException | None) -> None:
        self._backoff = min(max(1.0, self._backoff * 2), self.max_backoff_s)
        self._retry_at = time.monotonic() + self._backoff
        if err is not None:
            self._report_outage(err)

    def _report_outage(self, err: BaseException) -> None:
        if not self._outage_reported:
            self._log(
                f"MLflow: {redact(self.tracking_uri)} unreachable ({short_reason(err)}); "
                f"writes are spooled to {self.path} and replayed when it is back"
            )
            self._outage_reported = True

    def _load(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        entries = []
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines) - 1:  # a line cut short by a crash: it was never acknowledged
                    self._log(f"MLflow spool {self.path}: dropped a truncated last line")
                    continue
                raise
        if entries:
            n = len(entries)
            self._log(f"MLflow spool {self.path}: {n} write(s) from an earlier driver will be replayed first")
        return entries

    def _append(self, entry: dict) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._pending.append(entry)
        self.spooled += 1

    def _rewrite(self) -> None:
        """Persist what is left (atomically). A crash between a replay and this rewrite replays
        that call once more, which the store absorbs (see the module docstring)."""
        if not self._pending:
            if os.path.exists(self.path):
                os.remove(self.path)
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(e) + "\n" for e in self._pending)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _reject(self, entry: dict, err: BaseException) -> None:
        """A replayed call the server refuses for good (a 4xx): keep it aside, never block."""
        rejected = self.path.removesuffix(".jsonl") + REJECTED_SUFFIX
        with open(rejected, "a", encoding="utf-8") as f:
            f.write(json.dumps({**entry, "error": str(err)[:2000]}) + "\n")
        what = f"a spooled {entry['op']} for run {entry['run_id']}"
        self._log(f"MLflow refused {what}: {short_reason(err)}; kept in {rejected}")
