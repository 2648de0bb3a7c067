"""Is the tracking store there? A bounded probe before a sweep starts, MLflow's HTTP retry
budget for the driver, and which failures mean "the server is away" (``is_transient``).

A server that is down at start makes MLflow's client retry for minutes (7 retries with
exponential backoff, 120 s timeouts by default) before anything says so. ``probe`` answers in
at most ``timeout_s`` with one line that names the URI, before Ray or any run starts.

MLflow's own HTTP retries. ``bound_http_retries`` sets (only where unset) the client's retry
budget for the driver process: ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=2``,
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1``, ``MLFLOW_HTTP_REQUEST_TIMEOUT=20``. A refused
connection then fails in a few seconds instead of ~4 minutes, after which the write spool
(``hrm_core.tracking.spool``) takes over; export other values to override them.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from hrm_core.errors import UserError
from hrm_core.tracking.uris import redact

__all__ = ["DRIVER_HTTP_ENV", "bound_http_retries", "is_transient", "probe", "short_reason"]

# MLflow client retry budget for the sweep driver (see the module docstring).
DRIVER_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
_DB_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mssql": 1433}


def bound_http_retries(env: dict[str, str] | None = None) -> dict[str, str]:
    """Cap MLflow's HTTP retries for this process, where the user set nothing else.

    Returns the variables it set. Applies to every MLflow client in the process (the driver
    only: trials never talk to MLflow), which is the point: a down server must cost seconds.
    """
    env = os.environ if env is None else env
    applied = {}
    for key, value in DRIVER_HTTP_ENV.items():
        if key not in env:
            env[key] = value
            applied[key] = value
    return applied



# --- probe ----------------------------------------------------------------------------------------
def probe(uri: str, timeout_s: float = 10.0) -> None:
    """Check that the tracking store at ``uri`` can be used, within ``timeout_s`` seconds.

    * http(s): one GET of ``api/2.0/mlflow/experiments/search?max_results=1`` (it touches the
      server *and* its database, and checks credentials), no retries, with a hard deadline
      that also covers DNS. Also caps MLflow's HTTP retries for this process
      (``bound_http_retries``), so that later calls fail fast too.
    * sqlite / file / plain paths: the folder exists or can be made, and is writable.
    * postgresql / mysql / mssql (a database used directly): its port accepts a connection.

    Raises ``UserError`` (one line naming the URI) when the store cannot be used.
    """
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if len(scheme) == 1:  # a Windows drive letter, not a scheme
        scheme = ""
    if scheme in ("http", "https"):
        bound_http_retries()
        _probe_http(uri, timeout_s)
    elif scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if path and path != ":memory:" and not path.startswith("file:"):
            _check_writable(uri, os.path.dirname(os.path.abspath(path)) or ".", os.path.abspath(path))
    elif scheme in ("", "file"):
        path = urlsplit(uri).path if scheme == "file" else uri
        _check_writable(uri, os.path.abspath(path), None)
    elif scheme.split("+", 1)[0] in _DB_PORTS:
        _probe_tcp(uri, timeout_s)
    # other schemes (databricks, plugins): nothing generic to check here


def _unreachable(uri: str, reason: str) -> UserError:
    return UserError(
        f"MLflow tracking server {redact(uri)} is unreachable: {reason}; "
        "start it, or point MLFLOW_TRACKING_URI elsewhere (unset = the embedded store mlruns/)"
    )


def _probe_http(uri: str, timeout_s: float) -> None:
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            response = http_request(
                get_default_host_creds(uri.rstrip("/")),
                "/api/2.0/mlflow/experiments/search",
                "GET",
                params={"max_results": 1},
                max_retries=0,
                backoff_factor=0,
                retry_codes=(),
                timeout=max(1, int(timeout_s)),
                raise_on_status=False,
            )
            outcome["status"] = response.status_code
            outcome["body"] = response.text[:500]
        except Exception as err:  # noqa: BLE001 - reported as one line below
            outcome["error"] = err

    worker = threading.Thread(target=attempt, name="mlflow-probe", daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(timeout_s)  # a hard bound: DNS and TLS stalls included
    if worker.is_alive():
        raise _unreachable(uri, f"no answer within {timeout_s:g} s")
    if "error" in outcome:
        raise _unreachable(uri, short_reason(outcome["error"]))
    status = outcome["status"]
    if status == 403 and "Invalid Host header" in outcome.get("body", ""):
        host = urlsplit(uri).netloc.rsplit("@", 1)[-1]
        raise UserError(
            f"MLflow tracking server {redact(uri)} rejects the Host header '{host}': "
            "add it to the server's --allowed-hosts (MLFLOW_ALLOWED_HOSTS in docker/.env)"
        )
    if status in (401, 403):
        raise UserError(
            f"MLflow tracking server {redact(uri)} refused the credentials (HTTP {status}); "
            "set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN"
        )
    if status == 404:
        raise _unreachable(uri, "HTTP 404: not an MLflow tracking server (check the URI and its path prefix)")
    if status != 200:
        raise _unreachable(uri, f"HTTP {status} after {time.monotonic() - started:.1f} s")


def short_reason(err: BaseException) -> str:
    text = str(err)
    lowered = text.lower()
    for needle, reason in (
        ("connection refused", "connection refused"),
        ("name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("temporary failure in name resolution", "unknown host"),
        ("timed out", "timed out"),
        ("certificate verify failed", "TLS certificate not trusted (MLFLOW_TRACKING_SERVER_CERT_PATH)"),
        ("no route to host", "no route to host"),
        ("network is unreachable", "network unreachable"),
    ):
        if needle in lowered:
            return reason
    first = text.splitlines()[0] if text else type(err).__name__
    return first[:200]


def _probe_tcp(uri: str, timeout_s: float) -> None:
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+", 1)[0]
    host, port = parts.hostname or "localhost", parts.port or _DB_PORTS[scheme]
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as err:
        reason = short_reason(err)
        raise UserError(f"MLflow tracking database {redact(uri)} is unreachable: {reason}") from None


def _check_writable(uri: str, folder: str, db_file: str | None) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".hrm-probe-"):
            pass
    except OSError as err:
        reason = err.strerror or err
        raise UserError(f"MLflow store {uri}: folder {folder} is not writable ({reason})") from None
    if db_file and os.path.exists(db_file) and not os.access(db_file, os.W_OK):
        raise UserError(f"MLflow store {uri}: {db_file} is not writable")


# --- transient failures ---------------------------------------------------------------------------
def is_transient(err: BaseException) -> bool:
    """True for failures that a later retry can fix: the server or its network is away (refused,
    reset, timed out), or it answered 429 / 5xx. A 4xx is the request's own fault: never."""
    if isinstance(err, ConnectionError | TimeoutError):
        return True
    try:
        import requests

        if isinstance(err, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return True
    except ImportError:  # pragma: no cover - requests ships with mlflow
        pass
    text = str(err)
    failed = "failed with exception" in text or "failed with timeout exception" in text
    if text.startswith("API request to") and failed:
        return True
    status = getattr(err, "get_http_status_code", None)
    if callable(status):
        code = status()
        return code == 429 or code >= 500
    return False


