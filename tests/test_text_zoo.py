"""The text MLP of every backend's zoo (``text_mlp``) on tokenized text — int32 (N, 2, L): token
ids, then the attention mask — with ``vocab_size`` in the data's meta. A recipe with a text-MLP
teacher and student runs end to end through the one pipeline (build, output check, training,
prediction, latency, save, the scratch twin's clone); the student learns a toy task, padding
leaves its outputs unchanged, its saved file loads to the same predictions, and inputs that are
not tokens are refused naming the model."""

from __future__ import annotations

import numpy as np
import pytest

from kdistill import backends
from kdistill.data.splits import Split, TaskData
from kdistill.errors import KdistillError
from kdistill.pipeline import Pipeline
from kdistill.recipe import ModelConfig, recipe_from_dict
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


def text_recipe(backend: str):
    return recipe_from_dict({
        "backend": backend, "task": "classification",
        "teacher": {"model": "text_mlp", "kwargs": {"embedding": 16, "hidden": [16, 16]}, "train": {"epochs": 3}},
        "student": {"model": "text_mlp", "kwargs": {"embedding": 16, "hidden": [16], "dropout": 0.1}},
        "losses": {"kd": {"temperature": 2}}, "weights": {"task": 0.5, "kd": 0.5},
        "train": {"epochs": 3, "batch_size": 32, "lr": 0.03, "progress": False, "device": "cpu"},
        "compare": {"scratch": False, "latency_repeats": 3},  # the twin is cloned all the same
    })


def padded_variants(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``x`` with 5 more padding positions appended, and ``x`` with random ids under its padding."""
    longer = np.concatenate([x, np.zeros((len(x), 2, 5), x.dtype)], axis=2)
    noisy = x.copy()
    noisy[:, 0] = np.where(x[:, 1] == 1, x[:, 0], rng.integers(1, VOCAB, x[:, 0].shape))
    return longer, noisy


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_text_mlp_recipe_learns_tokens_end_to_end_and_padding_changes_nothing(backend, tmp_path):
    data = token_data()
    pipeline = Pipeline(text_recipe(backend), data)
    results = {result.role: result for result in pipeline.execute(tmp_path / "run", resume=False)}
    assert set(results) == {"teacher", "distilled"}
    for role in results:
        assert results[role].metrics["accuracy"] > 0.8, (role, results[role].metrics)  # chance: 1/3
        assert results[role].latency_ms is not None
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
    saved = tmp_path / "run" / SAVED[backend]
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
