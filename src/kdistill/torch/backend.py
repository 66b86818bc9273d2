"""The PyTorch backend: the contract of :mod:`kdistill.backends.contract` on ``torch.nn.Module``
models. Its step is eager PyTorch (forward, backward, optimizer and per-step schedule); under
``torchrun`` the distiller is wrapped in DistributedDataParallel and each process takes its share
of every planned batch (:mod:`kdistill.torch.distributed`). Seeded and deterministic on the CPU:
the random state (dropout) is part of the checkpointed state, so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kdistill.backends import REGISTRY
from kdistill.backends.contract import Backend, StepRunner
from kdistill.data.samples import is_streamed
from kdistill.data.splits import Split, TaskData
from kdistill.errors import KdistillError
from kdistill.objective import Objective
from kdistill.recipe import FeaturePair, ModelConfig, TrainConfig
from kdistill.torch import distributed
from kdistill.torch.distiller import Distiller
from kdistill.torch.features import FeatureTap
from kdistill.torch.models import build_model, count_parameters, save_model
from kdistill.training.plan import Step


def tensors(split: Split, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The split on ``device``: its inputs only when in memory (streamed ones come per step)."""
    x = None if is_streamed(split.x) else torch.from_numpy(np.ascontiguousarray(split.x)).to(device)
    y = None if split.y is None else torch.from_numpy(np.ascontiguousarray(split.y)).to(device)
    return x, y


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int,
            device: torch.device | None = None) -> np.ndarray:
    """Raw outputs (logits at T = 1) in eval mode, as float64 numpy."""
    device = device or next(model.parameters(), torch.empty(0)).device
    x = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    was_training = model.training
    model.eval()
    outputs = torch.cat([model(x[start:start + batch_size].to(device)) for start in range(0, len(x), batch_size)])
    model.train(was_training)
    return outputs.double().cpu().numpy()


