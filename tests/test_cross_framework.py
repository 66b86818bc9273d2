"""Any teacher teaches any student (``teacher.backend``): in all six directions between torch,
keras and jax, the student taught by a teacher of another framework reaches the accuracy of the
same student taught by a teacher of its own framework, on a Fashion-MNIST subset.

The teacher of every run is the same recipe trained from the same seed; a foreign teacher is
trained in its framework, cached to ``OUT/teacher-store`` and read by the student from there."""

from __future__ import annotations

import importlib.util
import itertools

import pytest

from conftest import by_role, read_report, set_args
from kdistill.cli import main
from kdistill.data import load_task_data
from kdistill.cross_framework import STORE_DIR
from kdistill.errors import KdistillError
from kdistill.recipe import DataConfig, load_recipe

BACKENDS = ("torch", "keras", "jax")
FRAMEWORK = {"torch": "torch", "keras": "tensorflow", "jax": "flax"}
TOLERANCE = 0.005  # the bar: within 0.5 accuracy points of the same-framework teacher's student

# a 6000-image subset (1200 test images: one image is 0.083 points), a 256-unit teacher, 4 epochs
SUBSET = ("data.limit=6000", "teacher.kwargs={hidden: [256], dropout: 0.3, input_dropout: 0.1}",
          "teacher.train.epochs=4", "train.epochs=4", "compare.scratch=false", "compare.latency_repeats=3",
          "train.progress=false", "train.device=cpu")


def _fashion_available() -> bool:
    try:
        load_task_data(DataConfig(dataset="fashion_mnist", limit=10), "classification")
    except KdistillError:
        return False
    return True


pytestmark = [
    pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in FRAMEWORK.values()),
                       reason="needs the torch, tensorflow and jax extras"),
    pytest.mark.skipif(not _fashion_available(), reason="needs Fashion-MNIST (apt-get install dataset-fashion-mnist)"),
]


def _args(student: str, teacher: str) -> list[str]:
    assignments = (*SUBSET, f"backend={student}", f"teacher.backend={teacher}")
    return ["fashion_mnist_mlp", *(arg for assignment in assignments for arg in ("--set", assignment))]


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[tuple[str, str], dict]:
    """(teacher backend, student backend) → the run's report, for all nine pairs."""
    out = tmp_path_factory.mktemp("cross")
    found = {}
    for teacher, student in itertools.product(BACKENDS, BACKENDS):
        directory = out / f"{teacher}-to-{student}"
        assert main(["run", *_args(student, teacher), "--out", str(directory)]) == 0
        found[teacher, student] = by_role(read_report(directory))
    return found


@pytest.mark.parametrize("teacher, student", [pair for pair in itertools.product(BACKENDS, BACKENDS)
                                              if pair[0] != pair[1]])
def test_a_foreign_teacher_teaches_as_well_as_one_of_the_students_framework(reports, teacher, student):
    foreign, native = reports[teacher, student], reports[student, student]
    # the cached teacher is the teacher its own framework trains: same test accuracy from its stored logits
    assert foreign["teacher"]["metrics"]["accuracy"] == pytest.approx(
        reports[teacher, teacher]["teacher"]["metrics"]["accuracy"], abs=1e-9)
    assert foreign["teacher"]["metrics"]["accuracy"] > 0.7  # a real teacher (10 classes), not noise
    gap = foreign["distilled"]["metrics"]["accuracy"] - native["distilled"]["metrics"]["accuracy"]
    assert abs(gap) <= TOLERANCE, f"{teacher}→{student}: {gap:+.4f} against the {student} teacher's student"
    assert foreign["teacher"]["val_history"] and foreign["teacher"]["parameters"] == native["teacher"]["parameters"]


def test_a_store_teacher_cannot_name_a_backend():
    with pytest.raises(KdistillError, match="teacher.backend: 'jax' names the framework of a teacher model"):
        load_recipe(None, ["teacher.model=null", "teacher.store=somewhere", "teacher.backend=jax"])


def test_feature_losses_need_the_teacher_in_the_students_framework():
    with pytest.raises(KdistillError, match="features: feature losses need the teacher in the student's framework"):
        load_recipe(None, ["teacher.backend=jax", "losses={kd: {}, hint: {}}", "weights={task: 0.1, kd: 0.8, hint: 0.1}",
                           "features=[{student: layers.0, teacher: layers.0, loss: hint}]"])


