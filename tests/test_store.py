"""The soft-target store: round trips, top-k reconstruction, atomic resumable writes and every
reader check, on real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from kdistill.errors import KdistillError
from kdistill.store import MANIFEST, PARTIAL_MANIFEST, StoreReader, StoreWriter, store_bytes_per_sample
from kdistill.store.manifest import file_sha256

CLASSES = 7
SETTINGS = {
    "num_classes": CLASSES,
    "teacher": {"name": "teacher", "backend": "numpy", "weights_sha256": "0" * 64},
    "dataset_fingerprint": "f" * 64,
    "shard_size": 10,
}


def make_data(n: int = 53, classes: int = CLASSES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unsorted, non-contiguous ids and float32 logits with a wide range."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(10 * n)[:n].astype(np.int64) + 100
    return ids, rng.normal(scale=4.0, size=(n, classes)).astype(np.float32)


def write_store(path: Path, ids: np.ndarray, logits: np.ndarray, batch: int = 8, **settings) -> Path:
    """Write (or resume) a store, in batches that do not divide the shard size."""
    writer = StoreWriter(path, ids=ids, **{**SETTINGS, **settings})
    for start in range(writer.resume_from, len(ids), batch):
        writer.write(ids[start : start + batch], logits[start : start + batch])
    writer.close()
    return path


def store_files(path: Path) -> dict[str, bytes]:
    return {file.name: file.read_bytes() for file in sorted(path.iterdir())}


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def patch_manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    (path / MANIFEST).write_text(json.dumps({**manifest, **changes}))


# --- round trips ------------------------------------------------------------------------------


def test_dense_float32_round_trip_is_exact_in_any_order(tmp_path):
    ids, logits = make_data()
    store = write_store(tmp_path / "s", ids, logits)
    shards = [f"shard-{i:05d}.safetensors" for i in range(6)]
    assert sorted(file.name for file in store.iterdir()) == [MANIFEST, *shards]
    reader = StoreReader(store)
    np.testing.assert_array_equal(reader.ids, ids)
    order = np.random.default_rng(1).permutation(len(ids))[:20]
    fetched = reader.fetch(ids[order])
    assert fetched.dtype == np.float32
    np.testing.assert_array_equal(fetched, logits[order])
    np.testing.assert_array_equal(reader.fetch(ids), logits)
    with safe_open(store / "shard-00005.safetensors", framework="numpy") as shard:  # readable natively
        np.testing.assert_array_equal(shard.get_tensor("logits"), logits[50:])
        np.testing.assert_array_equal(shard.get_tensor("ids"), ids[50:])


def test_float16_round_trip_within_float16_rounding(tmp_path):
    ids, logits = make_data()
    reader = StoreReader(write_store(tmp_path / "s", ids, logits, dtype="float16"))
    order = np.random.default_rng(2).permutation(len(ids))
    fetched = reader.fetch(ids[order])
    assert fetched.dtype == np.float32
    np.testing.assert_array_equal(fetched, logits[order].astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(fetched, logits[order], rtol=2.0**-11, atol=0)


def test_top_k_with_every_class_is_exact(tmp_path):
    ids, logits = make_data()
    reader = StoreReader(write_store(tmp_path / "s", ids, logits, k=CLASSES))
    order = np.random.default_rng(3).permutation(len(ids))
    np.testing.assert_array_equal(reader.fetch(ids[order]), logits[order])
    assert np.all(reader.fetch_sparse(ids)[2] == -np.inf)


def test_top_k_keeps_the_softmax_exact_at_t1(tmp_path):
    ids, logits = make_data()
    k = 3
    reader = StoreReader(write_store(tmp_path / "s", ids, logits, k=k))
    order = np.random.default_rng(4).permutation(len(ids))
    indices, values, tail = reader.fetch_sparse(ids[order])
    source = logits[order]
    true_top = np.argsort(-source, axis=1)[:, :k]
    np.testing.assert_array_equal(indices, true_top)
    np.testing.assert_array_equal(values, np.take_along_axis(source, true_top, axis=1))
    kept = np.zeros_like(source, dtype=bool)
    np.put_along_axis(kept, true_top, True, axis=1)
    true_tail = np.log(np.sum(np.where(kept, 0.0, np.exp(source.astype(np.float64))), axis=1))
    np.testing.assert_allclose(tail, true_tail, rtol=1e-6)

    rebuilt = reader.fetch(ids[order])
    p_true, p_rebuilt = softmax(source), softmax(rebuilt)
    np.testing.assert_allclose(p_rebuilt[kept], p_true[kept], rtol=1e-5)
    np.testing.assert_allclose(np.where(kept, 0, p_rebuilt).sum(1), np.where(kept, 0, p_true).sum(1), rtol=1e-5)
    # the documented tail treatment: every missing class gets tail_logsumexp - log(C - k)
    expected_fill = np.broadcast_to((tail - np.log(CLASSES - k))[:, None], rebuilt.shape)
    np.testing.assert_allclose(rebuilt[~kept], expected_fill[~kept], rtol=1e-6)


@pytest.mark.parametrize("id_span", ["compact", "sparse"])  # ids looked up by table or by binary search
@pytest.mark.parametrize("in_memory", [True, False])  # one gather over all shards, or one per shard
def test_fetch_is_the_same_whichever_way_ids_are_found_and_rows_gathered(tmp_path, monkeypatch, id_span, in_memory):
    import kdistill.store.reader as reader_module

    if not in_memory:
        monkeypatch.setattr(reader_module, "IN_MEMORY_BYTES", 0)
    rng = np.random.default_rng(5)
    ids = rng.permutation(60)[:53] - 7 if id_span == "compact" else rng.permutation(10**6)[:53] * 10**9
    logits = rng.normal(scale=4.0, size=(len(ids), CLASSES)).astype(np.float32)
    order = rng.permutation(len(ids))[:30]
    reader = StoreReader(write_store(tmp_path / "dense", ids, logits))
    assert (reader._position_of is not None) == (id_span == "compact")
    assert (reader._whole is not None) == in_memory
    np.testing.assert_array_equal(reader.fetch(ids[order]), logits[order])
    np.testing.assert_array_equal(reader.fetch(ids[order][:0]), logits[:0])
    gap = next(i for i in range(ids.min() + 1, ids.max()) if i not in set(ids))  # inside the span, not stored
    for absent in ([ids.min() - 1], [ids.max() + 1], [gap]):
        with pytest.raises(KdistillError, match=f"1 requested sample ids are not in the store \\(e.g. {absent[0]}\\)"):
            reader.fetch(np.concatenate([ids[:3], absent]))
    sparse = StoreReader(write_store(tmp_path / "top_k", ids, logits, k=CLASSES))
    indices, values, _ = sparse.fetch_sparse(ids[order])
    np.testing.assert_array_equal(np.take_along_axis(logits[order], indices, axis=1), values)
    views = rng.normal(scale=4.0, size=(len(ids), 3, CLASSES)).astype(np.float32)
    viewed = StoreReader(write_store(tmp_path / "views", ids, views, views=2, augment={"shift": 1}))
    chosen = rng.integers(3, size=len(order))
    np.testing.assert_array_equal(viewed.fetch(ids[order], chosen), views[order, chosen])
    np.testing.assert_array_equal(viewed.fetch(ids[order]), views[order, 0])


def test_bytes_per_sample_counts_the_files(tmp_path):
    ids, logits = make_data(classes=100)
    dense = write_store(tmp_path / "dense", ids, logits, num_classes=100)
    sparse = write_store(tmp_path / "sparse", ids, logits, num_classes=100, k=5, dtype="float16")
    total = sum(file.stat().st_size for file in dense.iterdir())
    assert store_bytes_per_sample(dense) == pytest.approx(total / len(ids))
    assert store_bytes_per_sample(dense) > 100 * 4 + 8  # logits and id
    assert store_bytes_per_sample(sparse) < store_bytes_per_sample(dense) / 3


# --- atomic, resumable writes -----------------------------------------------------------------


def test_abandoned_writer_resumes_to_identical_bytes(tmp_path):
    ids, logits = make_data()
    reference = store_files(write_store(tmp_path / "ref", ids, logits))
    store = tmp_path / "s"
    writer = StoreWriter(store, ids=ids, **SETTINGS)
    for start in range(0, 24, 8):
        writer.write(ids[start : start + 8], logits[start : start + 8])
    del writer  # stopped without close: 2 finished shards, 4 samples lost in memory
    (store / "shard-00002.safetensors.tmp").write_bytes(b"half a shard")  # left by a kill mid-write
    (store / "shard-00002.safetensors").write_bytes(b"renamed, never recorded")

    resumed = StoreWriter(store, ids=ids, **SETTINGS)
    assert resumed.resume_from == 20
    assert not (store / "shard-00002.safetensors.tmp").exists() and not (store / "shard-00002.safetensors").exists()
    write_store(store, ids, logits, batch=5)
    assert store_files(store) == reference


KILLED_WRITER = """
import json, sys, time
import numpy as np
from kdistill.store import StoreWriter
ids, logits = np.load(sys.argv[1]), np.load(sys.argv[2])
writer = StoreWriter(sys.argv[3], ids=ids, **json.loads(sys.argv[4]))
for start in range(0, len(ids), 4):
    writer.write(ids[start : start + 4], logits[start : start + 4])
    time.sleep(0.1)
