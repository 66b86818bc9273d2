"""Bad input gives one named error (exit code 2, no traceback): never a traceback, never a silent
wrong answer, never a lost user file. Each test feeds one kind of bad input through the CLI."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from conftest import TESTS, requires_torch, set_args

from kdistill.errors import KdistillError, reading


def refused(result: tuple[int, str, str], *needles: str) -> str:
    """Exit code 2 and one ``kdistill: error:`` message, without a traceback, holding every needle."""
    code, _, err = result
    assert code == 2, err
    assert err.startswith("kdistill: error: ") and "Traceback" not in err
    assert err.count("kdistill: error:") == 1
    for needle in needles:
        assert needle in err, f"{needle!r} not in: {err}"
    return err


# --- recipe floats are finite, seeds fit the random generators -------------------------------


@pytest.mark.parametrize(("assignment", "needle"), [
    ("train.temperature=.inf", "train.temperature: inf — Input should be a finite number"),
    ("losses.kd.temperature=.nan", "losses.kd.temperature: nan — Input should be a finite number"),
    ("train.lr=.inf", "train.lr: inf — Input should be a finite number"),
    ("weights.kd=.inf", "weights.kd: inf — Input should be a finite number"),
    ("weights.task=.nan", "weights.task: nan — Input should be a finite number"),
    ("data.split_seed=-1", "data.split_seed: -1 — Input should be greater than or equal to 0"),
    (f"train.seed={2**70}", f"train.seed: {2**70} — Input should be less than"),
    (f"data.augment={{shift: 1, seed: {2**70}}}", f"data.augment.seed: {2**70} — Input should be less than {2**63}"),
])
def test_recipe_refuses_infinite_floats_and_out_of_range_seeds(kdistill, assignment, needle):
    refused(kdistill("validate", "--set", assignment), "invalid recipe", needle)


# --- a user's file that cannot be read, or is not what it should be ----------------------------


def classification_arrays(path, labels=None, n: int = 60, features: int = 4):
    """A tiny classification ``.npz``: ``n`` rows of ``features`` inputs, labels 0, 1, 2 repeated
    (or ``labels``)."""
    y = np.arange(n) % 3 if labels is None else np.asarray(labels)
    x = np.random.default_rng(0).normal(size=(len(y), features)).astype(np.float32)
    np.savez(path, x=x, y=y)
    return path


def load_via_cli(kdistill, tmp_path, data_path, *assignments: str):
    """``kdistill cache --from-predictions`` on ``data.path`` (arrays): loads the data first, with no
    framework involved; the predictions file is never reached when the data is refused."""
    sets = [arg for item in ("data.dataset=arrays", f"data.path={data_path}", *assignments)
            for arg in ("--set", item)]
    return kdistill("cache", *sets, "--from-predictions", tmp_path / "never-read.npy", "--store", tmp_path / "s")


@pytest.mark.parametrize("problem", ["truncated_npz", "binary_csv", "pickled_npz"])
def test_unreadable_data_file_is_named(tmp_path, kdistill, problem):
    if problem == "truncated_npz":
        path = classification_arrays(tmp_path / "d.npz")
        path.write_bytes(path.read_bytes()[:-100])
        needle = f"data.path: {path}: not a numpy .npz file with keys x, y ("
    elif problem == "binary_csv":
        path = tmp_path / "d.csv"
        path.write_bytes(b"\xff\xfe\x00\x89PNG\r\n\x1a\n" * 20)
        needle = f"data.path: {path}: not a numeric CSV ("
    else:
        path = tmp_path / "d.npz"
        np.savez(path, x=np.array([{"a": 1}] * 30, dtype=object), y=np.zeros(30))
        needle = f"data.path: {path}: not a numpy .npz file with keys x, y (Object arrays cannot be loaded"
    refused(load_via_cli(kdistill, tmp_path, path), needle)
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_data_file_without_read_permission_is_named(tmp_path, kdistill):
    path = classification_arrays(tmp_path / "d.npz")
    path.chmod(0)
    try:
        refused(load_via_cli(kdistill, tmp_path, path),
                f"data.path: {path}: cannot be read (Permission denied); expected a numpy .npz file with keys x, y")
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize(("raised", "needle"), [
    (PermissionError(errno.EACCES, "Permission denied"), "cannot be read (Permission denied); expected a numpy .npz file"),
    (OSError(errno.ENOSPC, "No space left on device"), "cannot be read (No space left on device); expected a numpy"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "not a numpy .npz file ('utf-8' codec"),
    (__import__("json").JSONDecodeError("Expecting value", "x", 0), "not a numpy .npz file (Expecting value"),
])
def test_reading_names_the_file_for_io_and_format_errors(tmp_path, raised, needle):
    """What root cannot provoke on a real file (no read permission, a full disk) goes through the same helper."""
    path = tmp_path / "d.npz"
    with pytest.raises(KdistillError) as error, reading(path, "a numpy .npz file", field="data.path"):
        raise raised
    assert str(error.value).startswith(f"data.path: {path}: ") and needle in str(error.value)


def tiny_store(path, name: str):
    """A complete store of 12 samples, 3 classes, in shards of 5."""
    from kdistill.store import StoreWriter

    ids = np.arange(12)
    writer = StoreWriter(path, ids=ids, num_classes=3, teacher={"name": name}, dataset_fingerprint="d", shard_size=5)
    writer.write(ids, np.zeros((12, 3), dtype=np.float32))
    writer.close()
    return path


def test_store_shard_that_is_not_safetensors_is_named(tmp_path, kdistill):
    import json

    from kdistill.store.manifest import file_sha256

    for name in ("good", "bad"):
        tiny_store(tmp_path / name, name)
    shard = tmp_path / "bad" / "shard-00001.safetensors"
    shard.write_bytes(b"not safetensors at all, but a sha256 that matches the manifest")
    manifest = json.loads((tmp_path / "bad" / "manifest.json").read_text())
    manifest["shards"][1]["sha256"] = file_sha256(shard)
    (tmp_path / "bad" / "manifest.json").write_text(json.dumps(manifest))
    refused(kdistill("cache", "--ensemble", tmp_path / "good", tmp_path / "bad", "--store", tmp_path / "e"),
            f"{shard}: not a safetensors shard (", "the store is damaged")
    assert not (tmp_path / "e").exists()


# --- classification labels: the class count comes from them, and they are checked ---------------


def test_stray_label_is_refused_not_taken_for_extra_classes(tmp_path, kdistill):
    path = classification_arrays(tmp_path / "d.npz", labels=[*(np.arange(100) % 10), 12])
    refused(load_via_cli(kdistill, tmp_path, path), f"data.path: {str(path)!r}",
            "labels must be the consecutive integers 0..K-1, each in at least one row",
            "label 12 appears in 1 row but classes 10, 11 are absent", "renumber the classes 0..10")


BINARY = ("task=binary", "losses=[binary_kd]", "weights={task: 0.5, binary_kd: 0.5}")


@pytest.mark.parametrize(("labels", "task", "needle"), [
    ([0] * 40, (), "classification needs at least 2 classes; all 40 rows have label 0"),
    ([1] * 40, BINARY, "binary targets need both classes 0 and 1; all 40 rows are 1"),
    ([0, 1, 2, 1] * 10, BINARY, "binary targets must be 0 or 1; found [2] in 10 rows"),
    ([0, 1, 1.5, 1] * 10, (), "classification labels must be integers 0..C-1; found [1.5] in 10 rows"),
    ([*(np.arange(60) % 3), 3], ("data.test_fraction=0.5",), "class 3 has no training sample"),
])
def test_labels_that_do_not_make_the_task_are_refused(tmp_path, kdistill, labels, task, needle):
    path = classification_arrays(tmp_path / "d.npz", labels=labels)
    refused(load_via_cli(kdistill, tmp_path, path, *task), f"data.path: {str(path)!r}", needle)


# --- transfer sets and training inputs: rows of finite numbers ------------------------------------


def transfer_rows(path, rows: int, poison: float | None = None):
    """``rows`` digits-shaped (64) transfer inputs; with ``poison``, rows 3 and 7 hold that value."""
    x = np.zeros((rows, 64), dtype=np.float32)
    if poison is not None:
        x[3, 5], x[7, 0] = poison, poison
    np.save(path, x)
    return path


@pytest.mark.parametrize(("rows", "poison", "needle"), [
    (0, None, "holds no samples (inputs shaped (0, 64)); give at least one row"),
    (20, np.nan, "inputs hold NaN or infinite values in 2 rows of 20 (the first is row 3)"),
    (20, np.inf, "inputs hold NaN or infinite values in 2 rows of 20 (the first is row 3)"),
])
def test_transfer_set_without_rows_or_with_non_finite_values_is_refused(tmp_path, kdistill, rows, poison, needle):
    path = transfer_rows(tmp_path / "transfer.npy", rows, poison)
    refused(kdistill("cache", "--set", f"data.transfer={{path: {path}}}", "--from-predictions",
                     tmp_path / "never-read.npy", "--store", tmp_path / "s"),
            f"data.transfer.path: {str(path)!r}: {needle}")


@pytest.mark.parametrize("poison", [np.nan, -np.inf])
def test_training_inputs_with_non_finite_values_are_refused(tmp_path, kdistill, poison):
    path = tmp_path / "d.npz"
    x = np.zeros((30, 2))
    x[4, 1] = poison
    np.savez(path, x=x, y=np.arange(30) % 3)
    refused(load_via_cli(kdistill, tmp_path, path),
            f"data.path: {str(path)!r}: inputs (x) hold NaN or infinite values in 1 row of 30 (the first is row 4)")


# --- a black-box teacher's predictions: one integer id per row, each id once ----------------------


@pytest.fixture
def default_predictions():
    """Sample ids of the default recipe's data, in cache order, and made-up logits for them."""
    from kdistill.data import load_task_data
    from kdistill.recipe import load_recipe

    data = load_task_data(load_recipe(None).data, "classification")
    ids = np.concatenate([split.ids for split in (data.train, data.val, data.test, data.transfer) if split is not None])
    return ids, np.random.default_rng(0).normal(0, 3, (len(ids), data.output_dim))