# --- online: the foreign teacher runs per batch, handed over by DLPack ------------------------------


@pytest.mark.parametrize("teacher", ["jax", "keras"])
def test_an_online_foreign_teacher_teaches_the_same_student_as_its_cached_outputs(tmp_path, teacher):
    runs = {}
    for mode, online in (("cached", "false"), ("online", "true")):
        args = set_args("backend=torch", f"teacher.backend={teacher}", f"teacher.online={online}", "compare.scratch=false")
        assert main(["run", *args, "--out", str(tmp_path / mode)]) == 0
        runs[mode] = by_role(read_report(tmp_path / mode))
    assert not (tmp_path / "online" / STORE_DIR).exists()  # nothing cached: the teacher ran on the fly
    assert f"(teacher in `{teacher}`, run on the fly)" in (tmp_path / "online" / "report.md").read_text()
    assert f"(teacher in `{teacher}`, taught through its cached outputs)" in (tmp_path / "cached" / "report.md").read_text()
    assert runs["online"]["teacher"]["metrics"] == runs["cached"]["teacher"]["metrics"]
    assert runs["online"]["teacher"]["latency_ms"]  # measured through DLPack, beside the student
    # the same float32 logits reach the loss either way: the same student, step for step
    assert runs["online"]["distilled"]["metrics"] == runs["cached"]["distilled"]["metrics"]
    assert runs["online"]["distilled"]["val_history"] == pytest.approx(runs["cached"]["distilled"]["val_history"], abs=1e-12)


def test_an_online_foreign_teacher_follows_augmentation(tmp_path):
    args = set_args("data.dataset=fashion_mnist", "data.limit=400", "data.augment={shift: 2, flip: true}",
                    "backend=torch", "teacher.backend=jax", "teacher.online=true", "compare.scratch=false")
    assert main(["run", "fashion_mnist_mlp", *args, "--out", str(tmp_path / "run")]) == 0
    assert by_role(read_report(tmp_path / "run"))["distilled"]["metrics"]["accuracy"] > 0.3


def test_augmentation_with_a_cached_foreign_teacher_is_refused():
    with pytest.raises(KdistillError, match="data.augment: a teacher of another framework .* set teacher.online: true"):
        load_recipe("fashion_mnist_mlp", ["data.augment={shift: 2}", "teacher.backend=jax"])


@pytest.mark.parametrize("backend, teacher", [("torch", "torch"), ("torch", None)])
def test_online_is_for_a_foreign_teacher(backend, teacher):
    with pytest.raises(KdistillError, match="teacher.online: runs a teacher of another framework"):
        load_recipe(None, [f"backend={backend}", f"teacher.backend={'null' if teacher is None else teacher}",
                           "teacher.online=true"])


@pytest.mark.parametrize("backend, teacher", [("jax", "torch"), ("keras", "jax")])
def test_online_foreign_teachers_are_for_a_torch_student(backend, teacher):
    # the registry's capability: only torch hosts a teacher of another framework on the fly
    with pytest.raises(KdistillError) as refused:
        load_recipe(None, [f"backend={backend}", f"teacher.backend={teacher}", "teacher.online=true"])
    assert "teacher.online: a foreign teacher on the fly" in str(refused.value)
    assert f"backend(s) torch, not {backend!r}" in str(refused.value)


