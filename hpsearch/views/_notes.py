"""The live study note in optuna-dashboard: config, progress, baselines, and a figure.

:class:`StudyNote` is a study callback (:class:`~hpsearch.study.BaseCallback`):
when the study starts, whenever a trial ends, and when the study ends, it
writes, at most every :data:`NOTE_EVERY_S` seconds (and once more when the
study is finished), as the study's only writer:

* a Markdown note (``optuna_dashboard.save_note``): progress, best value, a
  table against the baselines named in ``compare_with``, the best params and
  the resolved study config;
* a plotly figure (``optuna_dashboard.save_plotly_graph_object``, a fixed id
  so it is replaced, not piled up): best value over time, each baseline's best
  drawn as a dashed line.

A note is a convenience: any failure is logged once and the study goes on.
Without optuna-dashboard installed nothing is written; without plotly, no figure.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpsearch.errors import one_line
from hpsearch.study._callbacks import BaseCallback
from hpsearch.study._scheduling import WARM_START_ATTR
from hpsearch.study._status import StudyStatus
from hpsearch.views._format import duration as _duration
from hpsearch.views._format import fmt as _fmt
from hpsearch.views._format import md_cell as _cell

if TYPE_CHECKING:
    import optuna

__all__ = ["FIGURE_ID", "NOTE_EVERY_S", "StudyNote", "render_note", "best_over_time_figure"]

log = logging.getLogger("hpsearch.notes")

NOTE_EVERY_S = 10.0
#: Baseline studies rarely change while this one runs: read them at most this often.
BASELINE_EVERY_S = 60.0
#: The last note of a study waits at most this long for a baseline read still in flight.
BASELINE_FINAL_WAIT_S = 5.0
FIGURE_ID = "hpsearch-best-over-time"


_warned: set[tuple[int, str]] = set()


def _warn_once(owner: Any, err: BaseException) -> None:
    key = (id(owner), type(err).__name__)
    if key in _warned:
        return
    _warned.add(key)
    from hpsearch.storage import mask_secrets

    text = mask_secrets(one_line(f"{type(err).__name__}: {err}"))[:300]
    log.warning("dashboard note not updated (the study goes on): %s", text)


@dataclass
class _Summary:
    done: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    best: float | None = None
    best_number: int | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    compute_s: float = 0.0
    curve: list[tuple[dt.datetime, float, float]] = field(default_factory=list)  # (time, value, best so far)
    #: Several objectives: the Pareto front's (trial number, values); ``best`` stays None.
    front: list[tuple[int, list[float]]] = field(default_factory=list)


def summarise(trials: list[optuna.trial.FrozenTrial], maximize: bool, directions: list[str] | None = None) -> _Summary:
    """Counts, compute, and the best (feasible) value over time; with several ``directions``, the Pareto front."""
    from optuna.trial import TrialState

    from hpsearch.study._objectives import feasible, pareto_front

    s = _Summary()
    if directions is not None and len(directions) > 1:
        own = [t for t in trials if WARM_START_ATTR not in t.user_attrs]
        s.front = [(t.number, list(t.values)) for t in pareto_front(own, directions)]
        trials, finished_ok = own, False
    else:
        finished_ok = True
    finished = []
    for t in trials:
        if WARM_START_ATTR in t.user_attrs:  # history copied from another study
            continue
        if t.state == TrialState.COMPLETE:
            s.complete += 1
            s.done += 1
            if finished_ok and t.value is not None and t.datetime_complete is not None and feasible(t):
                finished.append(t)
        elif t.state == TrialState.PRUNED:
            s.pruned += 1
            s.done += 1
        elif t.state == TrialState.FAIL:
            s.failed += 1
        elif t.state == TrialState.RUNNING:
            s.running += 1
        if t.duration is not None and t.state != TrialState.RUNNING:
            s.compute_s += t.duration.total_seconds()
    finished.sort(key=lambda t: (t.datetime_complete, t.number))
    for t in finished:
        v = float(t.value)  # type: ignore[arg-type]
        if s.best is None or (v > s.best if maximize else v < s.best):
            s.best, s.best_number, s.best_params = v, t.number, dict(t.params)
        s.curve.append((t.datetime_complete, v, s.best))  # type: ignore[arg-type]
    return s


def render_note(
    *,
    name: str,
    description: str,
    metric: str,
    direction: str,
    state: str,
    total: int | None,
    summary: _Summary,
    baselines: list[dict[str, Any]],
    config_yaml: str,
    method: str,
    updated: str,
) -> str:
    """The study note as Markdown (pure function: the tests check it without a database)."""
    s = summary
    maximize = direction == "maximize"
    progress = f"**{s.done}** trials finished" if total is None else f"**{s.done} / {total}** trials finished"
    lines = [f"## {name}: {state}"]
    if description:
        lines += ["", _cell(description)]
    best = f"**{metric} = {_fmt(s.best)}** (trial {s.best_number})" if s.best is not None else "no complete trial yet"
    if s.front:
        best = f"a Pareto front of **{len(s.front)}** trials"
    lines += [
        "",
        f"{progress} · {s.running} running · {s.pruned} pruned · "
        f"{s.failed} failed · best {best} · compute {_duration(s.compute_s)}",
        "",
        f"_{direction} {metric} · updated {updated}_",
    ]
    if baselines:
        lines += _baseline_table(name, metric, method, maximize, s, baselines)
    lines += _front_table(metric.split(", "), s.front)
    if s.best_params:
        lines += ["", "### Best params", "", "| param | value |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_cell(_fmt(v, 6))} |" for k, v in s.best_params.items()]
    lines += ["", "### Study config", "", "```yaml", config_yaml.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _front_table(names: list[str], front: list[tuple[int, list[float]]]) -> list[str]:
    """The Pareto front as a Markdown table (nothing for a single-objective study)."""
    if not front:
        return []
    out = ["", "### Pareto front", "", "| trial | " + " | ".join(map(_cell, names)) + " |"]
    out += ["|---|" + "---|" * len(names)]
    return out + [f"| {n} | " + " | ".join(_fmt(v) for v in values) + " |" for n, values in front]


def _baseline_table(
    name: str, metric: str, method: str, maximize: bool, s: _Summary, baselines: list[dict[str, Any]]
) -> list[str]:
    """The note's "Compared with baselines" section: this study's row, then one per baseline."""
    lines = [
        "",
        "### Compared with baselines",
        "",
        f"| study | method | best {metric} | ± | trials | compute | this study vs it |",
        "|---|---|---|---|---|---|---|",
        f"| **{_cell(name)}** (this study) | {_cell(method)} | **{_fmt(s.best)}** | | {s.complete} | "
        f"{_duration(s.compute_s)} | |",
    ]
    for b in baselines:
        if b.get("error"):
            lines.append(f"| {_cell(b['study'])} | | – | | | | {_cell(b['error'])} |")
            continue
        diff = ""
        if s.best is not None and b.get("best_value") is not None:
            d = s.best - b["best_value"]
            ahead = d > 0 if maximize else d < 0
            diff = f"{d:+.4g} ({'ahead' if ahead else 'behind' if d else 'level'})"
        lines.append(
            f"| {_cell(b['study'])} | {_cell(b.get('method') or b.get('trainer') or '')} | "
            f"{_fmt(b.get('best_value'))} | {_fmt(b.get('best_std'), 2)} | {b.get('complete', 0)} | "
            f"{_duration(b.get('compute_s'))} | {diff} |"
        )
    return lines


def best_over_time_figure(name: str, metric: str, summary: _Summary, baselines: list[dict[str, Any]]) -> Any:
    """Plotly figure: each trial's value, the best so far, and each baseline's best as a line."""
    import plotly.graph_objects as go

    fig = go.Figure()
    xs = [c[0] for c in summary.curve]
    fig.add_trace(
        go.Scatter(
            x=xs, y=[c[1] for c in summary.curve], mode="markers", name="trial", marker={"color": "#9aa5b1", "size": 7}
        )
    )
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=[c[2] for c in summary.curve],
            mode="lines",
            name=f"best {name}",
            line={"color": "#2563eb", "width": 3, "shape": "hv"},
        )
    )
    palette = ["#dc2626", "#16a34a", "#9333ea", "#ea580c"]
    for i, b in enumerate(b for b in baselines if b.get("best_value") is not None):
        fig.add_hline(
            y=b["best_value"],
            line_dash="dash",
            line_color=palette[i % len(palette)],
            annotation_text=f"{b['study']} {b['best_value']:.4g}",
            annotation_position="bottom right",
        )
    fig.update_layout(
        template="none",
        title={"text": f"Best {metric} over time"},
        height=360,
        xaxis_title="time",
        yaxis_title=metric,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


class StudyNote(BaseCallback):
    """Writes one study's note; the decisions of *when* live here. Never raises.

    Args:
        manager: The study's manager; only its public ``config`` and
            ``prepared.storage_url`` are read (the counts arrive as a
            :class:`~hpsearch.study.StudyStatus` with each call).
    """

    def __init__(self, manager: Any) -> None:
        import importlib.util

        self.manager = manager
        self.enabled = importlib.util.find_spec("optuna_dashboard") is not None
        self.has_plotly = importlib.util.find_spec("plotly") is not None
        self.last_write = -math.inf
        self.last_key: tuple[Any, ...] | None = None
        self.last_body: str | None = None
        self._baselines: list[dict[str, Any]] = []
        self._baselines_at = -math.inf
        self._reader: threading.Thread | None = None
        if not self.enabled:
            log.info("optuna-dashboard is not installed: no study note (pip install 'hpsearch[dashboard]')")

    def on_study_start(self, study: optuna.Study, status: StudyStatus) -> None:
        self._safely(study, status)

    def on_trial_end(self, study: optuna.Study, number: int, status: StudyStatus) -> None:
        self._safely(study, status)

    def on_study_end(self, study: optuna.Study, status: StudyStatus) -> None:
        self._safely(study, status)

    def _safely(self, study: optuna.Study, status: StudyStatus) -> None:
        try:
            self.maybe_write(study, status)
        except Exception as e:  # noqa: BLE001 - a note must never fail a study
            _warn_once(self, e)

    def maybe_write(self, study: optuna.Study, status: StudyStatus) -> None:
        """Write the note if it is the first, due (changed and :data:`NOTE_EVERY_S` passed) or the last."""
        if not self.enabled:
            return
        key = (status.done, status.pruned, status.failed, status.running, status.best)
        now = time.monotonic()
        first = self.last_key is None
        due = now - self.last_write >= NOTE_EVERY_S and key != self.last_key
        final = status.finished and key != self.last_key
        if not (first or due or final):
            return
        self.last_write, self.last_key = now, key
        self.write(study, status)

    def baselines(self, *, final: bool = False) -> list[dict[str, Any]]:
        """The baseline rows known now; a refresh runs in a thread, never in the manager's loop.

        Baselines may live in other storages: an unreachable or slow one must not
        stall ask/tell. A due refresh starts a daemon thread and the note goes on
        with the rows read last time (a placeholder row per baseline before the
        first read ends); the study's last note waits :data:`BASELINE_FINAL_WAIT_S`
        at most for a read in flight.
        """
        cfg = self.manager.config
        if not cfg.compare_with:
            return []
        reading = self._reader is not None and self._reader.is_alive()
        if not reading and time.monotonic() - self._baselines_at >= BASELINE_EVERY_S:
            self._baselines_at = time.monotonic()
            self._reader = threading.Thread(target=self._read_baselines, name="hpsearch-baselines", daemon=True)
            self._reader.start()
            reading = True
        if reading and final:
            self._reader.join(BASELINE_FINAL_WAIT_S)  # type: ignore[union-attr]
        if self._baselines:
            return list(self._baselines)
        return [
            {"study": p.stem, "error": "not read yet (its storage is slow or unreachable)"}
            for p in cfg.compare_with_paths()
        ]

    def _read_baselines(self) -> None:
        """Read every ``compare_with`` study's row (runs in the reader thread)."""
        from hpsearch.errors import HpsearchError
        from hpsearch.views._compare import compare_rows

        cfg = self.manager.config
        rows = []
        for rel, path in zip(cfg.compare_with, cfg.compare_with_paths(), strict=False):
            try:
                try:
                    rows += compare_rows([str(path)])
                except HpsearchError:
                    # Run with --storage: the baseline may live in this study's storage.
                    rows += compare_rows([str(path)], storage=self.manager.prepared.storage_url)
            except Exception as e:  # noqa: BLE001 - a baseline row shows the error; the note goes on
                rows.append({"study": _label(path), "error": _baseline_error(rel, e)})
        self._baselines = rows

    def write(self, study: optuna.Study, status: StudyStatus) -> None:
        """Write the note (unless only its time changed) and the figure, now."""
        import optuna_dashboard

        from hpsearch.study._prepare import resolved_config_yaml

        cfg = self.manager.config
        directions = [o.direction for o in cfg.objectives]
        summary = summarise(study.get_trials(deepcopy=False), directions[0] == "maximize", list(directions))
        baselines = self.baselines(final=status.finished)
        if status.interrupted:
            state = "interrupted"
        elif status.out_of_failures:
            state = "stopped (max_failures)"
        else:
            state = "finished" if status.finished else "running"
        stamp = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        updated = f"{stamp} on {socket.gethostname()}"
        body = render_note(
            name=cfg.name,
            description=cfg.description,
            metric=", ".join(o.metric for o in cfg.objectives),
            direction=", ".join(o.direction for o in cfg.objectives),
            state=state,
            total=None if status.imports else status.total,
            summary=summary,
            baselines=baselines,
            config_yaml=resolved_config_yaml(cfg),
            method=(cfg.trainer_settings.get("strategy") if status.imports else cfg.sampler.name) or "",
            updated=updated,
        )
        if body.replace(updated, "") != self.last_body:  # the time alone changed: keep the old note
            optuna_dashboard.save_note(study, body)
            self.last_body = body.replace(updated, "")
        if self.has_plotly and summary.curve:
            fig = best_over_time_figure(cfg.name, cfg.first_objective.metric, summary, baselines)
            optuna_dashboard.save_plotly_graph_object(study, fig, graph_object_id=FIGURE_ID)


def _label(path: Any) -> str:
    """The baseline's study name, or its file's stem when the file cannot be read."""
    from hpsearch.config import load_config
    from hpsearch.errors import HpsearchError

    try:
        return load_config(path).name
    except HpsearchError:
        return str(path.stem)


def _baseline_error(rel: str, err: Exception) -> str:
    from hpsearch.storage import mask_secrets

    if "run it first" in str(err):
        return f"not run yet: hpsearch run {rel}"
    return mask_secrets(one_line(str(err)))[:120]