@pytest.mark.parametrize(("problem", "needle"), [
    ("repeated_equal", "id {id} is given 2 times (rows 5, {last}, with the same predictions)"),
    ("repeated_different", "id {id} is given 2 times (rows 5, {last}, with different predictions)"),
    ("fractional", "ids must be integers; row 3 has id 12.5 (1 such row)"),
])
def test_prediction_ids_repeated_or_not_integers_are_refused(tmp_path, kdistill, default_predictions, problem, needle):
    ids, logits = default_predictions
    ids = ids.astype(np.float64)
    if problem == "fractional":
        ids[3] = 12.5  # once truncated to 12, which is another sample's id
    else:
        ids, logits = np.r_[ids, ids[5]], np.r_[logits, logits[5 if problem == "repeated_equal" else 6][None]]
    path = tmp_path / "mystery.npz"
    np.savez(path, predictions=logits, ids=ids)
    refused(kdistill("cache", "--from-predictions", path, "--store", tmp_path / "s"),
            f"--from-predictions: {str(path)!r}: " + needle.format(id=int(ids[5]), last=len(ids) - 1))
    assert not (tmp_path / "s" / "manifest.json").exists()


# --- kdistill cache --store: never deletes or mixes with a file kdistill did not write ------------


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_cache_into_a_directory_with_a_users_file_keeps_the_file(tmp_path, kdistill, default_predictions, overwrite):
    ids, logits = default_predictions
    np.savez(tmp_path / "mystery.npz", predictions=logits, ids=ids)
    store = tmp_path / "mine"
    store.mkdir()
    (store / "notes.tmp").write_text("my notes")
    (store / "shard-00000.safetensors.tmp").write_bytes(b"a temp file kdistill would write")
    refused(kdistill("cache", "--from-predictions", tmp_path / "mystery.npz", "--store", store, *overwrite),
            f"{store}: holds 1 entry kdistill did not write (e.g. 'notes.tmp')", "give another directory")
    assert (store / "notes.tmp").read_text() == "my notes"
    assert sorted(path.name for path in store.iterdir()) == ["notes.tmp", "shard-00000.safetensors.tmp"]


