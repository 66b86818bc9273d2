"""The PyTorch training loop shared by teacher, distilled student and scratch twin.

Seeded and deterministic on CPU: the batch order and dropout of epoch ``e`` depend only on
``(seed, e)``, so a run resumed from the checkpoint of epoch ``e`` continues exactly as an
uninterrupted one. A checkpoint is written atomically after every epoch; a non-finite loss stops
training with the step number and leaves the last good checkpoint in place.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kdistill.data.augment import augment as augment_views
from kdistill.data.augment import view_ids
from kdistill.data.splits import Split, TaskData
from kdistill.errors import KdistillError
from kdistill.progress import epoch_progress
from kdistill.recipe import AugmentConfig, TrainConfig
from kdistill.report.metrics import PRIMARY, task_metrics
from kdistill.torch import distributed
from kdistill.torch.distiller import Distiller
from kdistill.training import CHECK_EVERY, EpochPlan, History, check_finite

def tensors(split: Split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = torch.from_numpy(np.ascontiguousarray(split.x)).to(device)
    y = None if split.y is None else torch.from_numpy(np.ascontiguousarray(split.y)).to(device)
    return x, y


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> np.ndarray:
    """Raw outputs (logits at T = 1) in eval mode, as float64 numpy."""
    was_training = model.training
    model.eval()
    outputs = torch.cat([model(x[start:start + batch_size]) for start in range(0, len(x), batch_size)])
    model.train(was_training)
    return outputs.double().cpu().numpy()


def make_optimizer(parameters: list[nn.Parameter], name: str, lr: float, weight_decay: float,
                   momentum: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    optimizer = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return optimizer(parameters, lr=lr, weight_decay=weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, name: str, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule: constant, cosine to 0 over the run, or ×0.1 at 1/2 and 3/4 of it."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    if name == "step":
        milestones = [total_steps // 2, (3 * total_steps) // 4]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Batch:
    """One step's rows of the training and transfer splits (this rank's share under DDP), the
    loss-part factors of that share, and, where needed, the rows' sample ids and view ids."""

    rows: np.ndarray
    transfer_rows: np.ndarray | None
    share: dict[str, float] | None
    ids: np.ndarray | None
    views: np.ndarray | None


def epoch_batches(plan: EpochPlan, ranks: distributed.Ranks | None, data: TaskData, seed: int, epoch: int,
                  offline: bool, augment: AugmentConfig | None, stored_views: int | None) -> list[Batch]:
    """Every step of an epoch, worked out ahead (numpy only): rows, rank share, ids and views."""
    batches = []
    for step in range(plan.steps):
        rows, transfer_rows = plan.batch(step)
        share = None
        if ranks is not None:
            rows, transfer_rows, share = ranks.split(rows, transfer_rows)
        ids = views = None
        if offline or augment is not None:
            ids = data.train.ids[rows] if transfer_rows is None else \
                np.concatenate([data.train.ids[rows], data.transfer.ids[transfer_rows]])
        if augment is not None:
            views = view_ids(seed, epoch, ids, stored_views)
        batches.append(Batch(rows, transfer_rows, share, ids, views))
    return batches


TeacherOutputs = Callable[[np.ndarray, np.ndarray | None], np.ndarray | torch.Tensor]


def _fetch_chunk(teacher_outputs: TeacherOutputs, chunk: list[Batch], device: torch.device) -> tuple[torch.Tensor, ...]:
    """The teacher outputs of several steps in one read (a store's) or one call (a foreign
    teacher's) and one copy, split per step."""
    ids = np.concatenate([batch.ids for batch in chunk])
    views = None if chunk[0].views is None else np.concatenate([batch.views for batch in chunk])
    outputs = teacher_outputs(ids, views)
    outputs = (outputs if isinstance(outputs, torch.Tensor) else torch.from_numpy(outputs)).to(device)
    return torch.split(outputs, [len(batch.ids) for batch in chunk])


