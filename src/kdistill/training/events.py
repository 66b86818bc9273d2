"""The training events of one fit, per epoch, for the tools people watch.

Each epoch (step = epoch + 1) gives one scalar per loss term as ``loss/<term>`` (``loss/total``,
``loss/task``, ``loss/kd``, ...), one per validation metric as ``val/<name>``, and
``time/epoch_seconds``. They go to the sinks asked for:

- ``"tensorboard"``: an event file in ``<run dir>/logs/tensorboard/<role>/``, flushed after every
  epoch, so a killed run keeps what it logged. Needs the ``tensorboard`` package
  (``pip install 'kdistill[log]'``); it is written with that package's record writer and event
  protos only, so no framework is imported (its own file writer would import TensorFlow when
  installed). View with ``tensorboard --logdir <run dir>/logs/tensorboard``.
- ``"mlflow"``: one MLflow run per role (the run's name is the role) in the experiment
  ``kdistill``, tracked in the SQLite store ``<run dir>/logs/mlruns/mlflow.db`` (MLflow now refuses
  a plain file store without an opt-out), artifacts under ``<run dir>/logs/mlruns/artifacts``. Needs
  ``pip install mlflow``. View with ``mlflow ui --backend-store-uri sqlite:///<run dir>/logs/mlruns/mlflow.db``.

With no sink nothing is written. The sink packages are imported only when an :class:`Events` with
that sink is made.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kdistill.errors import KdistillError

SINKS = ("tensorboard", "mlflow")
EXPERIMENT = "kdistill"

_file_ids = itertools.count()  # tells apart event files opened in one process in the same second


def _scalars(losses: Mapping[str, float], metrics: Mapping[str, float], seconds: float) -> dict[str, float]:
    values = {f"loss/{term}": float(value) for term, value in losses.items()}
    values.update({f"val/{name}": float(value) for name, value in metrics.items()})
    values["time/epoch_seconds"] = float(seconds)
    return values


class _TensorBoard:
    """One event file, written record by record and flushed after every epoch."""

    def __init__(self, directory: Path) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        directory.mkdir(parents=True, exist_ok=True)
        # the name TensorBoard looks for; the same pattern as its own writer's
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_file_ids)}"
        self.path = directory / name
        self._writer = RecordWriter(open(self.path, "wb"))
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: Any) -> None:
        self._writer.write(event.SerializeToString())

    def epoch(self, step: int, values: Mapping[str, float]) -> None:
        wall_time = time.time()
        for tag, value in values.items():
            summary = self._summary_pb2.Summary(value=[self._summary_pb2.Summary.Value(tag=tag, simple_value=value)])
            self._write(self._event_pb2.Event(wall_time=wall_time, step=step, summary=summary))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class _MLflow:
    """One MLflow run, through a client of its own (no global MLflow state)."""

    def __init__(self, directory: Path, role: str) -> None:
        import mlflow
        from mlflow.entities import Metric
        from mlflow.exceptions import MlflowException

        self._metric = Metric
        directory.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = f"sqlite:///{(directory / 'mlflow.db').resolve().as_posix()}"
        self._client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        experiment = self._client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            try:
                experiment_id = self._client.create_experiment(
                    EXPERIMENT, artifact_location=(directory / "artifacts").resolve().as_uri())
            except MlflowException:  # made meanwhile by another process
                experiment_id = self._client.get_experiment_by_name(EXPERIMENT).experiment_id
        self.run_id = self._client.create_run(experiment_id, run_name=role).info.run_id

    def epoch(self, step: int, values: Mapping[str, float]) -> None:
        timestamp = int(time.time() * 1000)
        self._client.log_batch(self.run_id, metrics=[self._metric(key, value, timestamp, step)
                                                     for key, value in values.items()])

    def close(self) -> None:
        self._client.set_terminated(self.run_id, "FINISHED")


class Events:
    """The per-epoch scalars of one fit (``role``: "teacher", "distilled" or "scratch") written to
    ``sinks`` (a subset of ``("tensorboard", "mlflow")``) under the run directory ``directory``.

    ``directory`` None (a fit without a run) allows no sink. Raises :class:`KdistillError` for an
    unknown sink, a sink without a directory, or a sink whose package is not installed.
    """

    def __init__(self, directory: Path | None, role: str, sinks: Sequence[str]) -> None:
        sinks = list(dict.fromkeys(sinks))
        unknown = [sink for sink in sinks if sink not in SINKS]
        if unknown:
            raise KdistillError(f"train.log: unknown sink(s) {unknown}; choose from {list(SINKS)}")
        if sinks and directory is None:
            raise KdistillError(f"train.log: {sinks} needs a run directory to write to; "
                                "this fit has none (leave train.log empty, or train through a run)")
        if not role or role in (".", "..") or "/" in role or "\\" in role:
            raise ValueError(f"role {role!r} is not a plain name")
        self.role = role
        self._sinks: list[_TensorBoard | _MLflow] = []
        self._closed = False
        _check_installed(sinks)
        try:
            if "tensorboard" in sinks:
                self._sinks.append(_TensorBoard(Path(directory) / "logs" / "tensorboard" / role))
            if "mlflow" in sinks:
                self._sinks.append(_MLflow(Path(directory) / "logs" / "mlruns", role))
        except BaseException:
            self.close()
            raise

    def epoch(self, epoch: int, losses: Mapping[str, float], metrics: Mapping[str, float], seconds: float) -> None:
        """Write epoch ``epoch`` (0-based) at step ``epoch + 1``: its mean training loss per term,
        its validation metric(s) and its training time in seconds."""
        if self._closed:
            raise RuntimeError("Events.epoch after close")
        if not self._sinks:
            return
        values = _scalars(losses, metrics, seconds)
        for sink in self._sinks:
            sink.epoch(epoch + 1, values)

    def close(self) -> None:
        """Close the event file and end the MLflow run; closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        for sink in self._sinks:
            sink.close()


def _check_installed(sinks: Sequence[str]) -> None:
    """Before anything is written: every sink's package imports."""
    if "tensorboard" in sinks:
        try:
            import tensorboard.compat.proto.event_pb2  # noqa: F401
        except ImportError:
            raise KdistillError("train.log: 'tensorboard' needs the tensorboard package; "
                                "pip install 'kdistill[log]'") from None
    if "mlflow" in sinks:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise KdistillError("train.log: 'mlflow' needs the mlflow package; pip install mlflow") from None
