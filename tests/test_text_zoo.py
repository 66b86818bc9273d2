"""The text MLP of every backend's zoo (``text_mlp``) on tokenized text — int32 (N, 2, L): token
ids, then the attention mask — with ``vocab_size`` in the data's meta. A PyTorch text-MLP teacher
teaches a PyTorch student online (kd, and hint between the pooled vectors) and, through a store of
its logits, a Keras and a JAX student: each run goes through the one pipeline (build, output
check, training, prediction, latency, save, the scratch twin's clone). The students learn a toy
task, padding leaves their outputs unchanged, their saved files load to the same predictions,
``pool`` is a feature layer in every backend, and inputs that are not tokens are refused naming
the model."""

from __future__ import annotations

import numpy as np
import pytest

from kdistill import backends
from kdistill.data.splits import Split, TaskData
from kdistill.errors import KdistillError
from kdistill.objective import Objective
from kdistill.pipeline import Pipeline
from kdistill.recipe import FeaturePair, ModelConfig, recipe_from_dict
from kdistill.store.cache import cache_teacher
from kdistill.store.for_run import open_store_for
from test_backend_contract import BACKENDS

VOCAB, LENGTH, CLASSES = 40, 12, 3
SAVED = {"torch": "student.safetensors", "keras": "student.keras", "jax": "student.safetensors"}


def token_data(n: int = 288) -> TaskData:
    """Sequences of 3..8 random filler ids (>= 4) padded to LENGTH with id 0; the class c's own
    token c + 1 takes two of the real positions (or one, where both draws agree), so a mean of
    token embeddings tells the classes apart."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % CLASSES
    lengths = rng.integers(3, LENGTH - 3, n)
    mask = np.arange(LENGTH) < lengths[:, None]
    ids = rng.integers(CLASSES + 1, VOCAB, (n, LENGTH))
    for _ in range(2):
        ids[np.arange(n), rng.integers(0, lengths)] = y + 1
    x = np.stack([np.where(mask, ids, 0), mask], axis=1).astype(np.int32)
    parts = (slice(0, 192), slice(192, 240), slice(240, n))  # 6 full batches of 32: one step shape
    splits = [Split(x[part], y[part].astype(np.int64), np.arange(n)[part]) for part in parts]
    return TaskData("tokens", "classification", *splits, output_dim=CLASSES, meta={"vocab_size": VOCAB})


TRAIN = {"epochs": 3, "batch_size": 32, "lr": 0.03, "progress": False, "device": "cpu"}
STUDENT = {"model": "text_mlp", "kwargs": {"embedding": 16, "hidden": [16], "dropout": 0.1}}
POOLED = [{"student": "pool", "teacher": "pool", "loss": "hint"}]  # the pooled sentence vectors


def text_recipe(backend: str, teacher: dict, **sections):
    return recipe_from_dict({
        "backend": backend, "task": "classification", "teacher": teacher, "student": STUDENT,
        "losses": {"kd": {"temperature": 2}}, "weights": {"task": 0.5, "kd": 0.5}, "train": TRAIN,
        "compare": {"scratch": False, "latency_repeats": 3}, **sections,  # the twin is cloned all the same
    })


TEACHER = {"model": "text_mlp", "kwargs": {"embedding": 16, "hidden": [16, 16]}, "train": {"epochs": 3}}
ONLINE = {"losses": {"kd": {"temperature": 2}, "hint": {}}, "weights": {"task": 0.5, "kd": 0.4, "hint": 0.1},
          "features": POOLED}


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory):
    """A PyTorch text-MLP teacher teaching a text-MLP student online (kd + hint between the pooled
    vectors), and the trained teacher's logits cached to a soft-target store."""
    pytest.importorskip("torch")
    data, out = token_data(), tmp_path_factory.mktemp("text") / "run"
    pipeline = Pipeline(text_recipe("torch", TEACHER, **ONLINE), data)
    results = pipeline.execute(out, resume=False)
    store = out.parent / "store"
    cache_teacher(text_recipe("torch", {"path": str(out / "teacher.safetensors")}), data, store, pipeline.backend)
    return pipeline, results, out, store


