"""Online distillation across frameworks: what does running the teacher in JAX or Keras cost a
PyTorch student, against a PyTorch teacher of the same architecture?

One online-KD epoch of the same PyTorch student (``kdistill.torch.trainer.fit``, weights
``{task: 0.5, kd: 0.5}``, the Fashion-MNIST recipe's student) is timed with three frozen teachers
of one architecture (the recipe's 1200-1200 MLP with dropout, eval mode):

* ``torch``: the teacher as a ``torch.nn.Module`` (same-framework online distillation);
* ``jax``: a Flax NNX teacher run per batch through ``kdistill.torch.foreign.ForeignModule`` (batch
  in and logits out by DLPack, zero-copy on the CPU; one jitted forward per batch shape);
* ``keras``: a Keras teacher on TensorFlow, the same way (TensorFlow copies the batch in: it takes
  only 64-byte aligned DLPack memory; logits out by DLPack).

Reported: the median of per-round ``foreign ÷ torch`` epoch ratios (the variants alternate within
every round; the first, unmeasured round compiles), and each teacher's inference pass over the
same inputs, which is most of the difference: the frameworks' own MLP forward speeds differ. The
teachers are untrained (speed does not depend on the weights). Target: foreign ÷ torch ≤ 1.15.

    python benchmarks/cross_framework_online.py                  # ~2 min on 2 quiet CPU cores
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
from kdistill.backend_common import import_backend
from kdistill.data import load_task_data
from kdistill.recipe import load_recipe
from kdistill.torch import trainer
from kdistill.torch.distiller import Distiller
from kdistill.torch.foreign import ForeignModule
from kdistill.torch.models import build_model

FOREIGN = ("jax", "keras")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=20000, help="images (0: all)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-cross-framework-online"))
    args = parser.parse_args()

    recipe = load_recipe("fashion_mnist_mlp", [f"data.limit={args.limit or 'null'}", "train.progress=false",
                                               "train.epochs=1", "train.schedule=constant", "train.device=cpu"])
    data = load_task_data(recipe.data, recipe.task)
    teachers = {"torch": import_backend("torch", "cache").build_teacher(recipe, data).model.eval()}
    for backend in FOREIGN:
        foreign = import_backend(backend, "cache").build_teacher(recipe.model_copy(update={"backend": backend}), data)
        teachers[backend] = ForeignModule(foreign).eval()
    torch.manual_seed(recipe.train.seed)
    student, _ = build_model(recipe.student, data, "student")
    settings = {name: recipe.loss_settings(name) for name in recipe.losses}
    x_train = torch.from_numpy(data.train.x)

    def online_epoch(teacher: torch.nn.Module) -> float:
        distiller = Distiller(copy.deepcopy(student), recipe.task, recipe.weights, settings, teacher=teacher)
        return trainer.fit("distilled", distiller, data, recipe.train, torch.device("cpu")).train_seconds

    def teacher_pass(teacher: torch.nn.Module) -> float:
        return timing.wall_seconds(lambda: trainer.predict(teacher, x_train, recipe.train.batch_size))

    variants = {f"online {name}": (lambda teacher=teacher: online_epoch(teacher)) for name, teacher in teachers.items()}
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
        "online_ratio": {name: timing.per_round_ratio(seconds[f"online {name}"], seconds["online torch"])
                         for name in FOREIGN},
        "teacher_pass_ratio": {name: timing.per_round_ratio(seconds[f"teacher pass {name}"], seconds["teacher pass torch"])
                               for name in FOREIGN},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(f"\n{len(data.train)} labeled + {len(data.transfer or [])} transfer images, batch {recipe.train.batch_size}")
    print("| teacher framework | online KD epoch (s) | ÷ torch teacher | teacher pass (s) | ÷ torch pass |")
    print("|---|---|---|---|---|")
    for name in ("torch", *FOREIGN):
        online, passed = result["median_seconds"][f"online {name}"], result["median_seconds"][f"teacher pass {name}"]
        ratio = "1" if name == "torch" else f"{result['online_ratio'][name]['median']:.3f}"
        pass_ratio = "1" if name == "torch" else f"{result['teacher_pass_ratio'][name]['median']:.3f}"
        print(f"| {name} | {online:.3f} | {ratio} | {passed:.3f} | {pass_ratio} |")
    print(f"result: {args.out / 'result.json'}")


if __name__ == "__main__":
    main()