def test_cache_store_that_is_a_regular_file_is_refused(tmp_path, kdistill, default_predictions):
    ids, logits = default_predictions
    np.savez(tmp_path / "mystery.npz", predictions=logits, ids=ids)
    store = tmp_path / "store.txt"
    store.write_text("mine")
    refused(kdistill("cache", "--from-predictions", tmp_path / "mystery.npz", "--store", store),
            f"{store}: exists and is not a directory")
    assert store.read_text() == "mine"


def test_store_writer_removes_only_its_own_temporary_files(tmp_path):
    from kdistill.store import StoreReader, StoreWriter

    ids = np.arange(12)
    settings = {"ids": ids, "num_classes": 3, "teacher": {}, "dataset_fingerprint": "d", "shard_size": 5}
    writer = StoreWriter(tmp_path / "s", **settings)
    writer.write(ids[:6], np.zeros((6, 3), dtype=np.float32))
    del writer  # killed: one finished shard; a kill mid-write leaves its temp files
    for name in ("shard-00001.safetensors.tmp", "manifest.partial.json.tmp"):
        (tmp_path / "s" / name).write_bytes(b"half written")
    resumed = StoreWriter(tmp_path / "s", **settings)
    assert resumed.resume_from == 5
    assert sorted(path.name for path in (tmp_path / "s").iterdir()) == ["manifest.partial.json", "shard-00000.safetensors"]
    resumed.write(ids[5:], np.ones((7, 3), dtype=np.float32))
    resumed.close()
    assert StoreReader(tmp_path / "s").fetch(ids[5:6]).tolist() == [[1.0, 1.0, 1.0]]


