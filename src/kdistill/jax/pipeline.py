"""The JAX side of ``kdistill run``: build and check the Flax NNX models, train (or load) the
teacher, distill the student, train the scratch twin from the identical initial parameters, and
measure all three for the report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.jax.distiller import Distiller, eval_view
from kdistill.jax.models import build_model, count_parameters, save_model
from kdistill.jax.teacher import Teacher, check_outputs
from kdistill.jax.trainer import fit, jitted_forward, predict
from kdistill.recipe import Recipe
from kdistill.report.latency import BATCH_SIZES
from kdistill.report.results import ModelResult, Trained, results_for
from kdistill.store import StoreReader
from kdistill.store.for_run import check_store_given


def choose_device(name: str) -> jax.Device:
    gpus = [device for device in jax.devices() if device.platform == "gpu"]
    if name == "cuda" and not gpus:
        raise KdistillError("train.device: 'cuda' requested but jax sees no GPU (use 'auto' or 'cpu'; "
                            "GPU needs pip install 'jax[cuda12]')")
    return gpus[0] if gpus and name != "cpu" else jax.devices("cpu")[0]


def copied(model: nnx.Module) -> nnx.Module:
    """An independent copy with its own buffers (training donates the original's)."""
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.tree.map(lambda array: array.copy(), state))


def timed_forwards(models: dict[str, nnx.Module], x: jax.Array) -> dict[str, Callable[[int], None]]:
    """Per model, a jitted eval-mode forward on the first ``size`` test rows (repeated if too few)
    that blocks until the result is ready: what :func:`measure_latencies` times."""
    def forward_of(model: nnx.Module) -> Callable[[int], None]:
        graphdef, state = nnx.split(eval_view(model))
        batches = {size: x[jnp.arange(size) % len(x)] for size in BATCH_SIZES}

        def forward(size: int) -> None:
            jitted_forward(graphdef, state, batches[size]).block_until_ready()
        return forward
    return {role: forward_of(model) for role, model in models.items()}


class JaxPipeline:
    """Two phases: ``__init__`` builds everything and checks it (no files written, nothing compiled
    or trained); ``execute`` trains and measures, writing only inside the output directory."""

    def __init__(self, recipe: Recipe, data: TaskData):
        self.recipe, self.data = recipe, data
        self.device = choose_device(recipe.train.device)
        self.offline = recipe.teacher.store is not None
        with jax.default_device(self.device):
            self.probe = jnp.asarray(data.train.x[:4])
            self.teacher = None if self.offline else Teacher(recipe, data, self.device)
            self.student, self.student_spec = build_model(recipe.student, data, "student", recipe.train.seed)
            check_outputs(self.student, self.probe, data, "student")
            self.scratch = copied(self.student)
            self.distiller = Distiller(
                self.student, recipe.task, recipe.weights,
                {name: recipe.loss_settings(name) for name in recipe.losses},
                teacher=None if self.teacher is None else self.teacher.model, features=recipe.features,
                probe=self.probe, offline=self.offline,
                seed=recipe.train.seed,
            )

    def environment(self) -> dict:
        """Versions and device for the report."""
        return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
                "device": str(self.device),
                "data_parallel_devices": len(jax.devices()) if self.recipe.train.data_parallel else 1}

    def execute(self, out: Path, resume: bool, store: StoreReader | None = None) -> list[ModelResult]:
        """Train teacher (unless given), distilled student and scratch twin; measure them. An
        offline run reads ``store`` (``teacher.store``, opened and checked by the caller)."""
        check_store_given(self.offline, store)
        with jax.default_device(self.device):
            checkpoints = out / "checkpoints"
            checkpoints.mkdir(parents=True, exist_ok=True)
            measured: dict[str, tuple[nnx.Module, Path, object]] = {}
            if self.teacher is not None:
                measured["teacher"] = (self.teacher.model, *self.teacher.prepare(out, checkpoints, resume))
            history = fit("distilled", self.distiller, self.data, self.recipe.train, checkpoints / "distilled",
                          resume, None if store is None else store.fetch)
            measured["distilled"] = (self.student, save_model(self.student, self.student_spec, out / "student"), history)
            if self.recipe.compare.scratch:
                twin = Distiller(self.scratch, self.recipe.task, {"task": 1.0})
                history = fit("scratch", twin, self.data, self.recipe.train, checkpoints / "scratch", resume)
                measured["scratch"] = (self.scratch, save_model(self.scratch, self.student_spec, checkpoints / "scratch"),
                                       history)
            return self._measure(measured, store)

    def _measure(self, measured: dict[str, tuple[nnx.Module, Path, object]],
                 store: StoreReader | None) -> list[ModelResult]:
        """Test metrics, size, agreement with the teacher, and latency taken side by side
        (:func:`kdistill.report.results.results_for`)."""
        x_test = jnp.asarray(self.data.test.x)
        forwards = timed_forwards({role: model for role, (model, _, _) in measured.items()}, x_test)
        trained = {role: Trained(forwards[role], predict(model, x_test, self.recipe.train.eval_batch_size),
                                 count_parameters(model), weights_file, history)
                   for role, (model, weights_file, history) in measured.items()}
        return results_for(self.data, trained, store, self.recipe.compare.latency_repeats)