writer.close()
"""


def test_sigkilled_writer_resumes_to_identical_bytes(tmp_path):
    ids, logits = make_data()
    reference = store_files(write_store(tmp_path / "ref", ids, logits))
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "logits.npy", logits)
    store = tmp_path / "s"
    args = [str(tmp_path / "ids.npy"), str(tmp_path / "logits.npy"), str(store), json.dumps(SETTINGS)]
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, *args])
    deadline = time.monotonic() + 60
    while not ((store / PARTIAL_MANIFEST).exists() and json.loads((store / PARTIAL_MANIFEST).read_text())["shards"]):
        assert process.poll() is None and time.monotonic() < deadline, "the writer ended before it could be killed"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (store / MANIFEST).exists()
    with pytest.raises(KdistillError, match="incomplete store .* resume"):
        StoreReader(store)

    resumed = StoreWriter(store, ids=ids, **SETTINGS)
    assert 10 <= resumed.resume_from < len(ids) and resumed.resume_from % 10 == 0
    write_store(store, ids, logits)
    assert store_files(store) == reference


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_classes", CLASSES + 1),
        ("dtype", "float16"),
        ("k", 2),
        ("shard_size", 5),
        ("teacher", {"name": "another"}),
        ("dataset_fingerprint", "e" * 64),
        ("ids", None),
    ],
)
def test_resume_with_other_settings_names_the_field(tmp_path, field, value):
    ids, logits = make_data()
    writer = StoreWriter(tmp_path, ids=ids, **SETTINGS)
    writer.write(ids[:10], logits[:10])
    changed = {"ids": ids[::-1].copy()} if field == "ids" else {"ids": ids, field: value}
    name = "ids_sha256" if field == "ids" else field
    with pytest.raises(KdistillError, match=f"{name} differs") as error:
        StoreWriter(tmp_path, **{**SETTINGS, **changed})
    if field != "ids":
        stored = json.loads(json.dumps({"dtype": "float32", "k": None, **SETTINGS}[field], sort_keys=True))
        assert f"stored {stored!r}, requested {value!r}" in str(error.value)


def test_complete_store_is_replaced_only_with_overwrite(tmp_path):
    ids, logits = make_data()
    write_store(tmp_path, ids, logits)
    with pytest.raises(KdistillError, match="complete store; pass overwrite=True"):
        StoreWriter(tmp_path, ids=ids, **SETTINGS)
    writer = StoreWriter(tmp_path, ids=ids[:12], **{**SETTINGS, "dtype": "float16"}, overwrite=True)
    assert writer.resume_from == 0 and not list(tmp_path.iterdir())
    writer.write(ids[:12], logits[:12])
    writer.close()
    np.testing.assert_array_equal(StoreReader(tmp_path).fetch(ids[:12]), logits[:12].astype(np.float16))


def test_writer_rejects_bad_batches(tmp_path):
    ids, logits = make_data()
    writer = StoreWriter(tmp_path, ids=ids, **SETTINGS, dtype="float16")
    with pytest.raises(KdistillError, match=f"sample 1 must have id {ids[1]}, got {ids[2]}"):
        writer.write(ids[[0, 2]], logits[:2])
    with pytest.raises(KdistillError, match=r"logits must be \(batch, num_classes\) = \(2, 7\)"):
        writer.write(ids[:2], logits[:2, :3])
    bad = logits[:2].copy()
    bad[1, 4] = 1e5  # beyond the float16 range
    with pytest.raises(KdistillError, match=f"sample id {ids[1]} are NaN, \\+inf or outside the float16 range"):
        writer.write(ids[:2], bad)
    with pytest.raises(KdistillError, match="only 0 of 53 samples were written"):
        writer.close()
    with pytest.raises(KdistillError, match="k: Input should be greater than or equal to 1"):
        StoreWriter(tmp_path / "other", ids=ids, **SETTINGS, k=0)


# --- reader checks ----------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path) -> Path:
    ids, logits = make_data()
    return write_store(tmp_path / "s", ids, logits, k=3)


def test_flipped_byte_is_detected_and_named(store):
    shard = store / "shard-00002.safetensors"
    expected = file_sha256(shard)
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(KdistillError, match="shard-00002.safetensors: checksum mismatch") as error:
        StoreReader(store)
    assert expected in str(error.value) and file_sha256(shard) in str(error.value)


@pytest.mark.parametrize("verify", [True, False])
def test_truncated_shard_is_named(store, verify):
    shard = store / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.raises(KdistillError, match="shard-00001.safetensors: (checksum mismatch|not a safetensors shard)"):
        StoreReader(store, verify=verify)


def test_ids_that_disagree_with_the_manifest(store, tmp_path):
    patch_manifest(store, ids_sha256="0" * 64)
    with pytest.raises(KdistillError, match="sample ids in the shards do not match the manifest"):
        StoreReader(store)

    ids, logits = make_data()
    other = write_store(tmp_path / "other", ids + 10_000, logits, k=3)  # same layout, other ids
    (store / "shard-00001.safetensors").write_bytes((other / "shard-00001.safetensors").read_bytes())
    manifest = json.loads((store / MANIFEST).read_text())
    manifest["shards"][1]["sha256"] = file_sha256(store / "shard-00001.safetensors")
    (store / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(KdistillError, match=f"shard-00001.safetensors: ids run from {ids[10] + 10_000}"):
        StoreReader(store)


def test_check_names_each_mismatch(store):
    reader = StoreReader(store)
    ids = reader.ids
    reader.check(ids=ids[:20], num_classes=CLASSES, dataset_fingerprint=SETTINGS["dataset_fingerprint"])
    with pytest.raises(KdistillError, match="dataset fingerprint differs"):
        reader.check(dataset_fingerprint="e" * 64)
    with pytest.raises(KdistillError, match=r"3 of 23 training sample ids are not in the store \(e.g. 1, 2, 3\)"):
        reader.check(ids=np.concatenate([ids[:20], [3, 1, 2]]))
    with pytest.raises(KdistillError, match="class count differs \\(store 7, student 10\\)"):
        reader.check(num_classes=10)
    with pytest.raises(KdistillError, match="top-3 logits per sample but the loss needs dense logits"):
        reader.check(needs_dense=True)
    with pytest.raises(KdistillError, match="fingerprint differs.*; class count differs"):
        reader.check(dataset_fingerprint="e", num_classes=2)
    with pytest.raises(KdistillError, match=r"2 requested sample ids are not in the store \(e.g. 1, 5\)"):
        reader.fetch(np.array([5, ids[0], 1]))


def test_dense_store_passes_needs_dense(tmp_path):
    ids, logits = make_data()
    reader = StoreReader(write_store(tmp_path, ids, logits))
    reader.check(needs_dense=True)
    with pytest.raises(KdistillError, match="stores dense logits"):
        reader.fetch_sparse(ids[:2])


def test_partial_store_and_missing_store(tmp_path):
    ids, logits = make_data()
    writer = StoreWriter(tmp_path / "s", ids=ids, **SETTINGS)
    writer.write(ids[:25], logits[:25])
    with pytest.raises(KdistillError, match=r"incomplete store \(20 of 53 samples in 2 shards\).*resume"):
        StoreReader(tmp_path / "s")
    with pytest.raises(KdistillError, match="not a soft-target store: manifest.json is missing"):
        StoreReader(tmp_path / "nothing")


def test_import_loads_no_framework():
    code = (
        "import sys, kdistill.store;"
        "loaded = [m for m in ('torch', 'tensorflow', 'jax', 'keras') if m in sys.modules];"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
