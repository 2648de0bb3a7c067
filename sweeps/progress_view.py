"""How a running sweep looks on the driver's terminal (``rich``), and its summary at the end.

- ``LiveTable`` (a terminal): event lines (a trial started, ended, is retried) scroll above a
  table that refreshes in place: per trial its label, a bar with step / total, the latest
  objective, the outcome and its time; the title holds the counts, elapsed time and ETA.
- ``PlainLines`` (a log: CI, ``nohup``, a pipe): the same event lines, each with the sweep's
  elapsed time, and a progress line per running trial at most every ``PLAIN_EVERY_S``.
- ``summary``: outcomes per arm, the best trial, the report and the MLflow page.
"""

from __future__ import annotations

import time

from rich import box
from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from hrm_core import names
from sweeps.progress import OUTCOMES, RETRYING, RUNNING, SweepProgress, TrialRow, fmt_duration, fmt_value

TABLE_EVERY_S = 0.5  # a terminal's table: two refreshes a second at most
PLAIN_EVERY_S = 30.0  # a log's progress lines: one pass over the running trials per 30 s at most
LOG_WIDTH = 160  # a log's summary table: no terminal to fit
SUMMARY_ROWS = 15  # arms (or a search's trials) in the summary table; the best first
STYLES = {names.OUTCOME_COMPLETED: "green", names.OUTCOME_DIVERGED: "magenta", names.OUTCOME_ERROR: "red",
          names.OUTCOME_EARLY_STOPPED: "yellow", RUNNING: "cyan", RETRYING: "red"}


def make_view(out=None):
    """A ``LiveTable`` on a terminal, else ``PlainLines`` (``out``: a file instead of stdout)."""
    console = Console(file=out, highlight=False)
    if console.is_terminal:
        return LiveTable(console)
    return PlainLines(Console(file=out, highlight=False, width=LOG_WIDTH))


def _line(console: Console, text: str) -> None:
    console.print(Text(text), soft_wrap=True)


def _title(p: SweepProgress) -> str:
    c = p.count()
    return (f"{p.name}: {c['done']}/{c['planned']} done, {c['running']} running · "
            f"elapsed {fmt_duration(p.elapsed())} · ETA {fmt_duration(p.eta())}")


class PlainLines:
    """One line per event, and per running trial whose step moved, at most every ``every_s``."""

    def __init__(self, console: Console, every_s: float = PLAIN_EVERY_S, clock=time.monotonic):
        self.console, self.every_s, self.clock = console, every_s, clock
        self.last = clock()  # the first progress lines come one period in
        self.shown: dict[str, int] = {}

    def event(self, text: str, elapsed: float) -> None:
        _line(self.console, f"[{fmt_duration(elapsed)}] {text}")

    def refresh(self, p: SweepProgress, force: bool = False) -> None:
        """``force`` is for a table: event lines are printed as they come anyway."""
        if self.clock() - self.last < self.every_s:
            return
        self.last = self.clock()
        c = p.count()
        for trial_id, row in p.rows.items():
            if row.status == RUNNING and self.shown.get(trial_id, 0) != row.step:
                self.shown[trial_id] = row.step
                value = f"{p.objective}={fmt_value(row.objective)}"
                self.event(f"{row.label} step {row.step}/{row.total} {value} "
                           f"({c['done']}/{c['planned']} done, ETA {fmt_duration(p.eta())})", p.elapsed())

    def summary(self, p, summary: dict, report: str | None, url: str) -> None:
        show_summary(self.console, p, summary, report, url, box.ASCII)

    def close(self) -> None:
        pass


class LiveTable:
    """A table that refreshes in place (at most every ``every_s``) under the event lines."""

    def __init__(self, console: Console, every_s: float = TABLE_EVERY_S, clock=time.monotonic):
        self.console, self.every_s, self.clock = console, every_s, clock
        self.live: Live | None = None
        self.last = float("-inf")
        self.progress: SweepProgress | None = None

    def event(self, text: str, elapsed: float) -> None:
        _line(self.console, f"[{fmt_duration(elapsed)}] {text}")  # above the table while it is live

    def refresh(self, p: SweepProgress, force: bool = False) -> None:
        self.progress = p
        if self.clock() - self.last < self.every_s and not force:
            return
        self.last = self.clock()
        if self.live is None:
            self.live = Live(console=self.console, auto_refresh=False, transient=False)
            self.live.start()
        self.live.update(self.table(p), refresh=True)

    def table(self, p: SweepProgress) -> Table:
        height = max(5, self.console.size.height - 6)
        rows, hidden = _visible(p, height)
        now = self.clock()
        cells = [_cells(row, now) for row in rows]
        header, bar_width = _fit(self.console.size.width, p.objective, cells)
        table = Table(title=_title(p), title_justify="left", box=box.SIMPLE_HEAD, caption=hidden or None,
                      caption_justify="left")
        table.add_column("trial", overflow="ellipsis", max_width=LABEL_MAX, no_wrap=True)
        if bar_width:
            table.add_column("progress", no_wrap=True)
        table.add_column("step", justify="right", no_wrap=True)
        table.add_column(header, justify="right", no_wrap=True)
        table.add_column("outcome", no_wrap=True)
        table.add_column("time", justify="right", no_wrap=True)
        for row, (label, step, value, outcome, took) in zip(rows, cells, strict=True):
            bar = [ProgressBar(total=max(row.total, 1), completed=min(row.step, row.total or 0),
                               width=bar_width, pulse=row.status == RUNNING and not row.total)]
            status = Text(outcome, style=STYLES.get(outcome, "dim"))
            table.add_row(label, *(bar if bar_width else []), step, value, status, took)
        return table

    def summary(self, p, summary: dict, report: str | None, url: str) -> None:
        show_summary(self.console, p, summary, report, url, box.SIMPLE_HEAD)

    def close(self) -> None:
        if self.live is not None:
            if self.progress is not None:
                self.live.update(self.table(self.progress), refresh=True)  # the last state stays
            self.live.stop()
            self.live = None


