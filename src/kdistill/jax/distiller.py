"""The distillation objective on Flax NNX: a student, an optional frozen teacher, losses by name
and named weights. Total = Σ weights[name] · loss[name]; ``task`` is the supervised loss on true labels.

The same objective trains the teacher (weights ``{task: 1}``, no teacher) and the scratch twin,
so every model in a run goes through one code path (:func:`kdistill.training.loop.fit`).

Feature distillation: NNX has no forward hooks and ``nnx.sow`` needs the model to call it, so
features are read from models built of :class:`kdistill.jax.zoo.Layers` (every zoo MLP and CNN,
and any user factory returning one), by layer name. Other modules take the logit losses only;
asking them for features is a KdistillError naming the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from kdistill.errors import KdistillError
from kdistill.jax.losses import LOSS_FUNCTIONS, task_loss
from kdistill.jax.zoo import Layers, linear
from kdistill.objective import Objective
from kdistill.recipe import FeaturePair


def eval_view(model: nnx.Module) -> nnx.Module:
    """The same arrays with dropout off and batch statistics frozen (evaluation, teachers)."""
    return nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)


def train_view(model: nnx.Module) -> nnx.Module:
    return nnx.view(model, deterministic=False, use_running_average=False, raise_if_not_found=False)


class Adapter(nnx.Module):
    """FitNets adapter: a linear map of the channel axis (axis 1), i.e. a 1×1 convolution on
    (B, C, H, W) features and a linear layer on (B, C) ones."""

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...], field: str, seed: int):
        if len(student_shape) != len(teacher_shape) or student_shape[1:] != teacher_shape[1:]:
            raise KdistillError(
                f"{field}: student feature {student_shape} and teacher feature {teacher_shape} differ beyond the "
                "channel axis; pick layers with the same spatial size"
            )
        if len(student_shape) not in (1, 3):
            raise KdistillError(f"{field}: hint adapters support (B, C) and (B, C, H, W) features, got (B, {student_shape})")
        self.map = linear(student_shape[0], teacher_shape[0], nnx.Rngs(seed))

    def __call__(self, feature: jax.Array) -> jax.Array:
        return jnp.moveaxis(self.map(jnp.moveaxis(feature, 1, -1)), -1, 1)


class Trainee(nnx.Module):
    """What the optimizer updates: the student and the hint adapters."""

    def __init__(self, student: nnx.Module, adapters: dict[str, Adapter]):
        self.student = student
        self.adapters = nnx.Dict(adapters)


def tap_names(model: nnx.Module | None, paths: Sequence[str], field: str) -> tuple[str, ...]:
    if not paths:
        return ()
    if not isinstance(model, Layers):
        raise KdistillError(
            f"{field}: feature distillation on the JAX backend reads layers of kdistill.jax.zoo.Layers models "
            f"(the zoo's mlp and cnn); {type(model).__name__} is not one (use logit losses, or build it from Layers)"
        )
    for path in paths:
        if path not in model.names:
            raise KdistillError(f"{field}: no layer {path!r} in {type(model).__name__}; available: {', '.join(model.names)}")
    return tuple(dict.fromkeys(paths))


def forward_with_taps(model: nnx.Module, x: jax.Array, taps: tuple[str, ...]) -> tuple[jax.Array, dict[str, jax.Array]]:
    return model.run(x, taps) if taps else (model(x), {})


def probe_shapes(model: nnx.Module | Callable, probe: jax.Array,
                 taps: tuple[str, ...] = ()) -> tuple[jax.ShapeDtypeStruct, dict]:
    """Shapes of the eval-mode outputs (and tapped features) of a module, or of a pure function
    ``x -> logits``, on ``probe``, by abstract evaluation: nothing is compiled or run."""
    if not isinstance(model, nnx.Module):
        return jax.eval_shape(model, probe), {}
    return nnx.eval_shape(lambda model: forward_with_taps(model, probe, taps), eval_view(model))


class Distiller:
    """student + frozen teacher → (total loss, {name: loss}) for one batch, traced inside the
    trainer's jitted step.

    ``x`` holds the labeled samples first and then any unlabeled transfer samples; ``y`` labels the
    first ``len(y)`` rows. Offline (``offline=True``, no teacher model), the caller passes the
    teacher's outputs for the batch. The task loss (and ``dkd``, which needs the true class) reads
    the labeled rows; every other distillation loss reads all rows. The teacher sees exactly the
    batch the student sees, in eval mode and under ``jax.lax.stop_gradient``. A teacher is an NNX
    module (its state is an argument of the jitted step) or a pure function ``x -> logits`` (whatever
    arrays it closes over become constants of the compiled step). ``probe`` (a few
    input rows) gives both models' output and feature shapes by abstract evaluation before any
    step is built: a class-count mismatch or a feature shape problem is a KdistillError, not a
    trace error from inside the jitted step.
    """

    def __init__(self, student: nnx.Module, task: str, weights: Mapping[str, float],
                 losses: Mapping[str, Mapping[str, float]] | None = None,
                 teacher: nnx.Module | Callable[[jax.Array], jax.Array] | None = None,
                 features: Sequence[FeaturePair] = (), probe: jax.Array | None = None, offline: bool = False,
                 seed: int = 0, heads: int = 1):
        self.objective = Objective(task, weights, losses, teacher is not None or offline, heads)
        self.task = task
        self.teacher = teacher  # a module is used through eval_view: it can train (as its own trainee) first
        self.features = [pair for pair in features if pair.loss in self.objective.weights]
        self.student_taps = tap_names(student, [pair.student for pair in self.features], "features.student")
        self.teacher_taps = tap_names(teacher, [pair.teacher for pair in self.features], "features.teacher")
        adapters = self._check_outputs(student, probe, seed) if probe is not None else {}
        self.trainee = Trainee(student, adapters)

    @property
    def student(self) -> nnx.Module:
        return self.trainee.student

    def _check_outputs(self, student: nnx.Module, probe: jax.Array, seed: int) -> dict[str, Adapter]:
        """Both models' shapes on a few samples: outputs must agree, adapters get their widths."""
        student_out, student_features = probe_shapes(student, probe, self.student_taps)
        if self.teacher is not None:
            teacher_out, teacher_features = probe_shapes(self.teacher, probe, self.teacher_taps)
            if student_out.shape[1:] != teacher_out.shape[1:]:
                raise KdistillError(
                    f"teacher outputs {tuple(teacher_out.shape[1:])} per sample but student outputs "
                    f"{tuple(student_out.shape[1:])}: class counts must match"
                )
        adapters = {}
        for index, pair in enumerate(self.features):
            s_shape = tuple(student_features[pair.student].shape[1:])
            t_shape = tuple(teacher_features[pair.teacher].shape[1:])
            if pair.loss == "hint":
                adapters[str(index)] = Adapter(s_shape, t_shape, f"features.{index}", seed + index)
            elif s_shape[1:] != t_shape[1:]:
                raise KdistillError(f"features.{index}: attention transfer needs equal spatial sizes, got student "
                                    f"{s_shape} and teacher {t_shape}")
        return adapters

    def __call__(self, trainee: Trainee, teacher: nnx.Module | None, x: jax.Array, y: jax.Array,
                 teacher_out: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(total, parts) for one batch. ``trainee`` and ``teacher`` are this distiller's
        :class:`Trainee` and frozen teacher, or their functional copies inside a jitted step (state
        passed as arguments, not baked into the compiled program)."""
        student_out, student_features = forward_with_taps(trainee.student, x, self.student_taps)
        labeled = y.shape[0]
        parts: dict[str, jax.Array] = {}
        task_outputs, student_out = self.objective.split(student_out)
        if "task" in self.objective.weights and labeled:
            parts["task"] = Objective.task_part(
                lambda out: task_loss(out if labeled == x.shape[0] else out[:labeled], y, self.task), task_outputs)
        teacher_features = {}
        if self.objective.terms and teacher_out is None:
            teacher_out, teacher_features = jax.lax.stop_gradient(forward_with_taps(teacher, x, self.teacher_taps))
        for term in self.objective.terms:
            function = LOSS_FUNCTIONS[term.name]
            if term.reads_features:
                pairs = [(index, pair) for index, pair in enumerate(self.features) if pair.loss == term.name]
                parts[term.name] = sum(function(self._adapted(trainee, index, student_features[pair.student]),
                                                teacher_features[pair.teacher]) for index, pair in pairs) / len(pairs)
            else:
                arguments = Objective.logit_arguments(term, student_out, teacher_out, y, labeled,
                                                      lambda z: jax.nn.softmax(z, axis=-1))
                parts[term.name] = function(*arguments, **term.settings)
        return self.objective.total(parts), parts

    @staticmethod
    def _adapted(trainee: Trainee, index: int, feature: jax.Array) -> jax.Array:
        return trainee.adapters[str(index)](feature) if str(index) in trainee.adapters else feature
