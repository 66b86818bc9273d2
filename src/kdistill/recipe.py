"""The recipe: one validated description of a distillation run, from YAML or Python.

This is the only place defaults live. Validation happens before any work starts, and every
error names the field, the bad value and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdistill import backends
from kdistill.errors import KdistillError
from kdistill.export.formats import FORMATS
from kdistill.losses import CATALOGUE, FEATURE_LOSSES, LOSSES_BY_TASK
from kdistill.losses.reference import METRICS

BUILTIN_DIR = Path(__file__).parent / "recipes"
DEFAULT_RECIPE = "digits_mlp"
TEACHER_SEED_OFFSET = 10_000  # the teacher's seed is train.seed + this
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class StrictModel(BaseModel):
    """Unknown fields are refused, and so is an infinite or NaN float anywhere (dict values included)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class TransferConfig(StrictModel):
    """Unlabeled samples for the distillation terms only (Hinton 2015's transfer set).

    Either hold out ``fraction`` of the training set and drop its labels, or read ``path``
    (``.npy``/``.npz``/CSV of inputs shaped like the training inputs, or, for an image or text
    folder, a folder of unlabeled files decoded like the training files).
    """

    fraction: float | None = Field(None, gt=0, lt=1)
    path: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "TransferConfig":
        if (self.fraction is None) == (self.path is None):
            raise ValueError("give exactly one of transfer.fraction or transfer.path")
        return self


class RankingConfig(StrictModel):
    """Implicit-feedback lists from a known latent-factor model (``dataset: synthetic_ranking``)."""

    n_users: int = Field(600, ge=10)
    n_items: int = Field(400, ge=20)
    dim: int = Field(16, ge=1)
    list_length: int = Field(50, ge=11)
    positives: int = Field(10, ge=1)


class AugmentConfig(StrictModel):
    """Seeded image augmentation, applied to the training and transfer batches of every model
    (teacher, distilled, scratch): a random translation by up to ``shift`` pixels (zero fill) and,
    with ``flip``, a random horizontal flip. Online, the teacher sees exactly the student's view;
    offline, a store cached with ``--views K`` replays one of its K cached views (Beyer et al. 2022)."""

    shift: int = Field(0, ge=0, le=16)
    flip: bool = False
    seed: int = Field(0, ge=0, lt=2**63)
    teacher_sees: Literal["view", "clean"] = "view"
    """``view``: the teacher's outputs belong to the student's augmented view (online, or a store's
    cached views). ``clean``: the store gives the teacher's outputs on the unaugmented sample (a
    store cached without views, or view 0 of one with views) while the student trains on its
    noised view (Noisy Student's rule, Xie et al. 2020); needs ``teacher.store`` (or
    ``self_training``, whose rounds cache one and set it themselves)."""

    def views(self) -> dict[str, Any]:
        """What draws the views (a store's manifest records it with the views it cached)."""
        return self.model_dump(exclude={"teacher_sees"})

    @model_validator(mode="after")
    def _does_something(self) -> AugmentConfig:
        if self.shift == 0 and not self.flip:
            raise ValueError("data.augment: set shift > 0 and/or flip: true (or drop data.augment)")
        return self


class ImageConfig(StrictModel):
    """How an image folder's files are decoded (Pillow): resized to ``size`` [H, W] (bilinear) and
    converted to ``mode`` (``L``: 1 channel, ``RGB``: 3); unset, every file must already share one
    size, and the mode is the files' own (L for grey files, RGB for colour ones)."""

    size: tuple[int, int] | None = None
    mode: Literal["L", "RGB"] | None = None

    @field_validator("size")
    @classmethod
    def _positive(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"size [H, W] must be positive, got {list(value)}")
        return value


class TextConfig(StrictModel):
    """How raw text becomes model inputs when a batch is read (:mod:`kdistill.data.text_encoding`):
    scikit-learn's ``HashingVectorizer`` (``features`` hashed columns, word ``ngrams`` [min, max],
    l2-normalised counts) for zoo models that read feature vectors; or, with ``tokenizer`` (a
    pretrained model's short name such as ``minilm-l6``, its folder, or a ``tokenizer.json``),
    token ids and attention mask, ``max_length`` tokens each, for text models and transformers."""

    features: int = Field(4096, ge=2, le=2**22)
    ngrams: tuple[int, int] = (1, 2)
    lowercase: bool = True
    tokenizer: str | None = None
    max_length: int = Field(128, ge=2, le=8192)

    @field_validator("ngrams")
    @classmethod
    def _ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= value[0] <= value[1]:
            raise ValueError(f"ngrams [min, max] needs 1 <= min <= max, got {list(value)}")
        return value


