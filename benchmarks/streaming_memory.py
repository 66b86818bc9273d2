"""Peak resident memory of one training epoch on 7,000 vs 70,000 Fashion-MNIST images, streamed
from a PNG folder vs decoded into memory, each in a fresh child process.

The parent writes the first N images of Fashion-MNIST (training then test images) as PNG files
(Pillow) with an index of ids and labels, split 80/10/10 into train/val/test. Each child builds
the splits from that folder — streamed: every split read on demand by the reader
(:mod:`kdistill.data.stream`); in memory: every image decoded into one array first — and trains
the ``fashion_mnist_cnn`` recipe's student one epoch on PyTorch, validation included. Printed:
each child's peak RSS (``VmHWM``) and the growth from N to 10·N images, streamed beside in memory.

    nice -n 10 python benchmarks/streaming_memory.py --images 7000 70000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import timing
from png_folder import PngFiles, write_png_folder

from kdistill.data.splits import Split, TaskData

SPLITS = ("train", "val", "test")


def write_folder(images: int, directory: Path) -> None:
    """The first ``images`` Fashion-MNIST images as PNGs, their split and labels in ``index.npz``."""
    from kdistill.data import load_task_data
    from kdistill.recipe import DataConfig

    full = load_task_data(DataConfig(dataset="fashion_mnist"), "classification")
    x, y, ids = (np.concatenate([getattr(getattr(full, name), field) for name in SPLITS]) for field in ("x", "y", "ids"))
    order = np.argsort(ids)[:images]
    x, y, ids = x[order], y[order], ids[order]
    cuts = np.cumsum([int(0.8 * images), int(0.1 * images)])
    parts = dict(zip(SPLITS, np.split(np.arange(images), cuts)))
    data = TaskData("fashion_png", "classification", *(Split(x[rows], y[rows], ids[rows]) for rows in parts.values()),
                    output_dim=10)
    write_png_folder(data, directory)
    np.savez(directory / "index.npz", **{f"{name}_{field}": getattr(getattr(data, name), field)
                                         for name in SPLITS for field in ("y", "ids")})


def child(directory: Path, in_memory: bool) -> None:
    """One epoch on the folder's images; prints the peak resident memory in MiB."""
    import torch

    from kdistill import backends
    from kdistill.objective import Objective
    from kdistill.recipe import load_recipe
    from kdistill.training.loop import fit

    index = np.load(directory / "index.npz")
    splits = {}
    for name in SPLITS:
        ids = index[f"{name}_ids"]
        files = PngFiles([directory / name / f"{i}.png" for i in ids])
        splits[name] = Split(files[:] if in_memory else files, index[f"{name}_y"], ids)
    data = TaskData("fashion_png", "classification", splits["train"], splits["val"], splits["test"], output_dim=10)
    recipe = load_recipe("fashion_mnist_cnn", ["data.transfer=null", "train.epochs=1", "train.progress=false",
                                               "train.device=cpu"])
    torch.set_num_threads(1)  # as benchmarks/streaming.py: the shared machine's cores are contended
    backend = backends.load("torch")
    device = backend.device("cpu")
    student, _ = backend.build(recipe.student, data, "student", 0, device)
    fit("scratch", backend, backend.distiller(student, Objective.task_only("classification"), None, (), None, device, 0),
        data, recipe.train, device)
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """This process's peak resident memory (``VmHWM``). Not ``ru_maxrss``: Linux carries the RSS
    a child had when forked from its parent across ``exec``, so a child of a large parent reports
    the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM (Linux only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, nargs=2, default=[7000, 70000])
    parser.add_argument("--child", nargs=2, metavar=("DIR", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(Path(args.child[0]), args.child[1] == "memory")
    peaks: dict[str, dict[int, float]] = {"streamed": {}, "in_memory": {}}
    with tempfile.TemporaryDirectory() as root:
        for images in args.images:
            directory = Path(root) / str(images)
            write_folder(images, directory)
            for mode, name in (("stream", "streamed"), ("memory", "in_memory")):
                done = subprocess.run([sys.executable, __file__, "--child", str(directory), mode], check=True,
                                      capture_output=True, text=True)
                peaks[name][images] = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mib"]
                print(f"{images} images, {name}: peak RSS {peaks[name][images]:.0f} MiB", flush=True)
    small, large = args.images
    summary = {"peak_rss_mib": peaks,
               "growth": {name: by_size[large] / by_size[small] - 1 for name, by_size in peaks.items()},
               "machine": timing.machine({})}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