def padded_variants(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``x`` with 5 more padding positions appended, and ``x`` with random ids under its padding."""
    longer = np.concatenate([x, np.zeros((len(x), 2, 5), x.dtype)], axis=2)
    noisy = x.copy()
    noisy[:, 0] = np.where(x[:, 1] == 1, x[:, 0], rng.integers(1, VOCAB, x[:, 0].shape))
    return longer, noisy


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_text_mlp_recipe_learns_tokens_end_to_end_and_padding_changes_nothing(backend, torch_run, tmp_path):
    """PyTorch: the online run; Keras and JAX: students taught by the PyTorch teacher's store."""
    pipeline, results, out, store = torch_run
    data = pipeline.data
    if backend != "torch":
        recipe, out = text_recipe(backend, {"store": str(store)}), tmp_path / "run"
        pipeline = Pipeline(recipe, data)
        results = pipeline.execute(out, resume=False, store=open_store_for(recipe, data))
    results = {result.role: result for result in results}
    assert set(results) == {"teacher", "distilled"}
    for role in results:
        assert results[role].metrics["accuracy"] > 0.8, (role, results[role].metrics)  # chance: 1/3
    assert results["distilled"].latency_ms is not None
    impl, device, x = pipeline.backend, pipeline.device, data.test.x
    assert x.dtype == np.int32
    student = pipeline.student
    logits = impl.predict(student, x, 64, device)
    for variant in padded_variants(x, np.random.default_rng(1)):
        np.testing.assert_allclose(impl.predict(student, variant, 64, device), logits, rtol=0, atol=1e-6)
    empty = np.zeros((2, 2, LENGTH), np.int32)
    empty[1, 0] = np.arange(1, LENGTH + 1)  # ids under an all-zero mask: still no real token
    empty_logits = impl.predict(student, empty, 64, device)
    assert np.isfinite(empty_logits).all()
    np.testing.assert_allclose(empty_logits[1], empty_logits[0], rtol=0, atol=1e-6)
    saved = out / SAVED[backend]
    loaded, _ = impl.build(ModelConfig(path=str(saved)), data, "student", 0, device)
    np.testing.assert_allclose(impl.predict(loaded, x, 64, device), logits, rtol=0, atol=1e-6)


def without_tokens(data: TaskData, x: np.ndarray, meta: dict) -> TaskData:
    return TaskData(data.name, data.task, Split(x, data.train.y, data.train.ids), data.val, data.test,
                    output_dim=data.output_dim, meta=meta)


@pytest.mark.parametrize("backend", BACKENDS)
def test_text_mlp_refuses_inputs_that_are_not_tokens_naming_the_model(backend):
    data, impl = token_data(), backends.load(backend)
    x = data.train.x
    refused = {
        "float32": without_tokens(data, x.astype(np.float32), data.meta),
        "(12,)": without_tokens(data, x[:, 0], data.meta),
        "vocab_size": without_tokens(data, x, {}),
    }
    for said, bad in refused.items():
        with pytest.raises(KdistillError) as refusal:
            impl.build(ModelConfig(model="text_mlp"), bad, "student", 0, impl.device("cpu"))
        assert "'text_mlp'" in str(refusal.value) and said in str(refusal.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pool_is_a_feature_layer_of_text_mlp_in_every_backend(backend):
    """A hint between the pooled vectors of a text-MLP student and teacher: both taps found by name
    and the adapter sized from them on a probe (nothing trained)."""
    data, impl = token_data(), backends.load(backend)
    device = impl.device("cpu")
    student, _ = impl.build(ModelConfig(**STUDENT), data, "student", 0, device)
    teacher, _ = impl.build(ModelConfig(model=TEACHER["model"], kwargs=TEACHER["kwargs"]), data, "teacher", 1, device)
    objective = Objective("classification", {"task": 0.5, "kd": 0.4, "hint": 0.1}, {"kd": {}, "hint": {}})
    impl.distiller(student, objective, teacher, [FeaturePair(**POOLED[0])], data.train.x[:4], device, 0)