class HFConfig(StrictModel):
    """A Hugging Face ``datasets`` dataset read offline (``dataset: hf``): ``data.path`` is a
    ``save_to_disk`` directory, or, with ``builder`` (``imagefolder``, ``csv``, ``parquet``,
    ``json``, ``text``), ``data_files`` are read by that packaged builder. ``split`` names the split
    read (all of it is then split into train/val/test); ``input`` and ``label`` name its columns
    (default: ``image``, else ``text``; ``label``) and ``id`` the column of sample keys (default:
    the row number in that split)."""

    builder: Literal["imagefolder", "csv", "parquet", "json", "text"] | None = None
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    split: str = "train"
    input: str | None = None
    label: str = "label"
    id: str | None = None

    @model_validator(mode="after")
    def _files_with_builder(self) -> "HFConfig":
        if (self.builder is None) != (self.data_files is None):
            raise ValueError("data.hf: builder and data_files come together (or give data.path, a save_to_disk folder)")
        return self


class DataConfig(StrictModel):
    dataset: Literal["digits", "breast_cancer", "fashion_mnist", "arrays", "synthetic_ranking", "movielens",
                     "image_folder", "text_folder", "text_table", "bbc_news", "hf"] = "digits"
    path: str | None = None
    labels: str | None = None
    """image_folder: a CSV naming each image of the flat folder ``path`` (a ``file`` column) and its
    ``label`` (class names or numbers); without it, ``path`` holds one sub-folder per class."""
    image: ImageConfig = ImageConfig()
    text: TextConfig = TextConfig()
    hf: HFConfig | None = None
    cache_in_memory: bool = False
    """Decode every sample of a source on disk once and keep the splits in memory (small data);
    otherwise batches are read from disk as they are needed."""
    on_bad_sample: Literal["error", "skip"] = "error"
    """An unreadable or corrupt file of a source on disk: stop with an error naming it, or leave it
    out (the count is in the report's data section)."""
    val_fraction: float = Field(0.1, gt=0, le=0.5)
    test_fraction: float = Field(0.2, gt=0, le=0.5)
    limit: int | None = Field(None, ge=10)
    split_seed: int = Field(0, ge=0, lt=2**63)
    transfer: TransferConfig | None = None
    ranking: RankingConfig = RankingConfig()
    augment: AugmentConfig | None = None
    classes: list[int] | None = Field(None, min_length=2)
    """A specialist's classes (Hinton 2015 §5): class ``classes[i]`` becomes label i and every
    other class the dustbin label ``len(classes)``; same samples and ids, |classes| + 1 outputs."""

    @model_validator(mode="after")
    def _path_where_needed(self) -> "DataConfig":
        if self.dataset in ("arrays", "movielens", "image_folder", "text_folder", "text_table") and not self.path:
            raise ValueError(f"data.path is required for dataset {self.dataset!r}")
        if self.dataset == "hf" and not self.path and (self.hf is None or self.hf.builder is None):
            raise ValueError("data.path (a save_to_disk folder) or data.hf.builder with data.hf.data_files is "
                             "required for dataset 'hf'")
        if self.hf is not None and self.dataset != "hf":
            raise ValueError(f"data.hf: settings of a Hugging Face dataset are for dataset 'hf', not {self.dataset!r}")
        if self.labels is not None and self.dataset != "image_folder":
            raise ValueError(f"data.labels: a labels CSV is for dataset 'image_folder', not {self.dataset!r}")
        return self


