"""Data-parallel distillation on PyTorch's own engine: ``torch.distributed`` with DDP, launched by
``torchrun`` (``kdistill run --nproc N`` starts it for you).

Every process (rank) loads the same data and draws the same global batch order; rank r of N takes
the r-th contiguous share of each global batch (shares differ by at most one sample). The student
(with its hint adapters) is wrapped in DistributedDataParallel, the frozen teacher is not (it has
no gradients) and runs on its rank's share only. Each part of the loss is weighted by the rank's
share of the rows it averages over, times N, so DDP's gradient mean equals the gradient of the
single-process loss on the whole global batch: the same recipe gives the same student with any N
(up to float summation order), for models without dropout (each rank draws its own dropout masks).

Rank 0 alone writes: progress, checkpoints, the saved models and the report. Every rank evaluates
the full validation set (the parameters are identical on every rank). Backend ``gloo`` on the
CPU, ``nccl`` on CUDA devices. The process group is destroyed on every exit path.
"""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from kdistill.errors import KdistillError
from kdistill.ranks import is_main_process, world_size

__all__ = ["Ranks", "barrier", "check_last_batch", "is_main_process", "launch", "local_device", "setup", "teardown"]


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job."""

    rank: int
    world_size: int

    def bounds(self, n: int) -> tuple[int, int]:
        """The [start, end) of this rank's contiguous share of ``n`` rows."""
        return n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size

    def share(self, local: int, total: int) -> float:
        """The factor that turns this rank's mean over ``local`` of ``total`` rows into its part of
        the global mean under DDP's gradient averaging: local / total · N."""
        return local / total * self.world_size

    def split(self, rows: np.ndarray, transfer_rows: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray | None, dict[str, float]]:
        """This rank's share of a global batch (training rows, transfer rows) and the factors of
        the loss parts that average over the labeled rows and over all rows."""
        labeled, unlabeled = len(rows), 0 if transfer_rows is None else len(transfer_rows)
        rows = rows[slice(*self.bounds(labeled))]
        if transfer_rows is not None:
            transfer_rows = transfer_rows[slice(*self.bounds(unlabeled))]
        local = len(rows) + (0 if transfer_rows is None else len(transfer_rows))
        return rows, transfer_rows, {"labeled": self.share(len(rows), labeled),
                                     "all": self.share(local, labeled + unlabeled)}


def check_last_batch(train_samples: int, batch_size: int, processes: int) -> None:
    """Every process needs at least one sample of every global batch, the last one included."""
    last = train_samples - (-(-train_samples // batch_size) - 1) * batch_size
    if last < processes:
        raise KdistillError(f"train.batch_size: {batch_size} leaves a last batch of {last} sample(s) per epoch, "
                            f"fewer than the {processes} processes; pick another batch size")


def local_device(device: torch.device) -> torch.device:
    """On CUDA under torchrun, each process takes the GPU of its LOCAL_RANK."""
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def setup(device: torch.device) -> Ranks | None:
    """Join the process group when started by torchrun with WORLD_SIZE > 1; None in a single process."""
    if world_size() == 1:
        return None
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size())


def teardown() -> None:
    """Destroy the process group, after collecting the DDP wrappers of finished fits: a wrapper
    freed only at interpreter exit, after its group is gone, aborts the process."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``kdistill ARGV`` in ``nproc`` processes under torchrun on this machine, on a free port
    (parallel jobs do not collide); returns the job's exit code (non-zero if any rank failed:
    torchrun then stops the others)."""
    if nproc < 1:
        raise KdistillError(f"--nproc: {nproc} must be >= 1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "kdistill", *argv]
    return subprocess.run(command, check=False).returncode
