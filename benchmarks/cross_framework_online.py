"""Online distillation across frameworks: what does running the teacher in JAX or Keras cost a
PyTorch student, against a PyTorch teacher of the same architecture?

One online-KD epoch of the same PyTorch student (kdistill's one training loop,
``kdistill.training.loop.fit``, on the torch backend; the Fashion-MNIST recipe's student and
weights; the loop's own ``History.epoch_seconds``) is timed with three frozen teachers of one
architecture (the recipe's 1200-1200 MLP with dropout, eval mode), run as ``kdistill run`` runs them:

* ``torch``: the teacher as a ``torch.nn.Module``, called at every step (same-framework online);
* ``jax``: a Flax NNX teacher (``teacher.backend: jax``, ``teacher.online: true``), asked once per
  chunk of 20 steps for the logits of exactly the samples those steps hold
  (``kdistill.torch.foreign.OnlineForeignTeacher.outputs``; inputs in and logits out by DLPack,
  zero-copy on the CPU; one jitted forward per batch shape);
* ``keras``: a Keras teacher on TensorFlow, the same way (TensorFlow copies the inputs in: it
  takes only 64-byte aligned DLPack memory).

``--per-step`` adds the foreign teachers called at every step through
``kdistill.torch.foreign.ForeignModule``, the design the chunks replaced: on a CPU, two
frameworks' thread pools then take turns on the cores at every step.

Reported: the median of per-round ``foreign ÷ torch`` epoch ratios (the variants alternate within
every round; a first, unmeasured round compiles), and each teacher's inference pass over the
same inputs (eval batches), which shows how fast each framework runs the MLP itself. The teachers
are untrained (speed does not depend on the weights). Target: foreign ÷ torch ≤ 1.15.

    python benchmarks/cross_framework_online.py                  # ~3 min on 2 quiet CPU cores
    python benchmarks/cross_framework_online.py --limit 0        # all 54,000 training images
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path

import torch

import timing
from kdistill.cross_framework import online_teacher
from kdistill.data import load_task_data
from kdistill.objective import Objective
from kdistill.recipe import load_recipe
from kdistill.teacher import Teacher, probe_rows
from kdistill.torch.backend import BACKEND, predict
from kdistill.training.loop import fit

FOREIGN = ("jax", "keras")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=20000, help="images (0: all)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-step", action="store_true", help="also call the foreign teachers at every step")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-cross-framework-online"))
    args = parser.parse_args()

    overrides = [f"data.limit={args.limit or 'null'}", "train.progress=false", "train.epochs=1",
                 "train.schedule=constant", "train.device=cpu"]
    recipe = load_recipe("fashion_mnist_mlp", overrides)
    data = load_task_data(recipe.data, recipe.task)
    device, probe = BACKEND.device(recipe.train.device), probe_rows(data)
    torch_teacher = Teacher(recipe, data, BACKEND, device).model
    BACKEND.set_trainable(torch_teacher, False)
    foreign = {backend: online_teacher(load_recipe("fashion_mnist_mlp", [
        *overrides, f"teacher.backend={backend}", "teacher.online=true"]), data) for backend in FOREIGN}
    student, _ = BACKEND.build(recipe.student, data, "student", recipe.train.seed, device)
    objective = Objective(recipe.task, recipe.weights, {name: recipe.loss_settings(name) for name in recipe.losses})
    x_train = data.train.x

    def online_epoch(teacher: torch.nn.Module | None = None, outputs=None) -> float:
        distiller = BACKEND.distiller(copy.deepcopy(student), objective, teacher, (), probe, device, recipe.train.seed)
        return fit("distilled", BACKEND, distiller, data, recipe.train, device,
                   teacher_outputs=outputs).epoch_seconds[0]

    def teacher_pass(teacher: torch.nn.Module) -> float:
        return timing.wall_seconds(lambda: predict(teacher, x_train, recipe.train.eval_batch_size, device))

    variants = {"online torch": lambda: online_epoch(torch_teacher)}
    for name, teacher in foreign.items():
        outputs = teacher.outputs(data, None, recipe.train.eval_batch_size)
        variants[f"online {name}"] = lambda outputs=outputs: online_epoch(outputs=outputs)
        if args.per_step:
            variants[f"online {name} per step"] = lambda teacher=teacher: online_epoch(teacher.model)
    teachers = {"torch": torch_teacher, **{name: teacher.model for name, teacher in foreign.items()}}
    variants |= {f"teacher pass {name}": (lambda teacher=teacher: teacher_pass(teacher))
                 for name, teacher in teachers.items()}
    timing.interleaved(variants, 1)  # warm-up: compiles the jitted and traced forwards
    seconds = timing.interleaved(variants, args.rounds, lambda index, found: print(
        f"round {index + 1}: " + ", ".join(f"{name} {value:.3f}s" for name, value in found.items()), flush=True))
    result = {
        "machine": timing.machine({"torch": torch.__version__, "jax": __import__("jax").__version__,
                                   "keras": __import__("keras").__version__, "torch_threads": torch.get_num_threads()}),
        "settings": {"train_images": len(data.train), "transfer_images": len(data.transfer or []),
                     "batch_size": recipe.train.batch_size, "rounds": args.rounds},
        "median_seconds": {name: statistics.median(values) for name, values in seconds.items()},
        "online_ratio": {name.removeprefix("online "): timing.per_round_ratio(values, seconds["online torch"])
                         for name, values in seconds.items() if name.startswith("online ") and name != "online torch"},
        "teacher_pass_ratio": {name: timing.per_round_ratio(seconds[f"teacher pass {name}"], seconds["teacher pass torch"])
                               for name in FOREIGN},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(f"\n{len(data.train)} labeled + {len(data.transfer or [])} transfer images, batch {recipe.train.batch_size}")
    print("| teacher | online KD epoch (s) | ÷ torch teacher |")
    print("|---|---|---|")
    for name in ("torch", *result["online_ratio"]):
        ratio = "1" if name == "torch" else f"{result['online_ratio'][name]['median']:.3f}"
        print(f"| {name} | {result['median_seconds'][f'online {name}']:.3f} | {ratio} |")
    print("\n| teacher | inference pass (s) | ÷ torch |")
    print("|---|---|---|")
    for name in ("torch", *FOREIGN):
        ratio = "1" if name == "torch" else f"{result['teacher_pass_ratio'][name]['median']:.3f}"
        print(f"| {name} | {result['median_seconds'][f'teacher pass {name}']:.3f} | {ratio} |")
    print(f"result: {args.out / 'result.json'}")


if __name__ == "__main__":
    main()
