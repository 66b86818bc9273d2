"""The distillation objective as a ``keras.Model``: a student, a frozen teacher (or the teacher's
outputs per batch), losses by name and named weights. Total = Σ weights[name] · loss[name]; ``task``
is the supervised loss on true labels.

It overrides ``compute_loss`` (and ``compute_metrics``), the hooks ``train_step`` calls on every
Keras backend, so ``compile()``, ``fit()``, ``evaluate()``, callbacks and History work as for any
model. What it adds to ``keras.distillation.Distiller``:

- offline teachers: ``x = {"inputs": rows, "teacher_outputs": logits}``, e.g. read from a
  soft-target store, an ensemble store or a black-box prediction file; no teacher model in memory;
- a transfer set: ``inputs`` may hold more rows than ``y`` labels; the task loss (and ``dkd``,
  which needs the true class) reads the first ``len(y)`` rows, every other loss reads all rows;
- named weights and every catalogue loss, computed by the ``DistillationLoss`` subclasses of
  :mod:`kdistill.keras.losses`;
- feature distillation between named layers with learnable adapters (FitNets), owned and trained
  here; the student's features come from the same forward pass as its outputs (one dropout draw).

``evaluate`` (``training=False``) reports the student's task loss and compiled metrics at T = 1.
The same class trains the teacher and the scratch twin (weights ``{task: 1}``, no teacher), so
every model in a run is trained by one code path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from kdistill.errors import KdistillError
from kdistill.keras.losses import LOSS_CLASSES, LOSS_FUNCTIONS, task_loss
from kdistill.keras.parallel import gather_rows, replicas, shard_batch
from kdistill.objective import Objective
from kdistill.recipe import FeaturePair


def tap_model(model: keras.Model, names: Sequence[str], fields: Sequence[str]) -> keras.Model:
    """A model sharing ``model``'s layers that returns ``[outputs, *outputs of the named layers]``.

    Needs a Functional or Sequential model (one built with ``keras.Input``): a subclassed model's
    layers have no symbolic outputs, so they cannot be tapped by name."""
    if getattr(model, "inputs", None) is None:
        raise KdistillError(
            f"{fields[0]}: {type(model).__name__} {model.name!r} is a subclassed Keras model (no symbolic inputs), so "
            "its layers cannot be tapped by name; build it as a Functional or Sequential model with keras.Input, "
            "or distill its outputs only (no features)"
        )
    available = [layer.name for layer in model.layers]
    for name, field in zip(names, fields):
        if name not in available:
            raise KdistillError(f"{field}: no layer {name!r} in {model.name!r}; available: {', '.join(available)}")
    return keras.Model(model.inputs, [model.outputs[0], *(model.get_layer(name).output for name in names)],
                       name=f"{model.name}_taps")


def make_adapter(student_shape: tuple, teacher_shape: tuple, name: str, field: str) -> layers.Layer:
    """Dense for (B, C) features, 1×1 convolution for channels-last (B, H, W, C): student width →
    teacher width, built for ``student_shape`` (without the batch axis)."""
    if len(student_shape) != len(teacher_shape) or student_shape[:-1] != teacher_shape[:-1]:
        raise KdistillError(
            f"{field}: student feature {student_shape} and teacher feature {teacher_shape} differ beyond the channel "
            "axis; pick layers with the same spatial size"
        )
    if len(student_shape) == 1:
        adapter = layers.Dense(teacher_shape[-1], name=name)
    elif len(student_shape) == 3:
        adapter = layers.Conv2D(teacher_shape[-1], 1, name=name)
    else:
        raise KdistillError(f"{field}: hint adapters support (B, C) and (B, H, W, C) features, got (B, {student_shape})")
    adapter.build((None, *student_shape))
    return adapter


class Distiller(keras.Model):
    """student + frozen teacher (or per-batch teacher outputs) → Σ weights[name] · loss[name].

    Args:
      student: the model to train.
      weights: named weights, e.g. ``{"task": 0.1, "kd": 0.9}``; every name but ``task`` needs a loss.
      losses: catalogue loss name → its settings, e.g. ``{"kd": {"temperature": 4.0}}``.
      teacher: a trained model, frozen here; None with ``offline=True`` (outputs come per batch in
        ``x["teacher_outputs"]``) or for training without distillation.
      features: layer pairs (``.student``, ``.teacher``, ``.loss`` = hint | attention) by layer name.
      task: classification | binary | regression | ranking (the task loss).
      probe: a few input rows; when given, both models run on them once and their output shapes
        must agree.
    """

    def __init__(self, student: keras.Model, weights: Mapping[str, float],
                 losses: Mapping[str, Mapping[str, float]] | None = None, *, teacher: keras.Model | None = None,
                 features: Sequence[FeaturePair] = (), task: str = "classification", offline: bool = False,
                 probe: np.ndarray | None = None, heads: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        self.objective = Objective(task, weights, losses, teacher is not None or offline, heads)
        self.student, self.task, self.teacher, self.offline = student, task, teacher, offline
        self.pairs = [pair for pair in features if pair.loss in self.objective.weights]
        self.feature_terms = [LOSS_CLASSES[pair.loss](teacher_layer_name=pair.teacher, student_layer_name=pair.student)
                              for pair in self.pairs]
        if teacher is not None:
            teacher.trainable = False
        if self.pairs and teacher is None:
            raise KdistillError("features: feature losses need the teacher model; per-batch teacher outputs hold no features")
        self.student_taps = self.teacher_taps = None
        self.adapters: list[layers.Layer | None] = []
        if self.pairs:
            fields = [f"features.{index}" for index in range(len(self.pairs))]
            self.student_taps = tap_model(student, [pair.student for pair in self.pairs], [f + ".student" for f in fields])
            self.teacher_taps = tap_model(teacher, [pair.teacher for pair in self.pairs], [f + ".teacher" for f in fields])
            self.adapters = [self._adapter(index, pair) for index, pair in enumerate(self.pairs)]
        self._tapped: list = []  # the student's features from the latest call(), read by compute_loss
        self._training_step = True
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ["total", *self.objective.parts]}
        if probe is not None:
            self._check_outputs(probe)

    def _adapter(self, index: int, pair: FeaturePair) -> layers.Layer | None:
        field = f"features.{index}"
        s_shape = tuple(self.student_taps.outputs[index + 1].shape[1:])
        t_shape = tuple(self.teacher_taps.outputs[index + 1].shape[1:])
        if pair.loss == "hint":
            return make_adapter(s_shape, t_shape, f"adapter_{index}", field)
        if s_shape[:-1] != t_shape[:-1]:
            raise KdistillError(
                f"features.{index}: attention transfer needs equal spatial sizes, got student {s_shape} and teacher {t_shape}"
            )
        return None

    def _check_outputs(self, probe: np.ndarray) -> None:
        """Run both models once on a few rows: output shapes must agree."""
        student_shape = tuple(self.student(probe, training=False).shape[1:])
        if self.teacher is not None:
            teacher_shape = tuple(self.teacher(probe, training=False).shape[1:])
            if student_shape != teacher_shape:
                raise KdistillError(
                    f"teacher outputs {teacher_shape} per sample but student outputs {student_shape}: class counts must match"
                )

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        """The student's outputs for ``inputs`` (rows, or ``{"inputs": rows, ...}``)."""
        rows = inputs["inputs"] if isinstance(inputs, dict) else inputs
        if self.student_taps is None:
            return self.student(rows, training=training)
        outputs, *features = self.student_taps(rows, training=training)
        self._tapped.clear()
        self._tapped.extend(features)
        return outputs

    def _teacher(self, inputs: Any) -> tuple[Any, list]:
        """The teacher's outputs (and tapped features) for the batch: given, or computed frozen."""
        if self.offline:
            if not isinstance(inputs, dict) or "teacher_outputs" not in inputs:
                raise KdistillError("Distiller(offline=True): x must be {'inputs': rows, 'teacher_outputs': the "
                                    "teacher's outputs for those rows}")
            return inputs["teacher_outputs"], []
        rows = inputs["inputs"] if isinstance(inputs, dict) else inputs
        if self.teacher_taps is None:
            return ops.stop_gradient(self.teacher(rows, training=False)), []
        outputs, *features = self.teacher_taps(rows, training=False)
        return ops.stop_gradient(outputs), [ops.stop_gradient(feature) for feature in features]

    def train_step(self, *args: Any) -> Any:
        """Keras's step (``(data)``, or ``(state, data)`` on JAX) with the batch's rows sharded over
        the devices under ``train.data_parallel`` (:func:`kdistill.keras.parallel.shard_batch`)."""
        *state, data = args
        return super().train_step(*state, shard_batch(data))

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                     training: bool = True) -> Any:
        """Σ weights[name] · loss[name] for a training batch; the task loss at T = 1 for evaluation.

        In a MirroredStrategy step (``train.data_parallel`` on TensorFlow) each replica holds its
        rows of the batch: the outputs (and features) of every replica are gathered into the
        whole batch, every replica computes its loss, and returns it divided by the replica count
        (the optimizer sums the replicas' gradients)."""
        if y_pred is None:
            y_pred = self(x, training=training)
        self._training_step = training  # read by compute_metrics while the same step is traced
        teacher_out, teacher_features, student_features = None, [], list(self._tapped)
        if training and self.objective.distills:
            teacher_out, teacher_features = self._teacher(x)
            teacher_out = ops.cast(teacher_out, y_pred.dtype)
        count = replicas()
        if count > 1:
            local = [y_pred, *student_features, *teacher_features, *([] if teacher_out is None else [teacher_out])]
            y_pred, *gathered = gather_rows(ops.shape(y)[0], local)
            student_features = gathered[:len(student_features)]
            teacher_features = gathered[len(student_features):len(student_features) + len(teacher_features)]
            teacher_out = None if teacher_out is None else gathered[-1]
            y = gather_rows(ops.shape(y)[0], [y])[0]  # labeled rows only
        labeled = ops.shape(y)[0]
        if not training:  # inference outputs: one head, or the mean of two
            return task_loss(y_pred[:labeled], y, self.task) / count
        parts = {}
        task_outputs, y_pred = self.objective.split(y_pred)
        if "task" in self.objective.weights:
            parts["task"] = Objective.task_part(lambda out: task_loss(out[:labeled], y, self.task), task_outputs)
        for term in self.objective.terms:
            if term.reads_features:
                values = [feature_term.compute_loss(t_feature, s_feature if adapter is None else adapter(s_feature))
                          for feature_term, pair, adapter, s_feature, t_feature
                          in zip(self.feature_terms, self.pairs, self.adapters, student_features, teacher_features)
                          if pair.loss == term.name]
                parts[term.name] = ops.sum(ops.stack(values)) / len(values)
            else:
                arguments = Objective.logit_arguments(term, y_pred, teacher_out, y, labeled,
                                                      lambda z: ops.softmax(z, axis=-1))
                parts[term.name] = LOSS_FUNCTIONS[term.name](*arguments, **term.settings)
        total = self.objective.total(parts)
        for name, value in parts.items():
            self.trackers[name].update_state(value)
        self.trackers["total"].update_state(total)
        return total / count if count > 1 else total

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> dict:
        """Compiled metrics on the labeled rows only (transfer rows have no labels); the loss parts
        in training only (evaluation reports the student's task loss and metrics at T = 1)."""
        if self._training_step:  # a training forward: the class head of a two-head student
            y_pred = self.objective.split(y_pred)[0][0]
        results = super().compute_metrics(x, y, y_pred[:ops.shape(y)[0]], sample_weight)
        if self._training_step:
            return results
        return {name: value for name, value in results.items() if name not in self.trackers}