LABEL_MAX = 40  # the trial column's widest
BAR_MAX, BAR_MIN = 24, 6  # the progress bar's width: what the terminal leaves, or none below BAR_MIN


def _cells(row: TrialRow, now: float) -> tuple[str, str, str, str, str]:
    """A row's text cells: label, step / total, objective, outcome, time."""
    took = (row.ended or now) - row.started if row.started is not None else None
    return (row.label, f"{row.step}/{row.total or '?'}", fmt_value(row.objective), row.status,
            fmt_duration(took))


def _fit(width: int, objective: str, cells: list[tuple[str, ...]]) -> tuple[str, int]:
    """The objective's header and the bar's width, so that the trial labels, the steps and the
    values stay whole on a narrow terminal: the bar shrinks first (and goes), then the header
    drops its split prefix (``eval/exact_accuracy`` -> ``exact_accuracy``)."""
    header = objective

    def need(head: str) -> int:
        heads = ("trial", "step", head, "outcome", "time")
        widths = [max(len(x) for x in (h, *(c[i] for c in cells))) for i, h in enumerate(heads)]
        widths[0] = min(widths[0], LABEL_MAX)
        return sum(widths) + 3 * 6 + 1  # SIMPLE_HEAD: a space each side of a cell, one between cells

    if width - need(header) < BAR_MIN and "/" in header:
        header = header.rsplit("/", 1)[-1]
    left = width - need(header) - 2  # a margin; with the bar's column (its padding and divider) counted
    return header, min(BAR_MAX, left) if left >= BAR_MIN else 0


def _visible(p: SweepProgress, limit: int) -> tuple[list[TrialRow], str]:
    """The rows that fit: all, or the running ones and the latest ended; and what is left out."""
    rows = list(p.rows.values())
    if len(rows) <= limit:
        return rows, ""
    keep = {id(r) for r in rows if r.status in (RUNNING, RETRYING)}
    ended = sorted((r for r in rows if r.status in OUTCOMES), key=lambda r: r.ended or 0, reverse=True)
    for r in ended[: max(0, limit - len(keep))]:
        keep.add(id(r))
    shown = [r for r in rows if id(r) in keep]
    left = [r for r in rows if id(r) not in keep]
    done = sum(r.done for r in left)
    return shown, f"… {len(left)} more: {done} ended, {len(left) - done} pending"


def show_summary(console: Console, p, summary: dict, report: str | None, url: str, style) -> None:
    """Outcomes per arm (the best first), the best trial, the report and the MLflow page."""
    metric, mode = summary.get("objective", ""), summary.get("mode", "max")
    per_arm = summary.get("per_arm") or {}
    outcomes = [o for o in OUTCOMES if any(o in a["outcomes"] for a in per_arm.values())]
    others = sorted({o for a in per_arm.values() for o in a["outcomes"]} - set(outcomes))
    table = Table(title=f"{summary.get('sweep', '')}: {summary.get('trials', 0)} trials, "
                        f"elapsed {fmt_duration(p.elapsed() if p else None)}",
                  title_justify="left", box=style)
    table.add_column("params" if summary.get("kind") == "search" else "arm", overflow="fold")
    for o in [*outcomes, *others]:
        table.add_column(o, justify="right")
    table.add_column(f"best {metric}", justify="right")

    def rank(item):
        best = item[1].get("best")
        return (best is None, -best if best is not None and mode == "max" else (best or 0))

    ranked = sorted(per_arm.items(), key=rank)
    for arm, a in ranked[:SUMMARY_ROWS]:
        counts = (str(a["outcomes"].get(o, 0)) for o in [*outcomes, *others])
        table.add_row(arm, *counts, fmt_value(a.get("best")))
    if len(ranked) > SUMMARY_ROWS:
        table.caption, table.caption_justify = f"… {len(ranked) - SUMMARY_ROWS} more", "left"
    console.print(table)
    best = summary.get("best_run")
    if best:
        value = f"{metric}={fmt_value(best['value'])}"
        _line(console, f"best trial: {best['name']} {value} (run {best['run_id']})")
    _line(console, f"report: {report}" if report else "report: none (--no-report, or see above)")
    _line(console, f"MLflow: {url}")
    if p is not None and p.rows:
        some = next(iter(p.rows.values())).log
        if some:
            _line(console, f"trial logs: {some.rsplit('/', 2)[0]}/<trial>/{some.rsplit('/', 1)[-1]}")
