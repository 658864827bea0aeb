"""TensorBoard: one run folder per trial, with scalars and the HParams plugin's summaries.

Under ``<dir>/<study name>/trial-00003/`` each trial gets one event file with:
its params as the HParams plugin's session start (so TensorBoard's HParams tab
lists it), each intermediate value as a step of the objective's metric, its
final metrics as ``final/<name>`` at the last step, and its state as the
session end (COMPLETE: success, PRUNED: unknown, FAIL: failure). The HParams tab
infers the columns from these sessions. Written with tensorboard's own event
writer and protos (no TensorFlow, no torch). A trial's folder is replaced
whole, so a folder half written by a killed run is written anew.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.errors import ConfigError
from hpsearch.tracking._base import BaseTracker, StudyInfo, final_metrics

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from hpsearch.config import StudyConfig
    from hpsearch.config._tracking import TensorBoardConfig

__all__ = ["TensorBoardTracker", "trial_folder"]


def trial_folder(number: int) -> str:
    """The run folder of trial ``number`` (zero-padded, so TensorBoard lists trials in order)."""
    return f"trial-{number:05d}"


def _hparam(value: Any) -> bool | int | float | str:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


class TensorBoardTracker(BaseTracker):
    """Writes TensorBoard event files (``tracking.tensorboard``).

    Args:
        cfg: The study file's ``tracking.tensorboard`` block.
        study: The study (its folder and name).
    """

    kind = "tensorboard"

    def __init__(self, cfg: TensorBoardConfig, study: StudyConfig) -> None:
        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError(
                f"{study.file}: tracking.tensorboard: needs the tensorboard package; install it with "
                "pip install -e '.[tensorboard]' (or remove tracking.tensorboard)"
            )
        root = Path(cfg.dir or "tensorboard")
        root = root if root.is_absolute() else (study.study_dir / root).resolve()
        self.root = root / study.name

    @property
    def key(self) -> str:
        return f"tensorboard:{hashlib.sha1(str(self.root).encode()).hexdigest()[:10]}"

    def where(self) -> str:
        return str(self.root)

    def open(self, info: StudyInfo) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def log_trial(self, trial: FrozenTrial, info: StudyInfo) -> str:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        name = trial_folder(trial.number)
        folder = self.root / name
        shutil.rmtree(folder, ignore_errors=True)
        writer = EventFileWriter(str(folder))
        try:
            for event in _events(trial, info, name):
                writer.add_event(event)
        finally:
            writer.close()
        return name


def _events(trial: FrozenTrial, info: StudyInfo, name: str) -> list[Any]:
    """The trial's events: session start, the curve, the final metrics, session end."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import summary_v2

    start = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    end = trial.datetime_complete.timestamp() if trial.datetime_complete else start
    hparams = {k: _hparam(v) for k, v in trial.params.items()}
    out = [event_pb2.Event(wall_time=start, step=0, summary=summary_v2.hparams_pb(hparams, name, start))]
    series = info.objective_names[0]
    for step, value in sorted(trial.intermediate_values.items()):
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=series, simple_value=value)])
        out.append(event_pb2.Event(wall_time=start, step=int(step), summary=summary))
    last = int(max(trial.intermediate_values, default=0))
    finals = [
        summary_pb2.Summary.Value(tag=f"final/{k}", simple_value=v) for k, v in final_metrics(trial, info).items()
    ]
    if finals:
        out.append(event_pb2.Event(wall_time=end, step=last, summary=summary_pb2.Summary(value=finals)))
    out.append(event_pb2.Event(wall_time=end, step=last, summary=_session_end(trial.state.name, end)))
    return out


def _session_end(state: str, end: float) -> Any:
    """The HParams plugin's session end summary (``summary_v2`` has no TensorFlow-free writer for it)."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    # The plugin has no "stopped early" status: a pruned trial is neither a success nor a failure.
    status = {"COMPLETE": api_pb2.STATUS_SUCCESS, "PRUNED": api_pb2.STATUS_UNKNOWN}.get(state, api_pb2.STATUS_FAILURE)
    data = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=end)
    )
    value = summary_pb2.Summary.Value(
        tag=metadata.SESSION_END_INFO_TAG, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR
    )
    return summary_pb2.Summary(value=[value])