class ModelConfig(StrictModel):
    """A model: a zoo name (``mlp``, ``cnn``, ...) or an import path ``pkg.module:factory``,
    called with ``kwargs``; or ``path`` to a saved model file, which is loaded instead. A saved
    file's sidecar may name an import path only if ``model`` names the same one; a pickled torch
    ``.pt`` (which runs code when loaded) is loaded only with ``trust_pickle: true``."""

    model: str | None = None
    kwargs: dict[str, Any] = {}
    path: str | None = None
    trust_pickle: bool = False

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        if value is not None and ":" in value and not IMPORT_PATH.match(value):
            raise ValueError(f"{value!r} is not an import path of the form 'package.module:factory'")
        return value

    @model_validator(mode="after")
    def _has_source(self) -> "ModelConfig":
        if self.model is None and self.path is None:
            raise ValueError("give model (zoo name or 'pkg.module:factory') or path (a saved model)")
        return self

    @property
    def heads(self) -> int:
        """2 for a zoo ``vit`` with ``distillation_token: true`` (a class and a distillation head,
        DeiT: :meth:`kdistill.objective.Objective.split`), else 1."""
        return 2 if self.model == "vit" and self.kwargs.get("distillation_token") else 1


class TeacherTraining(StrictModel):
    """How to train the teacher when it is not loaded from ``path``; unset fields follow ``train``."""

    epochs: int | None = Field(None, ge=0)
    """0: the teacher is used as built (a pretrained encoder whose embeddings teach), not trained."""
    lr: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, ge=1)
    optimizer: Literal["adamw", "adam", "sgd"] | None = None
    weight_decay: float | None = Field(None, ge=0)


Backend = Literal[backends.NAMES]  # the registry's names (kdistill.backends)


class TeacherConfig(ModelConfig):
    """The teacher: a model (trained here unless ``path`` gives trained weights), or ``store``, a
    soft-target store written by ``kdistill cache`` — then no teacher runs during training.

    ``backend`` names the teacher's framework when it is not the student's (the recipe's
    ``backend``): the teacher is trained (or loaded) in its own framework and its outputs cached
    to ``OUT/teacher-store``, from which the student distills. With ``online: true`` it runs per
    batch instead, its inputs and outputs handed over by DLPack (PyTorch students), so it sees
    every augmented view the student sees."""

    backend: Backend | None = None
    online: bool = False
    train: TeacherTraining = TeacherTraining()
    store: str | None = None

    @model_validator(mode="after")
    def _has_source(self) -> "TeacherConfig":
        if self.store is not None and (self.model is not None or self.path is not None):
            raise ValueError("give either store (cached outputs) or model/path, not both")
        if self.store is None and self.model is None and self.path is None:
            raise ValueError("give model (zoo name or 'pkg.module:factory'), path (a saved model) or store")
        return self


class LossParams(StrictModel):
    """Per-loss settings; ``temperature`` overrides ``train.temperature`` for this loss only."""

    temperature: float | None = Field(None, gt=0)
    alpha: float | None = Field(None, ge=0)
    beta: float | None = Field(None, ge=0)
    gamma: float | None = Field(None, ge=0)
    metric: Literal[METRICS] | None = None  # type: ignore[valid-type]
    """What ``embedding`` compares: "mse" (squared distance) or "cosine" (1 − cos)."""


class FeaturePair(StrictModel):
    """Student layer ↔ teacher layer, by module path (``layers.1``, ``layer3.1.conv2``)."""

    student: str
    teacher: str
    loss: Literal[FEATURE_LOSSES] = "hint"  # type: ignore[valid-type]  # every feature loss of the catalogue