def make_optimizer(parameters: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    optimizer = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer(parameters, lr=config.lr, weight_decay=config.weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, name: str, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule: constant, cosine to 0 over the run, or ×0.1 at 1/2 and 3/4 of it."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    if name == "step":
        milestones = [total_steps // 2, (3 * total_steps) // 4]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)


class TorchRunner(StepRunner):
    """Eager steps over device-resident splits, or over the host inputs each step carries (a
    streamed or augmented split); state: the distiller's tensors, the optimizer's
    per-parameter tensors and learning rates, the schedule's step count and the RNG state."""

    def __init__(self, distiller: Distiller, data: TaskData, config: TrainConfig, total_steps: int, transfer: bool,
                 device: torch.device):
        self.distiller, self.device = distiller, device
        self.x_train, self.y_train = tensors(data.train, device)
        self.x_transfer = tensors(data.transfer, device)[0] if transfer else None
        self.optimizer = make_optimizer(distiller.trainable_parameters(), config)
        self.schedule = make_schedule(self.optimizer, config.schedule, total_steps)
        self.names = ["total", *distiller.objective.parts]
        self.ranks = distributed.setup(device)
        if self.ranks is not None:
            distributed.check_last_batch(len(data.train), config.batch_size, self.ranks.world_size)
        self.model = distiller if self.ranks is None else DistributedDataParallel(distiller)
        self.step = torch.compile(self.model) if config.compile else self.model
        torch.manual_seed(config.seed * 1_000_003)  # dropout; from here on its state is checkpointed

    def local(self, step: Step) -> Step:
        if self.ranks is None:
            return step
        rows, transfer_rows, share = self.ranks.split(step.rows, step.transfer_rows)
        return replace(step, rows=rows, transfer_rows=transfer_rows, share=share)

    def _inputs(self, step: Step) -> torch.Tensor:
        if step.x is not None:
            return torch.from_numpy(step.x).to(self.device)
        x = self.x_train[torch.from_numpy(step.rows).to(self.device)]
        if step.transfer_rows is None:
            return x
        return torch.cat([x, self.x_transfer[torch.from_numpy(step.transfer_rows).to(self.device)]])

    def run(self, steps: Sequence[Step], teacher_outputs: Any | None) -> torch.Tensor:
        self.distiller.student.train()
        per_step = [None] * len(steps)
        if teacher_outputs is not None:  # one copy for the chunk, split per step
            outputs = teacher_outputs if isinstance(teacher_outputs, torch.Tensor) else torch.from_numpy(teacher_outputs)
            per_step = self.distiller.teacher_side(outputs.to(self.device), [step.size for step in steps])
        recorded = []
        for step, teacher_out in zip(steps, per_step):
            y = self.y_train[torch.from_numpy(step.rows).to(self.device)]
            total, parts = self.step(self._inputs(step), y, teacher_out, step.share)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            self.schedule.step()
            recorded.append(torch.stack([total.detach(), *(part.detach() for part in parts.values())]))
        return torch.stack(recorded)

    def losses(self, pending: torch.Tensor) -> np.ndarray:
        return pending.cpu().numpy().astype(np.float64)

    def state(self) -> dict[str, np.ndarray]:
        arrays = {f"model/{name}": tensor.detach().cpu().numpy() for name, tensor in self.distiller.state_dict().items()}
        optimizer = self.optimizer.state_dict()
        for index, values in optimizer["state"].items():
            arrays |= {f"optimizer/{index}/{name}": torch.as_tensor(value).cpu().numpy() for name, value in values.items()}
        arrays["optimizer/lr"] = np.array([group["lr"] for group in self.optimizer.param_groups], np.float64)
        arrays["schedule/steps"] = np.array([self.schedule.last_epoch, self.schedule._step_count], np.int64)
        arrays["rng/cpu"] = torch.get_rng_state().numpy()
        if self.device.type == "cuda":
            arrays["rng/cuda"] = torch.cuda.get_rng_state(self.device).numpy()
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.distiller.load_state_dict({name.removeprefix("model/"): torch.from_numpy(array)
                                        for name, array in arrays.items() if name.startswith("model/")})
        optimizer = self.optimizer.state_dict()
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, array in arrays.items():
            parts = name.split("/")
            if parts[0] == "optimizer" and len(parts) == 3:
                state.setdefault(int(parts[1]), {})[parts[2]] = torch.from_numpy(array.copy())
        for group, lr in zip(optimizer["param_groups"], arrays["optimizer/lr"].tolist()):
            group["lr"] = lr
        self.optimizer.load_state_dict({"state": state, "param_groups": optimizer["param_groups"]})
        self.schedule.last_epoch, self.schedule._step_count = (int(v) for v in arrays["schedule/steps"])
        self.schedule._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        torch.set_rng_state(torch.from_numpy(arrays["rng/cpu"].copy()))
        if "rng/cuda" in arrays:
            torch.cuda.set_rng_state(torch.from_numpy(arrays["rng/cuda"].copy()), self.device)


class TorchBackend(Backend):
    info = REGISTRY["torch"]

    def device(self, name: str) -> torch.device:
        if name == "cuda" and not torch.cuda.is_available():
            raise KdistillError("train.device: 'cuda' requested but torch sees no CUDA device (use 'auto' or 'cpu')")
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        return distributed.local_device(torch.device(name))

    @contextlib.contextmanager
    def job(self, device: torch.device) -> Iterator[None]:
        """Under torchrun: the process group, joined first and left together (no rank tears it
        down while the main one still measures), destroyed on every exit path."""
        try:
            distributed.setup(device)
            yield
            distributed.barrier()
        finally:
            distributed.teardown()

    def environment(self, device: torch.device, config: TrainConfig) -> dict[str, Any]:
        return {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads()}

    def build(self, config: ModelConfig, data: TaskData, field: str, seed: int,
              device: torch.device) -> tuple[nn.Module, dict]:
        torch.manual_seed(seed)
        model, spec = build_model(config, data, field)
        return model.to(device), spec

    @torch.no_grad()
    def output_shape(self, model: nn.Module, probe: np.ndarray, device: torch.device) -> tuple[int, ...]:
        was_training = model.training
        model.eval()
        shape = tuple(model(torch.from_numpy(probe).to(device)).shape[1:])
        model.train(was_training)
        return shape

    def save(self, model: nn.Module, spec: dict, stem: Path) -> Path:
        return save_model(model, spec, stem)

    def clone(self, model: nn.Module, spec: dict, data: TaskData, probe: np.ndarray, device: torch.device) -> nn.Module:
        return copy.deepcopy(model)

    def count_parameters(self, model: nn.Module) -> int:
        return count_parameters(model)

    def predict_array(self, model: nn.Module, x: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
        return predict(model, x, batch_size, device)

    @torch.inference_mode()
    def embed_array(self, model: nn.Module, x: np.ndarray, path: str, batch_size: int,
                    device: torch.device) -> np.ndarray:
        tap = FeatureTap(model, [path], "compare.embedding")
        was_training = model.training
        model.eval()
        try:
            x = torch.from_numpy(np.ascontiguousarray(x))
            rows = []
            for start in range(0, len(x), batch_size):
                model(x[start:start + batch_size].to(device))
                rows.append(tap.outputs[path].flatten(1).double().cpu())
            return torch.cat(rows).numpy()
        finally:
            tap.remove()
            model.train(was_training)

    def timed_forward(self, model: nn.Module, x: np.ndarray, device: torch.device) -> Callable[[int], None]:
        x = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        model.eval()

        @torch.inference_mode()
        def forward(size: int) -> None:
            model(x[torch.arange(size, device=x.device) % len(x)])
            if x.is_cuda:
                torch.cuda.synchronize()
        return forward

    def frozen_forward(self, model: nn.Module, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
        """Eval mode under ``inference_mode``; on a GPU the forward runs on a CUDA stream of its
        own (beside the student's step on the default stream) and is synchronized before the
        outputs are handed over."""
        model.eval()
        stream = None
        if device.type == "cuda":
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))  # the teacher's weights are in place

        @torch.inference_mode()
        def forward(x: np.ndarray) -> np.ndarray:
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                outputs = model(torch.from_numpy(np.ascontiguousarray(x)).to(device)).float().cpu()
            return outputs.numpy()
        return forward

    def set_trainable(self, model: nn.Module, trainable: bool) -> None:
        model.requires_grad_(trainable).train(trainable)

    def distiller(self, student: nn.Module, objective: Objective, teacher: nn.Module | None,
                  features: Sequence[FeaturePair], probe: np.ndarray | None, device: torch.device,
                  seed: int) -> Distiller:
        return Distiller(student, objective.task, objective.weights, objective.losses, teacher=teacher,
                         features=features, probe=None if probe is None else torch.from_numpy(probe).to(device),
                         offline=teacher is None, heads=objective.heads)

    def runner(self, distiller: Distiller, data: TaskData, config: TrainConfig, total_steps: int, transfer: bool,
               device: torch.device) -> TorchRunner:
        return TorchRunner(distiller, data, config, total_steps, transfer, device)

    def export(self, model: nn.Module, format: str, path: Path, example: np.ndarray, quantize: str | None = None) -> None:
        from kdistill.torch.export import export

        export(model, format, path, example)

    def student(self, distiller: Distiller) -> nn.Module:
        return distiller.student


BACKEND = TorchBackend()