def test_ensemble_into_one_of_its_members_is_refused(tmp_path, kdistill):
    for name in ("a", "b"):
        tiny_store(tmp_path / name, name)
    before = {path.name: path.read_bytes() for path in (tmp_path / "a").iterdir()}
    refused(kdistill("cache", "--ensemble", tmp_path / "a", tmp_path / "b", "--store", tmp_path / "a", "--overwrite"),
            f"--store: {tmp_path / 'a'} is also a member of --ensemble")
    assert {path.name: path.read_bytes() for path in (tmp_path / "a").iterdir()} == before


# --- kdistill run --out: never deletes or mixes with a file kdistill did not write --------------


def tree(directory) -> dict[str, bytes]:
    """Every file under ``directory`` by relative path, with its bytes."""
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


@requires_torch
@pytest.mark.parametrize("planted", ["notes.txt", "checkpoints/my-notes.txt", "teacher-store/table.csv"])
def test_run_into_a_directory_with_a_users_file_refuses_and_keeps_every_file(default_run, tmp_path, kdistill, planted):
    """A previous run's directory (finished, replaced with --overwrite) holding one file no run writes:
    refused by name before anything is written or deleted; a new directory holding one is refused too."""
    import shutil

    for out, overwrite in ((tmp_path / "previous", ["--overwrite"]), (tmp_path / "mine", [])):
        if overwrite:
            shutil.copytree(default_run, out)
        (out / planted).parent.mkdir(parents=True, exist_ok=True)
        (out / planted).write_text("the user's own file")
        before = tree(out)
        refused(kdistill("run", "--out", out, *overwrite, *set_args()),
                f"--out {str(out)!r} holds 1 file kdistill did not write (e.g. {planted!r})", "give another --out")
        assert tree(out) == before


# --- one writer per output directory --------------------------------------------------------------