@pytest.mark.parametrize("student, teacher, field", [("torch", "jax", "teacher"), ("keras", "torch", "student")])
def test_both_frameworks_check_their_model_before_anything_is_written(tmp_path, capsys, student, teacher, field):
    wrong = f"{field}.kwargs={{hidden: [8], output_dim: 3}}"  # 3 outputs for 10 classes
    assert main(["run", *set_args(f"backend={student}", f"teacher.backend={teacher}", wrong),
                 "--out", str(tmp_path / "out")]) == 2
    assert f"{field}: outputs (3,) per sample, but digits (classification) needs (10,)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_foreign_run_resumes_with_its_cached_store_and_kdistill_cache_runs_the_teacher_in_its_framework(
        tmp_path, monkeypatch):
    from kdistill.pipeline import Pipeline
    from kdistill.store import MANIFEST, StoreReader

    args = set_args("backend=torch", "teacher.backend=jax", "compare.scratch=false")
    execute = Pipeline.execute

    def interrupted(*_args, **_kwargs):
        raise KdistillError("the student's training was interrupted")

    monkeypatch.setattr(Pipeline, "execute", interrupted)
    assert main(["run", *args, "--out", str(tmp_path / "run")]) == 2  # after the teacher was cached
    store_manifest = tmp_path / "run" / STORE_DIR / MANIFEST
    assert store_manifest.exists() and (tmp_path / "run" / "INCOMPLETE").exists()
    cached_at = store_manifest.stat().st_mtime_ns
    monkeypatch.setattr(Pipeline, "execute", execute)
    assert main(["run", *args, "--out", str(tmp_path / "run"), "--resume"]) == 0
    assert store_manifest.stat().st_mtime_ns == cached_at  # the finished store is kept, not cached again
    assert main(["run", *args, "--out", str(tmp_path / "straight")]) == 0
    resumed, straight = by_role(read_report(tmp_path / "run")), by_role(read_report(tmp_path / "straight"))
    assert resumed["distilled"]["metrics"] == straight["distilled"]["metrics"]
    assert resumed["distilled"]["val_history"] == straight["distilled"]["val_history"]

    # the same recipe caches its JAX teacher with JAX, whatever the student's backend
    assert main(["cache", *args, "--set", f"teacher.path={tmp_path / 'straight' / 'teacher.safetensors'}",
                 "--store", str(tmp_path / "store")]) == 0
    by_hand, automatic = StoreReader(tmp_path / "store"), StoreReader(tmp_path / "straight" / STORE_DIR)
    assert by_hand.manifest.teacher["backend"] == "jax"
    assert (by_hand.fetch(automatic.ids) == automatic.fetch(automatic.ids)).all()


def test_nproc_with_a_foreign_teacher_is_refused_before_launch(tmp_path, capsys):
    assert main(["run", "--nproc", "2", *set_args("teacher.backend=jax"), "--out", str(tmp_path / "out")]) == 2
    assert "--nproc: a teacher of another framework (teacher.backend 'jax') is trained in one process" in \
        capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_fresh_start_in_an_interrupted_runs_directory_caches_its_own_teacher(tmp_path, monkeypatch):
    from kdistill.cross_framework import CachedForeignTeacher
    from kdistill.pipeline import Pipeline
    from kdistill.store import StoreReader
    from kdistill.store.manifest import file_sha256

    def interrupted(*_args, **_kwargs):
        raise KdistillError("interrupted")

    out = tmp_path / "run"
    monkeypatch.setattr(Pipeline, "execute", interrupted)  # run A: its teacher cached, then interrupted
    assert main(["run", *set_args("teacher.backend=jax", "teacher.train.epochs=1"), "--out", str(out)]) == 2
    assert (out / STORE_DIR).exists()
    monkeypatch.undo()
    cache = CachedForeignTeacher.cache
    monkeypatch.setattr(CachedForeignTeacher, "cache", interrupted)  # run B, afresh: interrupted before caching
    args = set_args("teacher.backend=jax", "teacher.train.epochs=2")
    assert main(["run", *args, "--out", str(out)]) == 2
    # nothing of A's is left to reuse: no store, no checkpoint
    assert not (out / STORE_DIR).exists() and not list((out / "checkpoints").glob("*"))
    monkeypatch.setattr(CachedForeignTeacher, "cache", cache)
    assert main(["run", *args, "--out", str(out), "--resume"]) == 0
    assert StoreReader(out / STORE_DIR).manifest.teacher["sha256"] == file_sha256(out / "teacher.safetensors")


def test_a_foreign_teacher_trains_on_one_device_and_a_missing_framework_names_teacher_backend():
    from kdistill.backends import import_module

    recipe = load_recipe(None, ["backend=jax", "train.data_parallel=true", "teacher.backend=keras"])
    assert recipe.train.data_parallel and not recipe.in_teacher_framework().train.data_parallel
    assert recipe.in_teacher_framework().backend == "keras"
    with pytest.raises(KdistillError, match="^teacher.backend: 'jax' needs kdistill.jax.no_such_module"):
        import_module("jax", "no_such_module", field="teacher.backend")
