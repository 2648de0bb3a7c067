"""Live progress of a sweep: what a person sees on a terminal, and what a log gets.

The end-to-end test runs ``python -m sweeps run`` under a pseudo-terminal (real local Ray,
real MLflow SQLite store, the smoke model): every trial appears in the refreshing table, its
step count rises between checkpoints (the trials' side channel), the summary appears, and
each trial's log is written and attached to its run. The plain-line mode of a log is checked
on the progress model with a clock the test turns.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from hrm_core import names
from tests.conftest import PROJECT, child_runs, write_sweep

ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-B]|[=>])")


def run_in_terminal(cmd: list[str], env: dict, timeout: float = 240) -> tuple[int, str]:
    """Run ``cmd`` with a pseudo-terminal (150 x 40) as its stdin, stdout and stderr; return
    its exit code and everything it wrote, ANSI control sequences removed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=PROJECT, env=env,
                            close_fds=True)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    data = os.read(master, 1 << 16)
                except OSError:  # the terminal closed: the process ended
                    break
                if not data:
                    break
                out += data
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
    return code, ANSI.sub("", out.decode("utf-8", "replace")).replace("\r", "\n")


@pytest.mark.slow
def test_a_sweep_under_a_terminal_shows_every_trial_advance_and_a_summary(tmp_path):
    path = write_sweep(tmp_path, """\
name: e2e_progress
kind: ablation
base: [data=sudoku4, max_steps=24, eval_every_steps=24]
control: plain
arms:
  plain: [arch=hrm_v1]
  gated: [arch=hrm_v1_gated]
seeds: [0]
max_concurrent: 2
scale: smoke
""")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # each step takes >= 0.15 s: a trial lasts a few seconds, its first report is its last (step 24)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HRM_TEST_FAULTS": json.dumps({"step_delay_s": 0.15})}
    env.pop("RAY_ADDRESS", None)
    code, text = run_in_terminal([sys.executable, "-m", "sweeps", "run", path, "--no-report"], env)
    assert code == 0, text[-3000:]

    labels = ("plain/seed0", "gated/seed0")
    for label in labels:
        assert re.search(rf"{re.escape(label)} started \(trial [12]/2\); log: ", text), text[-3000:]
        assert re.search(rf"{re.escape(label)} completed at step 24/24", text), text[-3000:]
        # the table's rows, frame after frame: "<label>  <bar>  <step>/<total>  <objective>  <outcome>"
        steps = [int(s) for s in re.findall(rf"^\s*{re.escape(label)}\s+\S+\s+(\d+)/24\s", text, re.M)]
        assert steps and steps == sorted(steps), (label, steps)
        assert steps[-1] == 24, (label, steps)
        # between checkpoints: the only report is at step 24, so these came from the side channel
        assert any(0 < s < 24 for s in steps), (label, steps)
    assert re.search(r"e2e_progress: [0-2]/2 done, [0-2] running · elapsed \d:\d\d:\d\d · ETA ", text)

    # the summary: outcomes per arm, the best trial, the report, the parent run's MLflow page
    summary = text[text.index("e2e_progress: 2 trials"):]
    for arm in ("plain", "gated"):
        assert re.search(rf"^\s*{arm}\s+1\s", summary, re.M), summary
    assert re.search(r"best trial: (plain|gated)/seed0 eval/exact_accuracy=", summary), summary
    assert "report: none" in summary
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(names.experiment_name("e2e_progress")).experiment_id
    parent = client.search_runs([experiment], f"tags.`{names.TAG_RUN_KIND}` = '{names.RUN_KIND_SWEEP}'")[0]
    url = f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{parent.info.run_id}?workflowType=machine_learning"
    assert f"MLflow: {url}" in summary

    # each trial's own log: in the invocation's Tune folder, as printed, and on its run
    logs = dict(re.findall(r"(\w+/seed0) started \(trial \d/2\); log: (\S+trial\.log)", text))
    for label in labels:
        log = open(logs[label]).read()
        assert "run starts of 24" in log and "run ends at step 24/24: completed" in log, log
    runs = child_runs(client, parent.info.run_id)
    assert sorted(r.info.run_name for r in runs) == sorted(labels)
    for r in runs:
        assert "trial.log" in {a.path for a in client.list_artifacts(r.info.run_id)}


def test_a_log_gets_one_plain_line_per_event_at_a_bounded_rate():
    """Not a terminal: each start and end is one line; progress lines come at most once per
    period, one per running trial whose step moved."""
    import io

    from rich.console import Console

    from sweeps.progress import SweepProgress
    from sweeps.progress_view import PlainLines, make_view

    now = [0.0]
    clock = lambda: now[0]  # noqa: E731 - the test turns it
    out = io.StringIO()
    assert isinstance(make_view(out), PlainLines)  # a StringIO is no terminal
    view = PlainLines(Console(file=out, width=60), every_s=30, clock=clock)
    p = SweepProgress("s", "eval/exact_accuracy", planned=2, default_total=100, clock=clock)
    for tid, arm in (("t1", "a"), ("t2", "b")):
        p.add(tid, f"{arm}/seed0", f"/r/{tid}/trial.log")
        p.start(tid)
        view.event(f"{arm}/seed0 started", p.elapsed())
    for second in range(1, 91):  # 90 s, the driver's loop asking ten times a second
        now[0] = float(second)
        p.advance("t1", second)
        for _ in range(10):
            view.refresh(p)
    p.end("t1", names.OUTCOME_COMPLETED)
    view.event("a/seed0 completed", p.elapsed())
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["[0:00:00] a/seed0 started", "[0:00:00] b/seed0 started"]
    progress = lines[2:-1]
    # t2 never moved: no line for it; t1 at most once per 30 s (a line is never wrapped)
    assert [line.split()[1:4] for line in progress] == [["a/seed0", "step", f"{s}/100"] for s in (30, 60, 90)]
    assert [line.split()[0] for line in progress] == ["[0:00:30]", "[0:01:00]", "[0:01:30]"]
    # 30 steps in 30 s; 70 + 100 to go
    assert progress[0].endswith("eval/exact_accuracy=- (0/2 done, ETA 0:02:50)"), progress[0]
    assert lines[-1] == "[0:01:30] a/seed0 completed"


@pytest.mark.parametrize("width", [80, 150])
def test_a_narrow_terminal_keeps_labels_steps_and_values_whole(width):
    """At 80 columns the bar gives way first: every trial's arm and seed, its step / total and
    its objective are printed whole; at 150 the bar is there too."""
    import io

    from rich.console import Console

    from sweeps.progress import SweepProgress
    from sweeps.progress_view import LiveTable

    out = io.StringIO()
    console = Console(file=out, width=width, height=40, force_terminal=True, color_system=None)
    p = SweepProgress("feudal_weight", "eval/exact_accuracy", planned=3, default_total=1200,
                      clock=lambda: 5.0)
    for i, arm in enumerate(("head_off", "weight_0.03", "weight_0.3")):
        p.add(f"t{i}", f"{arm}/seed{i}")
        p.start(f"t{i}")
        p.advance(f"t{i}", 1000 + i)
    p.score("t2", 0.4375)
    console.print(LiveTable(console, clock=lambda: 5.0).table(p))
    text = out.getvalue()
    for i, arm in enumerate(("head_off", "weight_0.03", "weight_0.3")):
        assert f"{arm}/seed{i}" in text and f"{1000 + i}/1200" in text
    assert "0.4375" in text and "…" not in text
    assert ("━" in text) == (width == 150)
    assert all(len(line) <= width for line in text.splitlines())