@requires_torch
def test_two_runs_into_one_directory_one_wins_the_other_is_refused_at_once(tmp_path):
    import subprocess
    import sys

    import yaml

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    runs = [subprocess.Popen([sys.executable, "-m", "kdistill", "run", "--out", str(out),
                              *set_args("train.epochs=4", f"train.seed={seed}")],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [(run.pid, seed, *run.communicate(timeout=600), run.returncode) for run, seed in zip(runs, (1, 2))]
    codes = sorted(code for *_, code in results)
    assert codes == [0, 2], results
    (winner, seed, _, _, _), = [result for result in results if result[-1] == 0]
    _, _, _, err, _ = next(result for result in results if result[-1] == 2)
    assert err.startswith("kdistill: error: ") and "Traceback" not in err
    assert (f"--out {out}: another kdistill run is writing it (lock {out / '.kdistill.lock'} held by pid {winner}); "
            "wait for it or pick another directory") in err
    assert (out / "report.json").exists() and not (out / "INCOMPLETE").exists()
    assert not (out / ".kdistill.lock").exists()
    assert yaml.safe_load((out / "recipe.yaml").read_text())["train"]["seed"] == seed  # the winner's, not a mix


def test_cache_into_a_store_another_process_writes_is_refused(tmp_path, kdistill, default_predictions):
    from kdistill.lock import exclusive

    ids, logits = default_predictions
    np.savez(tmp_path / "mystery.npz", predictions=logits, ids=ids)
    store = tmp_path / "store"
    with exclusive(store, "--store", "kdistill cache"):  # as another cache process would hold it
        refused(kdistill("cache", "--from-predictions", tmp_path / "mystery.npz", "--store", store),
                f"--store {store}: another kdistill cache is writing it (lock {store / '.kdistill.lock'} held by "
                f"pid {os.getpid()}); wait for it or pick another directory")
        assert [path.name for path in store.iterdir()] == [".kdistill.lock"]
    assert not store.exists()  # the lock's directory, empty, went with it
    assert kdistill("cache", "--from-predictions", tmp_path / "mystery.npz", "--store", store)[0] == 0
    assert (store / "manifest.json").exists() and not (store / ".kdistill.lock").exists()


# --- model files that name code, or are not what they claim to be -------------------------------


class TouchOnUnpickle:
    """A pickle payload: unpickling it creates ``marker`` (what a malicious model file could run)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (self.marker,))


def saved_model(stem, backend: str = "torch"):
    """A small digits-shaped MLP of ``backend``'s zoo saved at ``stem``; returns the weights file."""
    kwargs = {"input_shape": [64], "output_dim": 10, "hidden": [8]}
    if backend == "torch":
        from kdistill.torch.models import FORMAT, save_model
        from kdistill.torch.zoo import ZOO
    else:
        from kdistill.jax.models import FORMAT, save_model
        from kdistill.jax.zoo import ZOO
    return save_model(ZOO["mlp"](**kwargs), {"format": FORMAT, "model": "mlp", "kwargs": kwargs}, stem)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_sidecar_naming_code_the_recipe_does_not_name_is_refused_unimported(tmp_path, kdistill, backend):
    import json

    pytest.importorskip("torch" if backend == "torch" else "flax")
    marker = tmp_path / "ran"
    weights = saved_model(tmp_path / "teacher", backend)
    sidecar = weights.with_suffix(".json")
    spec = json.loads(sidecar.read_text()) | {"model": "os:system", "kwargs": {"command": f"touch {marker}"}}
    sidecar.write_text(json.dumps(spec))
    out = tmp_path / "out"
    refused(kdistill("run", "--out", out, *set_args(f"backend={backend}", f"teacher.path={weights}")),
            f"teacher.path: {str(sidecar)!r} names the factory 'os:system', which is not a {backend} zoo model",
            "set teacher.model: 'os:system' beside teacher.path")
    assert not marker.exists() and not out.exists()


@requires_torch
def test_a_sidecar_may_name_the_import_path_its_recipe_section_names(tmp_path):
    from kd_factories import extra_classes

    from kdistill.torch.models import FORMAT, load_model, save_model

    kwargs = {"input_shape": [64], "output_dim": 10, "extra": 0}
    weights = save_model(extra_classes(**kwargs), {"format": FORMAT, "model": "kd_factories:extra_classes",
                                                   "kwargs": kwargs}, tmp_path / "teacher")
    with pytest.raises(KdistillError, match="names the factory 'kd_factories:extra_classes'"):
        load_model(weights, "teacher")
    assert load_model(weights, "teacher", factories=["kd_factories:extra_classes"]) is not None


@requires_torch
def test_a_pickled_teacher_is_not_unpickled_without_trust(tmp_path, kdistill):
    import torch

    marker = tmp_path / "unpickled"
    planted = tmp_path / "teacher.pt"
    torch.save(TouchOnUnpickle(marker), planted)
    out = tmp_path / "out"
    refused(kdistill("run", "--out", out, *set_args(f"teacher.path={planted}")),
            f"teacher.path: {str(planted)!r} is a pickled .pt file", "set teacher.trust_pickle: true",
            "(or pass --trust-pickle)", f"kdistill convert {planted} --out NAME")
    refused(kdistill("convert", planted, "--out", tmp_path / "converted", "--model", "mlp"),
            "convert: unpickling", "pass --trust-pickle")
    assert not marker.exists() and not out.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["teacher.pt"]


@requires_torch
def test_convert_turns_a_trusted_pickle_into_files_loaded_without_unpickling(tmp_path, kdistill):
    import torch

    from kdistill.torch.models import load_model
    from kdistill.torch.zoo import mlp

    torch.manual_seed(0)
    module = mlp([64], 10, hidden=[8]).eval()
    torch.save(module, tmp_path / "teacher.pt")
    code, out, err = kdistill("convert", tmp_path / "teacher.pt", "--out", tmp_path / "teacher", "--model", "mlp",
                              "--kwargs", "{input_shape: [64], output_dim: 10, hidden: [8]}", "--trust-pickle")
    assert code == 0, err
    converted = load_model(tmp_path / "teacher.safetensors").eval()
    x = torch.randn(5, 64)
    assert torch.equal(converted(x), module(x))
    refused(kdistill("convert", tmp_path / "teacher.pt", "--out", tmp_path / "teacher", "--model", "mlp",
                     "--kwargs", "{input_shape: [64], output_dim: 10, hidden: [8]}", "--trust-pickle"),
            f"--out: {tmp_path / 'teacher.safetensors'} exists")
    refused(kdistill("convert", tmp_path / "teacher.pt", "--out", tmp_path / "other", "--model", "mlp",
                     "--kwargs", "{input_shape: [64], output_dim: 10, hidden: [9]}", "--trust-pickle"),
            "--model: mlp with --kwargs", "does not fit the weights in")
    assert not (tmp_path / "other.safetensors").exists()


@requires_torch
@pytest.mark.parametrize("problem", ["text_as_safetensors", "truncated_safetensors", "sidecar_not_json"])
def test_a_model_file_that_is_not_what_it_claims_is_named(tmp_path, kdistill, problem):
    weights = saved_model(tmp_path / "teacher")
    if problem == "text_as_safetensors":
        weights.write_text("these are my notes, renamed\n")
        needle = f"teacher.path: {weights}: not a safetensors weights file ("
    elif problem == "truncated_safetensors":
        weights.write_bytes(weights.read_bytes()[:-40])
        needle = f"teacher.path: {weights}: not a safetensors weights file ("
    else:
        weights.with_suffix(".json").write_text("format: kdistill.torch/1\n")
        needle = f"teacher.path: {weights.with_suffix('.json')}: not a kdistill model sidecar (JSON) ("
    out = tmp_path / "out"
    refused(kdistill("run", "--out", out, *set_args(f"teacher.path={weights}")), needle)
    assert not out.exists()


@requires_torch
def test_a_factory_that_raises_is_named_with_its_field(tmp_path, kdistill, monkeypatch):
    (tmp_path / "raising_factories.py").write_text(
        "def boom(input_shape, output_dim):\n    raise ValueError('needs a GPU with 80 GB')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    refused(kdistill("run", "--out", out, *set_args("student={model: 'raising_factories:boom'}")),
            "student.model: the factory raising_factories:boom raised ValueError: needs a GPU with 80 GB")
    assert not out.exists()


# --- output paths that cannot be written, and a disk that fills up ---------------------------------


def mounted(*options: str, target) -> bool:
    """``mount OPTIONS... TARGET``; False where this process may not mount."""
    import subprocess

    try:
        return subprocess.run(["mount", *options, str(target)], capture_output=True).returncode == 0
    except OSError:
        return False


def unmount(target) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(target)], capture_output=True)


