"""Training from splits that stream from disk, on every backend, in the one loop: the streamed
student equals the in-memory one bit for bit, whatever the number of reader workers; nothing reads
a whole split at once; augmentation (online and from a store's cached views) trains every backend;
a run resumed from a checkpoint taken within an epoch equals the uninterrupted run."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from conftest import FAST, default_raw
from kdistill import backends
from kdistill.data import load_task_data
from kdistill.data.augment import augment as augment_views
from kdistill.data.stream import read_ahead
from kdistill.objective import Objective
from kdistill.recipe import recipe_from_dict
from kdistill.store.cache import cache_teacher
from kdistill.store.for_run import open_store_for
from kdistill.training import CHECK_EVERY, checkpoint
from kdistill.training.loop import fit
from kdistill.training.plan import steps_per_epoch
from streamed import on_disk
from test_backend_contract import BACKENDS

AUGMENT = {"shift": 1, "flip": True, "seed": 2}


def image_recipe(image_arrays, backend: str, *assignments: str, augment: dict | None = None, transfer: bool = True):
    """Tiny CNNs on the 240 8×8 images (174 for training, of which 52 as a transfer set), batches of 8."""
    raw = default_raw() | {
        "backend": backend,
        "data": {"dataset": "arrays", "path": str(image_arrays), "transfer": {"fraction": 0.3} if transfer else None,
                 "augment": augment},
        "teacher": {"model": "cnn", "kwargs": {"channels": [4], "hidden": 8}},
        "student": {"model": "cnn", "kwargs": {"channels": [2], "hidden": 8, "dropout": 0.2}},
    }
    return recipe_from_dict(raw, [*FAST, "train.batch_size=8", "train.eval_batch_size=32", *assignments])


def train_student(recipe, data, **options) -> np.ndarray:
    """A student trained in the one loop, on its labels (or, given ``teacher_outputs``, distilled
    by the recipe's losses); its test outputs (read from memory)."""
    backend = backends.load(recipe.backend)
    device = backend.device("cpu")
    objective = Objective(recipe.task, recipe.weights, {name: recipe.loss_settings(name) for name in recipe.losses}) \
        if "teacher_outputs" in options else Objective.task_only(recipe.task)
    with backend.scope(device, recipe.train):
        student, _ = backend.build(recipe.student, data, "student", recipe.train.seed, device)
        distiller = backend.distiller(student, objective, None, (), None, device, 0)
        fit("scratch", backend, distiller, data, recipe.train, device, augment=recipe.data.augment, **options)
    return backend.predict(student, np.asarray(data.test.x[:]), 64, device)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_streamed_split_trains_the_in_memory_student_bit_for_bit(backend, image_arrays, tmp_path):
    recipe = image_recipe(image_arrays, backend, "train.epochs=1", "train.workers=2")
    data = load_task_data(recipe.data, recipe.task)
    streamed = on_disk(data, tmp_path / "npy")
    np.testing.assert_array_equal(train_student(recipe, data), train_student(recipe, streamed))
    reads = streamed.train.x.reads + streamed.val.x.reads
    assert reads and max(reads) <= recipe.train.eval_batch_size < len(data.train)  # batches, never a split


def test_the_number_of_reader_workers_does_not_change_the_student(image_arrays, tmp_path):
    recipe = image_recipe(image_arrays, "torch", "train.epochs=1", augment=AUGMENT)
    streamed = on_disk(load_task_data(recipe.data, recipe.task), tmp_path / "npy")
    students = [train_student(recipe.model_copy(update={"train": recipe.train.model_copy(update={"workers": n})}),
                              streamed) for n in (0, 1, 2)]
    np.testing.assert_array_equal(students[0], students[1])
    np.testing.assert_array_equal(students[0], students[2])


def test_the_reader_keeps_order_and_reads_a_bounded_number_ahead():
    started, lock = [], threading.Lock()

    def read(item: int) -> int:
        with lock:
            started.append(item)
        return item * 2

    reader = read_ahead(list(range(200)), read, workers=2, ahead=5)
    assert [next(reader) for _ in range(3)] == [0, 2, 4]
    time.sleep(0.3)  # the workers fill the buffer, then wait for the consumer
    assert len(started) <= 3 + 5 + 2
    assert list(reader) == [2 * item for item in range(3, 200)]


def spy_on_chunks(monkeypatch, backend) -> list:
    """Record every chunk the loop hands the backend's runner: (steps, teacher outputs)."""
    chunks = []
    make_runner = backend.runner

    def runner(*args, **kwargs):
        made = make_runner(*args, **kwargs)
        run = made.run

        def recording_run(steps, teacher_outputs):
            chunks.append((list(steps), None if teacher_outputs is None else np.asarray(teacher_outputs)))
            return run(steps, teacher_outputs)

        made.run = recording_run
        return made

    monkeypatch.setattr(backend, "runner", runner)
    return chunks


@pytest.mark.parametrize("backend", BACKENDS)
def test_augmentation_trains_every_backend_online_and_from_cached_views(backend, image_arrays, tmp_path, monkeypatch):
    recipe = image_recipe(image_arrays, backend, "train.epochs=1", augment=AUGMENT)
    data = load_task_data(recipe.data, recipe.task)
    plain = train_student(image_recipe(image_arrays, backend, "train.epochs=1"), data)
    chunks = spy_on_chunks(monkeypatch, backends.load(backend))
    online = train_student(recipe, on_disk(data, tmp_path / "npy"))
    assert not np.array_equal(online, plain)
    for steps, _ in chunks:  # every step trained on its samples' views of the epoch
        for step in steps:
            np.testing.assert_array_equal(step.x, augment_views(step.inputs(data), step.ids, step.views, recipe.data.augment))

    engine = backends.load(backend)  # offline: a teacher cached with 3 views, each step replays one of them
    device = engine.device("cpu")
    recipe = image_recipe(image_arrays, backend, augment=AUGMENT, transfer=False)
    data = on_disk(load_task_data(recipe.data, recipe.task), tmp_path / "npy-offline")  # cached and trained streamed
    with engine.scope(device, recipe.train):
        teacher, spec = engine.build(recipe.teacher, data, "teacher", 1, device)
    teacher_file = engine.save(teacher, spec, tmp_path / "teacher")
    cache_teacher(image_recipe(image_arrays, backend, f"teacher.path={teacher_file}", augment=AUGMENT, transfer=False),
                  data, tmp_path / "store", engine, views=3, shard_size=64)
    offline = image_recipe(image_arrays, backend, "train.epochs=1", "teacher.model=null",
                           f"teacher.store={tmp_path / 'store'}", augment=AUGMENT, transfer=False)
    store = open_store_for(offline, data)
    chunks.clear()
    train_student(offline, data, teacher_outputs=store.fetch, stored_views=store.manifest.views)
    assert len(chunks) == -(-steps_per_epoch(len(data.train), 8) // CHECK_EVERY)
    for steps, outputs in chunks:
        x = np.concatenate([step.x for step in steps])
        np.testing.assert_allclose(engine.predict(teacher, x, 64, device), outputs, rtol=1e-4, atol=1e-4)
        assert all(set(step.views) <= {1, 2, 3} for step in steps)


@pytest.mark.parametrize("backend", ["torch"])  # every backend resumes bit for bit at an epoch's end (test_backend_contract)
def test_a_streamed_run_resumed_within_an_epoch_equals_the_uninterrupted_run(backend, image_arrays, tmp_path,
                                                                             monkeypatch):
    recipe = image_recipe(image_arrays, backend, "train.batch_size=4", "train.checkpoint_steps=20", "train.workers=2",
                          augment=AUGMENT)  # 31 steps an epoch: a checkpoint after step 20 of each
    data = on_disk(load_task_data(recipe.data, recipe.task), tmp_path / "npy")
    whole = train_student(recipe, data, checkpoint_stem=tmp_path / "whole" / "scratch")
    save = checkpoint.save

    def stop_within_the_second_epoch(stem, arrays, epoch, history, within=None):
        save(stem, arrays, epoch, history, within)
        if within is not None and epoch == 0:
            raise KeyboardInterrupt  # killed after step 20 of the second epoch

    monkeypatch.setattr(checkpoint, "save", stop_within_the_second_epoch)
    stem = tmp_path / "cut" / "scratch"
    with pytest.raises(KeyboardInterrupt):
        train_student(recipe, data, checkpoint_stem=stem)
    monkeypatch.setattr(checkpoint, "save", save)
    assert checkpoint.load(stem, "scratch")[1] == 0 and checkpoint.within(stem).step == 20
    resumed = train_student(recipe, data, checkpoint_stem=stem, resume=True)
    np.testing.assert_array_equal(whole, resumed)
    cut, uninterrupted = (checkpoint.load(path, "scratch")[2] for path in (stem, tmp_path / "whole" / "scratch"))
    assert cut.val == uninterrupted.val and cut.loss == uninterrupted.loss
