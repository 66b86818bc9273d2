"""Soft-target store size per sample for a 1000-class teacher: dense float32, float16 and top-k.

Logits come from a synthetic 1000-class teacher (a random linear map of random features, so the
distributions are peaked but not one-hot). Prints bytes per sample (shards + manifest ÷ samples)
and the ratio to dense float32; the target for top-20 is at least 10× smaller.

    python benchmarks/store_size.py --samples 20000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from kdistill.store import StoreWriter, store_bytes_per_sample

CLASSES = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--shard-size", type=int, default=8192)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    features = rng.normal(size=(args.samples, 64)).astype(np.float32)
    logits = features @ rng.normal(scale=0.5, size=(64, CLASSES)).astype(np.float32)
    ids = np.arange(args.samples, dtype=np.int64)
    work = Path(tempfile.mkdtemp(prefix="kdistill-store-size-"))
    rows = []
    for name, dtype, k in (("dense float32", "float32", None), ("dense float16", "float16", None),
                           ("top-5 float16", "float16", 5), ("top-20 float16", "float16", 20),
                           ("top-20 float32", "float32", 20)):
        writer = StoreWriter(work / name.replace(" ", "-"), ids=ids, num_classes=CLASSES, teacher={"name": "synthetic"},
                             dataset_fingerprint="synthetic-1000", dtype=dtype, k=k, shard_size=args.shard_size)
        writer.write(ids, logits)
        writer.close()
        rows.append((name, store_bytes_per_sample(work / name.replace(" ", "-"))))
    shutil.rmtree(work)
    command = " ".join(["python", "benchmarks/store_size.py", *sys.argv[1:]])
    print(f"\n`{command}` — {args.samples} samples, {CLASSES} classes\n")
    print("| storage | bytes per sample | fp32 ÷ this |\n|---|---:|---:|")
    for name, size in rows:
        print(f"| {name} | {size:,.1f} | {rows[0][1] / size:.1f}× |")


if __name__ == "__main__":
    main()