@requires_torch
def test_an_out_that_cannot_be_created_or_written_is_refused_before_training(tmp_path, kdistill):
    blocker = tmp_path / "file.txt"
    blocker.write_text("mine")
    out = blocker / "run"
    refused(kdistill("run", "--out", out, *set_args()),
            f"--out {str(out)!r} cannot be created: {str(blocker)!r} is a file, not a directory")
    assert blocker.read_text() == "mine"

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    if not mounted("--bind", readonly, target=readonly):
        pytest.skip("mounting is not permitted here: the read-only directory is not tested")
    try:
        if not mounted("-o", "remount,bind,ro", target=readonly):
            pytest.skip("a read-only remount is not permitted here")
        refused(kdistill("run", "--out", readonly / "run", *set_args()),
                f"--out {str(readonly / 'run')!r} cannot be written: {str(readonly)!r} is on a read-only file system")
    finally:
        unmount(readonly)
    assert list(readonly.iterdir()) == []


@requires_torch
def test_a_full_disk_is_named_by_file_and_leaves_the_run_incomplete(tmp_path, kdistill):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not mounted("-t", "tmpfs", "-o", "size=64k", "tmpfs", target=disk):
        pytest.skip("mounting a tmpfs is not permitted here: the full disk is not tested")
    try:
        out = disk / "run"
        err = refused(kdistill("run", "--out", out, *set_args()), "cannot write this file (No space left on device)",
                      f"{out / 'INCOMPLETE'} holds this error", f"--out {out} --resume")
        assert err.startswith(f"kdistill: error: {out / 'checkpoints'}/teacher.ckpt.safetensors: "), err
        assert "No space left on device" in (out / "INCOMPLETE").read_text()
        assert not (out / "report.json").exists() and not (out / ".kdistill.lock").exists()
    finally:
        unmount(disk)