class TrainConfig(StrictModel):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    seed: int = Field(0, ge=0, lt=2**32 - TEACHER_SEED_OFFSET)  # Keras seeds numpy's global RNG (< 2**32) with seed + offset
    temperature: float = 4.0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_batch_size: int = Field(1024, ge=1)
    progress: bool = True
    data_parallel: bool = False
    """JAX: shard every batch over all ``jax.devices()`` (a Mesh; parameters replicated). Keras:
    ``keras.distribution.DataParallel`` on the Keras JAX backend, ``tf.distribute.MirroredStrategy``
    on the TensorFlow backend (the torch Keras backend is refused). PyTorch uses
    ``kdistill run --nproc N`` (torchrun) instead."""
    workers: int | None = Field(None, ge=0)
    """Threads that read (decode, augment) a streamed or augmented split's batches ahead of the
    step (:mod:`kdistill.data.stream`); default: one per CPU core this process may use (at most
    8) with Grain installed (``kdistill[stream]``), else 0; 0 reads in the training thread,
    without prefetch."""
    prefetch: int = Field(2, ge=1)
    """Chunks of steps read ahead of the one training (memory holds at most this many + 1, and
    with the teacher run ahead up to ``AHEAD_CHUNKS`` + 1 more whose teacher outputs are due)."""
    teacher_ahead: Literal["auto", "on", "off"] = "auto"
    """Online KD: run the frozen teacher on the next chunks of planned steps in a worker thread
    while the student trains on the current one, so that where the device has room to overlap
    them an epoch costs the slower of the two rather than their sum, with the same student bit
    for bit (:mod:`kdistill.training.ahead`).
    ``auto``: on a GPU, when a teacher model runs (not a store) and no feature loss is on (on a
    CPU the teacher in the step already has every core; ahead measured no faster on 2 cores);
    ``on``: also on a CPU, and refuses feature losses by name; ``off``: the teacher runs inside
    the student's step."""
    compile: bool = False
    """PyTorch: run the training step (the distiller's forward, hence its backward) through
    ``torch.compile``, which fuses the loss's small ops into a few kernels, after a one-off
    compile (seconds, and a C++ compiler on a CPU). On a 64-unit MLP on 2 CPU cores it measured
    no faster than the eager step (BENCHMARKS.md, "Offline KD from a soft-target store"). Keras
    (``tf.function``) and JAX (``jax.jit``) steps are always compiled: there it changes nothing."""
    checkpoint_steps: int | None = Field(None, ge=1)
    """Also checkpoint within an epoch, at the first chunk boundary after every this many steps,
    so ``--resume`` continues mid-epoch (default: after every epoch only)."""
    log: list[Literal["tensorboard", "mlflow"]] = []
    """Training events besides the progress bar: per-epoch loss terms, validation metric and epoch
    time to TensorBoard event files (``OUT/logs/tensorboard/ROLE``) and/or MLflow (``OUT/logs/mlruns``)."""

    @field_validator("teacher_ahead", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value  # YAML reads on/off as booleans

    @field_validator("log", mode="before")
    @classmethod
    def _log_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else [] if value is None else value

    @field_validator("temperature")
    @classmethod
    def _positive_temperature(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"must be > 0, got {value}")
        return value


class CompareConfig(StrictModel):
    scratch: bool = True
    latency_repeats: int = Field(30, ge=3)
    embedding: str | None = None
    """A layer path (as feature losses name layers: ``pool``): every model is also scored by a linear
    probe and k-nearest-neighbour accuracy on that layer's output (:mod:`kdistill.report.embeddings`),
    and the verdict reads the probe. For students that learn embeddings, not a head."""
    neighbours: int = Field(5, ge=1)
    """k of the nearest-neighbour accuracy."""


class OutputConfig(StrictModel):
    dir: str | None = None
    export: list[Literal["onnx", "tflite", "savedmodel", "hf"]] = []
    """Formats the finished run's models are exported to (``kdistill export``), verified in their runtime."""
    quantize: list[Literal["int8", "float16"]] = []
    """Post-training quantizations written beside each float32 export that takes them."""


class SelfTrainingConfig(StrictModel):
    """Noisy Student self-training (Xie et al. 2020): the recipe's teacher, trained on the labeled
    samples, labels the transfer set (``data.transfer``, the unlabeled samples) once per round
    through a soft-target store; the student learns the labeled and pseudo-labeled samples under
    the recipe's noise (``data.augment`` with ``teacher_sees: clean``, the student's dropout) and
    becomes the next round's teacher. ``pseudo_labels``: ``soft`` (the recipe's ``kd`` loss on the
    teacher's probabilities) or ``hard`` (the ``hard`` loss on its argmax). ``threshold``: a
    transfer sample whose teacher confidence (top softmax probability) is below it is left out of
    that round. The student may be larger than the teacher."""

    rounds: int = Field(3, ge=1, le=20)
    pseudo_labels: Literal["soft", "hard"] = "soft"
    threshold: float = Field(0.0, ge=0, lt=1)
    augment_students: bool = True
    """false: the rounds' students train on the clean samples (``data.augment`` then serves the
    round-0 teacher only): with the students' dropout off too, the noise-free ablation."""

    @property
    def loss(self) -> str:
        """The catalogue loss that reads the pseudo labels."""
        return "kd" if self.pseudo_labels == "soft" else "hard"


class Recipe(StrictModel):
    """A whole distillation run. Total loss = Σ weights[name] · loss[name]; ``task`` is the
    supervised loss on true labels (CE / BCE / MSE / ListNet by task)."""

    name: str = "kdistill"
    backend: Backend = "torch"
    task: Literal["classification", "binary", "regression", "ranking"] = "classification"
    data: DataConfig = DataConfig()
    teacher: TeacherConfig
    student: ModelConfig
    losses: dict[str, LossParams] = {"kd": LossParams()}
    weights: dict[str, float] = {"task": 0.1, "kd": 0.9}
    features: list[FeaturePair] = []
    train: TrainConfig = TrainConfig()
    compare: CompareConfig = CompareConfig()
    output: OutputConfig = OutputConfig()
    self_training: SelfTrainingConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _student_from_teacher(cls, value: Any) -> Any:
        """``student: {from_teacher: {layers: [0, 2, 4]}}``: the teacher's own model (its factory,
        its pretrained weights) keeping those layers (DistilBERT's initialisation, Sanh et al. 2019);
        the student's own ``kwargs`` override the teacher's."""
        student = value.get("student") if isinstance(value, dict) else None
        if not isinstance(student, dict) or "from_teacher" not in student:
            return value
        student = dict(student)
        source = student.pop("from_teacher")
        teacher = value.get("teacher") if isinstance(value.get("teacher"), dict) else {}
        if not isinstance(source, dict) or set(source) != {"layers"}:
            raise ValueError(f"student.from_teacher: {source!r}; give {{layers: [indices of the teacher's layers]}}")
        if not teacher.get("model"):
            raise ValueError("student.from_teacher: needs teacher.model (the factory whose layers the student takes)")
        if "model" in student or "path" in student:
            raise ValueError("student.from_teacher: the student's model is the teacher's; drop student.model / student.path")
        student["model"] = teacher["model"]
        student["kwargs"] = {**(teacher.get("kwargs") or {}), "layers": source["layers"], **(student.get("kwargs") or {})}
        return {**value, "student": student}

    @field_validator("losses", mode="before")
    @classmethod
    def _losses_from_list(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return {name: {} for name in value}
        if isinstance(value, dict):
            return {name: ({} if params is None else params) for name, params in value.items()}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        for name in self.losses:
            if name not in CATALOGUE:
                raise ValueError(f"losses.{name}: unknown loss; allowed: {', '.join(CATALOGUE)}")
            if name not in LOSSES_BY_TASK[self.task]:
                raise ValueError(
                    f"losses.{name}: not defined for task {self.task!r}; "
                    f"allowed for it: {', '.join(LOSSES_BY_TASK[self.task])}"
                )
            for param, value in self.losses[name].model_dump(exclude_none=True).items():
                if param not in CATALOGUE[name].params:
                    allowed = ", ".join(CATALOGUE[name].params) or "no settings"
                    raise ValueError(f"losses.{name}.{param}: {value} given, but {name} takes {allowed}")
        for name, weight in self.weights.items():
            if name != "task" and name not in self.losses:
                raise ValueError(f"weights.{name}: no loss of that name in losses ({', '.join(self.losses)})")
            if not weight >= 0:
                raise ValueError(f"weights.{name}: {weight} is negative (weights must be >= 0)")
        missing = [name for name in self.losses if name not in self.weights]
        if missing:
            raise ValueError(f"weights: no weight for loss {', '.join(missing)}; every loss needs a named weight")
        if not any(weight > 0 for weight in self.weights.values()):
            raise ValueError("weights: all weights are 0; at least one must be > 0")
        for name in FEATURE_LOSSES:
            if name in self.losses and not any(pair.loss == name for pair in self.features):
                raise ValueError(f"losses.{name}: needs at least one features entry with loss: {name}")
        self._check_capabilities()
        if self.features and self.teacher.store is not None:
            raise ValueError("features: feature losses need the teacher model; teacher.store holds its outputs only")
        if self.teacher.store is not None and self.teacher.backend is not None:
            raise ValueError(f"teacher.backend: {self.teacher.backend!r} names the framework of a teacher model; a store "
                             "is read by every framework (drop teacher.backend)")
        if self.foreign_teacher:
            if self.features:
                raise ValueError(f"features: feature losses need the teacher in the student's framework "
                                 f"({self.backend!r}); teacher.backend {self.teacher.backend!r} teaches through its outputs")
            if self.data.augment is not None and not self.teacher.online:
                raise ValueError(f"data.augment: a teacher of another framework (teacher.backend "
                                 f"{self.teacher.backend!r}) is cached once, without views; set teacher.online: true "
                                 "to run it on every view, or cache views (kdistill cache --views) and give teacher.store")
        for index, pair in enumerate(self.features):
            if pair.loss not in self.losses:
                raise ValueError(f"features.{index}.loss: {pair.loss!r} is not in losses; add it with a weight")
        if self.data.augment is not None and self.data.augment.teacher_sees == "clean" and \
                self.teacher.store is None and self.self_training is None:
            raise ValueError("data.augment.teacher_sees: clean needs the teacher's outputs on the clean samples "
                             "from a store cached without views (teacher.store) or self_training's rounds; an "
                             "online teacher sees the student's view")
        if self.self_training is not None:
            self._check_self_training(self.self_training)
        if self.compare.embedding is not None and self.task != "classification":
            raise ValueError(f"compare.embedding: embeddings are scored by class accuracy (linear probe, nearest "
                             f"neighbours); task {self.task!r} is not classification")
        return self

    def _check_self_training(self, config: SelfTrainingConfig) -> None:
        """Rounds label the transfer set with a classifier teacher of the student's framework, read
        through the store their pseudo labels go to."""
        if self.task != "classification":
            raise ValueError(f"self_training: pseudo labels are class labels; task {self.task!r} is not classification")
        if self.data.transfer is None:
            raise ValueError("self_training: the rounds pseudo-label the unlabeled samples of data.transfer; give "
                             "data.transfer (e.g. {fraction: 0.9} keeps 10 % of the training labels)")
        if self.teacher.store is not None or self.foreign_teacher or self.teacher.online:
            raise ValueError("self_training: the round-0 teacher is a model of the student's framework (teacher.model "
                             "or teacher.path), which every round replaces by its student; not teacher.store, "
                             "teacher.backend or teacher.online")
        if self.features:
            raise ValueError("self_training: rounds teach through stored outputs; feature losses need the teacher model")
        expected = {"task", config.loss}
        if set(self.weights) != expected or set(self.losses) != {config.loss}:
            raise ValueError(f"self_training.pseudo_labels: {config.pseudo_labels} labels are read by the "
                             f"{config.loss!r} loss: give losses {{{config.loss}: ...}} and weights for task and "
                             f"{config.loss} (got losses {sorted(self.losses)}, weights {sorted(self.weights)})")

    @property
    def verdict_metric(self) -> str:
        """The test metric the report's verdict compares: the task's, or the linear probe's on
        ``compare.embedding``."""
        from kdistill.report.metrics import PRIMARY

        return "probe_accuracy" if self.compare.embedding is not None else PRIMARY[self.task]

    def _check_capabilities(self) -> None:
        """What the chosen backends must be able to do (the registry's capabilities)."""
        def refuse(field: str, capability: str, backend: str, what: str) -> None:
            if not backends.supports(backend, capability):
                able = ", ".join(backends.with_capability(capability))
                raise ValueError(f"{field}: {what} is for backend(s) {able}, not {backend!r}")
        if self.features:
            refuse("features", backends.FEATURES, self.backend, "feature distillation")
        for index, pair in enumerate(self.features):
            if CATALOGUE[pair.loss].sequence:
                refuse(f"features.{index}.loss", backends.SEQUENCE_FEATURES, self.backend, f"{pair.loss} (transformers)")
        if self.train.data_parallel:
            if backends.supports(self.backend, backends.NPROC) and not backends.supports(self.backend, backends.DATA_PARALLEL):
                able = ", ".join(backends.with_capability(backends.DATA_PARALLEL))
                raise ValueError(f"train.data_parallel: {self.backend!r} runs data-parallel as processes "
                                 f"(kdistill run --nproc N); sharding over one process's devices is for backend(s) {able}")
            refuse("train.data_parallel", backends.DATA_PARALLEL, self.backend, "sharding over the devices of one process")
        for fmt in self.output.export:
            for backend in {self.backend, *([self.teacher.backend] if self.foreign_teacher and not self.teacher.store else [])}:
                refuse("output.export", FORMATS[fmt].capability, backend, f"{fmt} export")
        if self.output.quantize and not self.output.export:
            raise ValueError("output.quantize: quantizes the files of output.export, which names no format")
        if self.teacher.online:
            if not self.foreign_teacher:
                raise ValueError(f"teacher.online: runs a teacher of another framework (teacher.backend) per chunk of "
                                 f"steps; here backend is {self.backend!r} and teacher.backend {self.teacher.backend!r} "
                                 "(a teacher of the student's framework is online already)")
            refuse("teacher.online", backends.ONLINE_FOREIGN, self.backend, "a foreign teacher on the fly")
            refuse("teacher.backend", backends.DLPACK_TEACHER, self.teacher.backend, "an online teacher for another framework")

    @property
    def foreign_teacher(self) -> bool:
        """Is the teacher a model of another framework than the student's?"""
        return self.teacher.backend is not None and self.teacher.backend != self.backend

    def in_teacher_framework(self) -> "Recipe":
        """The recipe as the teacher's framework runs it: ``backend`` is ``teacher.backend`` (if
        set); a foreign teacher trains on one device (``train.data_parallel`` is the student's)."""
        if not self.foreign_teacher:
            return self
        return self.model_copy(update={"backend": self.teacher.backend,
                                       "train": self.train.model_copy(update={"data_parallel": False})})

    def loss_settings(self, name: str) -> dict[str, float | str]:
        """The keyword arguments a loss runs with: its own settings; a temperature it takes but
        was not given is the catalogue default, else ``train.temperature``."""
        settings = self.losses[name].model_dump(exclude_none=True)
        if "temperature" in CATALOGUE[name].params and "temperature" not in settings:
            settings["temperature"] = CATALOGUE[name].default_temperature or self.train.temperature
        return settings

    def teacher_training(self) -> "TrainConfig":
        """How the teacher trains: ``train`` with ``teacher.train``'s overrides and its own seed
        (``train.seed + TEACHER_SEED_OFFSET``), so teacher and student never share random draws."""
        overrides = self.teacher.train.model_dump(exclude_none=True)
        return self.train.model_copy(update={**overrides, "seed": self.train.seed + TEACHER_SEED_OFFSET})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        shown = item.get("input")
        if not where:  # a whole-recipe check: its message already names the field
            lines.append(message)
        elif item["type"] in ("value_error", "missing") or isinstance(shown, dict):
            lines.append(f"{where}: {message}")
        else:
            lines.append(f"{where}: {shown!r} — {message}")
    return "invalid recipe:\n  " + "\n  ".join(lines)


def set_dotted(raw: dict, assignment: str) -> None:
    """Apply one ``--set key.sub=value`` override (value parsed as YAML) to a raw recipe dict."""
    if "=" not in assignment:
        raise KdistillError(f"--set {assignment!r}: expected key=value, e.g. train.epochs=5")
    key, text = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise KdistillError(f"--set {assignment!r}: {part!r} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise KdistillError(f"--set {assignment!r}: the value is not valid YAML ({error.problem})") from None


def recipe_from_dict(raw: dict, overrides: list[str] = ()) -> Recipe:
    """Validate a raw mapping (after ``--set`` overrides) into a Recipe, or raise a named error."""
    raw = yaml.safe_load(yaml.safe_dump(raw))  # deep copy through plain types
    for assignment in overrides:
        set_dotted(raw, assignment)
    try:
        return Recipe.model_validate(raw)
    except ValidationError as error:
        raise KdistillError(_describe(error)) from None


def builtin_recipes() -> list[str]:
    return sorted(path.stem for path in BUILTIN_DIR.glob("*.yaml"))


def load_recipe(source: str | Path | None = None, overrides: list[str] = ()) -> Recipe:
    """Load a recipe from a YAML file or a built-in name (``None`` → the built-in default)."""
    source = DEFAULT_RECIPE if source is None else source
    path = Path(source)
    if not path.exists() and (BUILTIN_DIR / f"{source}.yaml").exists():
        path = BUILTIN_DIR / f"{source}.yaml"
    if not path.exists():
        raise KdistillError(
            f"recipe {str(source)!r}: no such file and no built-in recipe of that name "
            f"(built-in: {', '.join(builtin_recipes())})"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise KdistillError(f"recipe {str(path)!r} is not readable YAML: {error}") from None
    if not isinstance(raw, dict):
        raise KdistillError(f"recipe {str(path)!r}: expected a mapping of sections, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    return recipe_from_dict(raw, overrides)
