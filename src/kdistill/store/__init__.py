"""The soft-target store: a teacher's raw outputs on disk, keyed by stable sample id.

Framework-neutral (numpy and safetensors only; importing it loads no deep-learning framework).

Layout — one directory:

- ``manifest.json``: a :class:`Manifest` (format and kdistill version, teacher identity, dataset
  fingerprint, class count, dtype, k, shard size, sample count, sha256 of the ordered expected
  ids, and per shard its file name, count, sha256 and first/last id). It exists only once the
  store is complete; while a cache run is in progress, ``manifest.partial.json`` records the
  shards finished so far.
- ``shard-00000.safetensors``, ``shard-00001.safetensors``, ...: ``shard_size`` samples each (the
  last one may hold fewer), in the order of the expected ids. Every shard holds ``ids`` (int64,
  (n,)) and either

  - dense: ``logits`` (float32 or float16, (n, C)), the raw teacher logits (no temperature); or
  - top-k: ``indices`` (int32, (n, k)) of the k largest logits, largest first (ties: lower class
    index first), ``values`` (float32 or float16, (n, k)) the raw logits at those indices, and
    ``tail_logsumexp`` (float32, (n,)) = log Σ_{c ∉ top-k} exp(z_c), computed in float64 from the
    float32 logits (−inf when k = C).

  A store cached with augmentation views (``kdistill cache --views K``; manifest ``views`` = K and
  ``augment``, the settings that drew them) has one more axis after the sample axis: K + 1 rows per
  sample, view 0 the sample itself and views 1..K its augmentations (:mod:`kdistill.data.augment`),
  so ``logits`` is (n, K + 1, C), and so on. Samples are keyed by id, views by their index.

Top-k tail treatment (:func:`reconstruct_logits`, used by :meth:`StoreReader.fetch`): each of
the C − k missing classes gets the same logit ``tail_logsumexp − log(C − k)``, i.e. the tail mass
is spread uniformly over the missing classes. The logsumexp of the reconstructed row then equals
that of the true row, so at temperature T = 1 the softmax of the reconstruction is exact: every
kept class has its true probability and the missing classes together carry exactly the true tail
mass (up to float rounding, and to float16 rounding of ``values`` in a float16 store). For T ≠ 1
it is an approximation: the kept classes' tempered probabilities are renormalised against
(C − k)·exp((tail_logsumexp − log(C − k)) / T) instead of the true Σ exp(z_c / T) over the
missing classes — an upper bound on it for T > 1 and a lower bound for T < 1 (equality iff the
missing logits are all equal). Losses that need every class's exact logit should check the store
with ``needs_dense=True``.

Writes are atomic and resumable (:class:`StoreWriter`); readers memory-map the shards and verify
checksums, ids and shapes (:class:`StoreReader`).
"""

from kdistill.store.manifest import MANIFEST, PARTIAL_MANIFEST, Manifest, ShardInfo
from kdistill.store.reader import StoreReader, reconstruct_logits, store_bytes_per_sample
from kdistill.store.writer import StoreWriter

__all__ = [
    "MANIFEST",
    "PARTIAL_MANIFEST",
    "Manifest",
    "ShardInfo",
    "StoreReader",
    "StoreWriter",
    "reconstruct_logits",
    "store_bytes_per_sample",
]
