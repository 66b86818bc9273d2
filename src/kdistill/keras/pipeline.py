"""The Keras side of ``kdistill run``: build and check the models, train (or load) the teacher,
distill the student, train the scratch twin (``keras.models.clone_model`` with the distilled
student's initial weights), and measure all three for the report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.keras.distiller import Distiller
from kdistill.keras.models import build_model, save_model
from kdistill.keras.parallel import build_scope, check_backend
from kdistill.keras.teacher import Teacher, check_outputs
from kdistill.keras.trainer import fit, predict
from kdistill.recipe import Recipe
from kdistill.report.results import ModelResult, Trained, results_for
from kdistill.store import StoreReader
from kdistill.store.for_run import check_store_given


def _devices() -> list[str]:
    if keras.backend.backend() == "torch":  # keras.distribution has no torch implementation
        import torch

        return ["cuda:0"] if torch.cuda.is_available() else ["cpu:0"]
    return keras.distribution.list_devices()


def choose_device(name: str) -> str:
    """The first device Keras sees; ``cuda`` must find a GPU."""
    devices = _devices()
    if name == "cuda" and not any(device.lower().startswith(("gpu", "cuda")) for device in devices):
        raise KdistillError(f"train.device: 'cuda' requested but Keras ({keras.backend.backend()}) sees no GPU "
                            "(use 'auto' or 'cpu')")
    return devices[0]


def timed_forwards(models: dict[str, keras.Model], x: np.ndarray) -> dict[str, Callable[[int], None]]:
    """Per model, an inference forward on the first ``size`` test rows (repeated if too few) that
    returns numpy, so it has finished: what :func:`measure_latencies` times."""
    def forward_of(model: keras.Model) -> Callable[[int], None]:
        def forward(size: int) -> None:
            model.predict_on_batch(x[np.arange(size) % len(x)])
        return forward
    return {role: forward_of(model) for role, model in models.items()}


class KerasPipeline:
    """Two phases: ``__init__`` builds everything and checks it (no files written, nothing
    trained); ``execute`` trains and measures, writing only inside the output directory."""

    def __init__(self, recipe: Recipe, data: TaskData):
        self.recipe, self.data = recipe, data
        self.device = choose_device(recipe.train.device)
        check_backend(recipe.train.data_parallel)
        self.offline = recipe.teacher.store is not None
        probe = data.train.x[:4]
        self.teacher = None if self.offline else Teacher(recipe, data, probe)
        keras.utils.set_random_seed(recipe.train.seed)
        with build_scope(recipe.train.data_parallel):  # TensorFlow: every variable mirrored
            self.student = build_model(recipe.student, data, "student")
            check_outputs(self.student, probe, data, "student")  # builds a subclassed model's weights
            self.initial_student = [np.array(weight) for weight in self.student.get_weights()]
            self.scratch = self._twin(probe)
            self.distiller = Distiller(
                self.student, recipe.weights, {name: recipe.loss_settings(name) for name in recipe.losses},
                teacher=None if self.teacher is None else self.teacher.model, features=recipe.features,
                task=recipe.task, offline=self.offline, probe=probe, name="distilled",
            )

    def _twin(self, probe: np.ndarray) -> keras.Model:
        """The scratch twin: ``clone_model`` of the student (a subclassed model, which Keras cannot
        clone, is built again by its factory) holding the student's initial weights."""
        if getattr(self.student, "inputs", None) is not None:
            twin = keras.models.clone_model(self.student)
        else:
            twin = build_model(self.recipe.student, self.data, "student")
            twin(probe)
        twin.set_weights(self.initial_student)
        return twin

    def environment(self) -> dict:
        """Versions and device for the report."""
        return {"keras": keras.__version__, "keras_backend": keras.backend.backend(), "device": self.device,
                "data_parallel_devices": len(keras.distribution.list_devices()) if self.recipe.train.data_parallel else 1}

    def execute(self, out: Path, resume: bool, store: StoreReader | None = None) -> list[ModelResult]:
        """Train teacher (unless given), distilled student and scratch twin; measure them. An
        offline run reads ``store`` (``teacher.store``, opened and checked by the caller)."""
        check_store_given(self.offline, store)
        checkpoints = out / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        measured: dict[str, tuple[keras.Model, Path, object]] = {}
        if self.teacher is not None:
            measured["teacher"] = (self.teacher.model, *self.teacher.prepare(out, checkpoints, resume))
        history = fit("distilled", self.distiller, self.data, self.recipe.train, checkpoints / "distilled.npz",
                      resume, None if store is None else store.fetch)
        measured["distilled"] = (self.student, save_model(self.student, out / "student.keras"), history)
        if self.recipe.compare.scratch:
            with build_scope(self.recipe.train.data_parallel):
                twin = Distiller(self.scratch, {"task": 1.0}, task=self.recipe.task, name="scratch")
            history = fit("scratch", twin, self.data, self.recipe.train, checkpoints / "scratch.npz", resume)
            measured["scratch"] = (self.scratch, save_model(self.scratch, checkpoints / "scratch.keras"), history)
        return self._measure(measured, store)

    def _measure(self, measured: dict[str, tuple[keras.Model, Path, object]],
                 store: StoreReader | None) -> list[ModelResult]:
        """Test metrics, size, agreement with the teacher, and latency taken side by side
        (:func:`kdistill.report.results.results_for`)."""
        x_test = self.data.test.x
        forwards = timed_forwards({role: model for role, (model, _, _) in measured.items()}, x_test)
        trained = {role: Trained(forwards[role], predict(model, x_test, self.recipe.train.eval_batch_size),
                                 model.count_params(), weights_file, history)
                   for role, (model, weights_file, history) in measured.items()}
        return results_for(self.data, trained, store, self.recipe.compare.latency_repeats)