def fit(role: str, distiller: Distiller, data: TaskData, config: TrainConfig, device: torch.device,
        checkpoint: Path | None = None, resume: bool = False,
        teacher_outputs: TeacherOutputs | None = None, augment: AugmentConfig | None = None, stored_views: int | None = None) -> History:
    """Train ``distiller``'s student (and adapters) for ``config.epochs``; returns the history.

    Each step takes ``batch_size`` labeled samples and, when the data has a transfer set and the
    distiller has distillation terms, ``batch_size`` unlabeled ones for those terms (a teacher or
    scratch twin, trained on labels alone, never sees them). Without a teacher module,
    ``teacher_outputs`` maps the batch's sample ids and view ids to the teacher's outputs (a
    soft-target store's ``fetch``, or a foreign teacher run on them: :mod:`kdistill.torch.foreign`).
    With ``augment``, every sample of a batch is replaced by its view of the epoch: a fresh one
    online, one of the store's ``stored_views`` offline (:mod:`kdistill.data.augment`)."""
    x_train, y_train = tensors(data.train, device)
    x_val, _ = tensors(data.val, device)
    x_transfer = tensors(data.transfer, device)[0] if data.transfer is not None and distiller.losses else None
    steps = math.ceil(len(x_train) / config.batch_size)
    optimizer = make_optimizer(distiller.trainable_parameters(), config.optimizer, config.lr,
                               config.weight_decay, config.momentum)
    schedule = make_schedule(optimizer, config.schedule, steps * config.epochs)
    history = History(metric=PRIMARY[data.task])
    start_epoch = 0
    if resume and checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        try:
            distiller.load_state_dict(state["distiller"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as error:
            raise KdistillError(
                f"--resume: {checkpoint} does not fit this recipe's {role} model (resume with the recipe of the "
                f"interrupted run, or start afresh in another --out): {str(error).strip()}"
            ) from None
        schedule.load_state_dict(state["schedule"])
        history, start_epoch = state["history"], state["epoch"] + 1

    ranks = distributed.setup(device)
    if ranks is not None:
        distributed.check_last_batch(len(x_train), config.batch_size, ranks.world_size)
    model = distiller if ranks is None else DistributedDataParallel(distiller)
    main = distributed.is_main_process()
    with epoch_progress(role, config.epochs, steps, enabled=config.progress and main) as progress:
        progress.skip(start_epoch)
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
            torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout
            plan = EpochPlan(torch.randperm(len(x_train), generator=generator).numpy(),
                             torch.randperm(len(x_transfer), generator=generator).numpy() if x_transfer is not None
                             else None, config.batch_size)
            distiller.student.train()
            batches = epoch_batches(plan, ranks, data, config.seed, epoch, teacher_outputs is not None, augment,
                                    stored_views)
            recorded: list[torch.Tensor] = []  # per step: [total, *parts], one stacked op
            for step, batch in enumerate(batches):
                if teacher_outputs is not None and step % CHECK_EVERY == 0:  # one store read per chunk of steps
                    stored = _fetch_chunk(teacher_outputs, batches[step:step + CHECK_EVERY], device)
                index = torch.from_numpy(batch.rows).to(device)
                y, share = y_train[index], batch.share
                if augment is None:
                    x = x_train[index]
                    if batch.transfer_rows is not None:
                        x = torch.cat([x, x_transfer[torch.from_numpy(batch.transfer_rows).to(device)]])
                else:  # views drawn on the host from the numpy inputs: no device round trip
                    inputs = data.train.x[batch.rows] if batch.transfer_rows is None else \
                        np.concatenate([data.train.x[batch.rows], data.transfer.x[batch.transfer_rows]])
                    x = torch.from_numpy(augment_views(inputs, batch.ids, batch.views, augment)).to(device)
                teacher_out = None if teacher_outputs is None else stored[step % CHECK_EVERY]
                total, parts = model(x, y, teacher_out, share)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                schedule.step()
                with torch.no_grad():
                    recorded.append(torch.stack([total, *parts.values()]))
                if (step + 1) % CHECK_EVERY == 0 or step + 1 == steps:
                    check_finite(role, epoch, step, torch.stack(recorded[-CHECK_EVERY:]).cpu().numpy(),
                                 list(parts), checkpoint)
                    progress.step(epoch, step + 1, loss=float(recorded[-1][0]))
            history.train_seconds += time.perf_counter() - started
            means = torch.stack(recorded).mean(dim=0).tolist()
            history.loss.append(dict(zip(["total", *parts], means)))
            history.val.append(task_metrics(data.task, predict(distiller.student, x_val, config.eval_batch_size), data.val.y)[history.metric])
            progress.end_epoch(epoch, means[0], **{history.metric: history.val[-1]})
            if checkpoint is not None and main:
                _save_checkpoint(checkpoint, {"distiller": distiller.state_dict(), "optimizer": optimizer.state_dict(),
                                              "schedule": schedule.state_dict(), "history": history, "epoch": epoch})
    return history

