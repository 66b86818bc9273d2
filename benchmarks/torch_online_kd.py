"""Online knowledge distillation in PyTorch: how close does kdistill's training loop come to the floor?

What is measured
----------------
In *online* KD the frozen teacher runs a forward pass on every training batch; its logits are not cached.
So one distillation epoch has to do, at the least, everything a plain student epoch does **plus** one
teacher inference pass over the same training inputs. That sum is the floor. What online KD adds on
top is the KL term on (batch, classes) logits: a dozen small ops forward and backward, cheap but not
free (about 0.3 ms per ~10 ms step on a 2-core Xeon VM, i.e. ~3%). The benchmark reports how far
kdistill sits above the floor, and how far above a hand-written loop that does the same work:

(a) ``kdistill online-KD epoch ÷ (kdistill plain-student epoch + kdistill teacher predict pass)``
    * online-KD epoch: kdistill's one training loop (``kdistill.training.loop.fit`` on the torch
      backend, ``kdistill.torch.backend.BACKEND``) on its distiller with weights
      ``{task: 0.1, kd: 0.9}``, loss ``kd`` at temperature T, the frozen teacher.
    * plain-student epoch: the same loop on the task loss alone (``Objective.task_only``), no teacher.
    * teacher pass: ``kdistill.torch.backend.predict(teacher, x_train, batch_size)`` (eval mode,
      ``no_grad``) over the same training inputs at the training batch size, timed by wall clock.
    Target: ≤ 1.05.

(b) ``kdistill online-KD epoch ÷ hand-written minimal KD loop epoch``. The hand-written loop (see
    ``handwritten_kd_epoch``) uses the same teacher object, the same initial student weights, the same
    data tensors, the same batch size, AdamW with the same lr and weight decay, the same loss
    ``0.1·CE + 0.9·T²·KL(p_t^T ‖ p_s^T)`` (``batchmean``, from ``log_softmax``), the teacher in eval
    mode under ``no_grad``, and batches gathered by indexing in-memory tensors. It takes its batch
    order from the same seeded numpy plan as kdistill (``kdistill.training.plan.epoch_plan``), so
    both train on identical batches and the script checks they end up with the same student
    weights. Target: ≤ 1.05.

A reference row, ``hand-written ÷ (plain + teacher pass)``, shows how far a minimal loop itself sits
above the floor (the KL term and its backward, two models sharing the caches); whatever of (a) this
row shares is the cost of online KD, not of kdistill.

A kdistill epoch is ``fit(...)`` with ``TrainConfig(epochs=1, progress=False, schedule="constant")``
(a constant lr so that "same lr" holds exactly; kdistill still runs its per-step ``LambdaLR.step()``,
which is part of its cost), timed by the loop itself (``History.epoch_seconds``). That figure is the
wall time of one epoch in the loop: from the epoch's plan (a numpy permutation) to the last step's
losses read back, including the batch gather, forward/backward/step, the LR-schedule step and the
finiteness check of every chunk of 20 steps. It excludes the numpy → tensor conversion and optimizer
construction before the loop (the backend's step runner), and the validation pass, metrics and
checkpoint after it. The script checks the exclusion of validation at run time (it times the
backend's ``predict`` that ``fit`` calls for validation and compares time stamps) and prints the
result. The hand-written loop is timed over the same span (plan to last step, optimizer built before).

Variants are interleaved (one unmeasured warm-up round, then ``--rounds`` rounds, the order rotated
each round) and the median of each is reported. Each measurement also records how much CPU the rest of
the machine used meanwhile (``/proc/stat``): on a shared box another job oversubscribes torch's OpenMP
threads and an epoch can take 10× longer, so busy measurements are flagged, retried (``--retries``) and
kept out of the medians when clean ones exist. On a machine you cannot have to yourself, ``--threads 1``
gives far steadier figures. Data: Fashion-MNIST through kdistill's own loader,
``load_task_data(DataConfig(dataset="fashion_mnist", limit=...), "classification")``.

    python benchmarks/torch_online_kd.py                      # ~1 min on 2 quiet CPU cores
    python benchmarks/torch_online_kd.py --limit 0 --rounds 5 # all 54,000 training images
    python benchmarks/torch_online_kd.py --profile            # + cProfile of one epoch of each loop
    python benchmarks/torch_online_kd.py --threads 1          # steadier on a shared machine
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import os
import platform
import pstats
import shlex
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.backends.contract import Backend
from kdistill.data import load_task_data
from kdistill.objective import Objective
from kdistill.recipe import DataConfig, TrainConfig
from kdistill.torch.backend import BACKEND, predict, tensors
from kdistill.torch.distiller import Distiller
from kdistill.torch.zoo import mlp
from kdistill.training import History
from kdistill.training.loop import fit
from kdistill.training.plan import epoch_plan

import timing

TARGET = 1.05
TASK = "classification"


def parse_hidden(text: str) -> list[int]:
    return [int(part) for part in text.replace("x", ",").split(",") if part.strip()]


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=args.batch_size, optimizer="adamw", lr=args.lr, weight_decay=0.0,
                       schedule="constant", seed=args.seed, temperature=args.temperature, device="cpu",
                       eval_batch_size=1024, progress=False)


class Bench:
    """The models, data and the four measured variants."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = torch.device("cpu")
        self.config = train_config(args)
        self.data = load_task_data(
            DataConfig(dataset="fashion_mnist", limit=args.limit or None, split_seed=args.seed), TASK)
        self.x_train, self.y_train = tensors(self.data.train, self.device)
        input_shape, classes = self.data.train.x.shape[1:], self.data.output_dim
        torch.manual_seed(args.seed + 10_000)
        self.teacher = mlp(input_shape, classes, hidden=args.teacher_hidden)
        if args.teacher_epochs:
            self.fit("teacher", self.plain_distiller(self.teacher),
                     self.config.model_copy(update={"epochs": args.teacher_epochs}))
        BACKEND.set_trainable(self.teacher, False)
        torch.manual_seed(args.seed)
        self.initial_student = mlp(input_shape, classes, hidden=args.student_hidden)
        self.probe = self.data.train.x[:4]
        self.steps = -(-len(self.x_train) // args.batch_size)
        self.last_student: dict[str, nn.Module] = {}

    def fresh_student(self) -> nn.Module:
        return copy.deepcopy(self.initial_student)

    def kd_distiller(self, student: nn.Module) -> Distiller:
        objective = Objective(TASK, {"task": 0.1, "kd": 0.9}, {"kd": {"temperature": self.args.temperature}})
        return BACKEND.distiller(student, objective, self.teacher, (), self.probe, self.device, self.config.seed)

    def plain_distiller(self, student: nn.Module) -> Distiller:
        return BACKEND.distiller(student, Objective.task_only(TASK), None, (), None, self.device, self.config.seed)

    def fit(self, role: str, distiller: Distiller, config: TrainConfig | None = None,
            backend: Backend = BACKEND) -> History:
        """kdistill's one training loop on the torch backend (or ``backend``, a stand-in for it)."""
        return fit(role, backend, distiller, self.data, config or self.config, self.device)

    # -- the variants; each returns seconds ------------------------------------------------------
    def kdistill_kd(self) -> float:
        student = self.fresh_student()
        history = self.fit("distilled", self.kd_distiller(student))
        self.last_student["kdistill_kd"] = student
        return history.epoch_seconds[0]

    def kdistill_plain(self) -> float:
        return self.fit("scratch", self.plain_distiller(self.fresh_student())).epoch_seconds[0]

    def teacher_pass(self) -> float:
        started = time.perf_counter()
        predict(self.teacher, self.x_train, self.args.batch_size)
        return time.perf_counter() - started

    def handwritten(self) -> float:
        student = self.fresh_student()
        seconds = handwritten_kd_epoch(student, self.teacher, self.x_train, self.y_train, self.args.batch_size,
                                       self.args.lr, self.args.temperature, self.config.seed)
        self.last_student["handwritten"] = student
        return seconds


def handwritten_kd_epoch(student: nn.Module, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                         lr: float, temperature: float, seed: int) -> float:
    """A minimal, correct online-KD epoch in plain PyTorch; returns the seconds of the epoch loop.
    Its batches are kdistill's (the seeded plan of epoch 0), so that both train alike."""
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    teacher.eval()
    student.train()
    started = time.perf_counter()
    order = torch.from_numpy(epoch_plan(seed, 0, len(x), None, batch_size).order)
    for start in range(0, len(x), batch_size):
        index = order[start:start + batch_size]
        xb, yb = x[index], y[index]
        with torch.no_grad():
            teacher_logits = teacher(xb)
        student_logits = student(xb)
        kl = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                      F.log_softmax(teacher_logits / temperature, dim=-1), reduction="batchmean", log_target=True)
        loss = 0.1 * F.cross_entropy(student_logits, yb) + 0.9 * (temperature**2 * kl)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


VARIANTS = {
    "kdistill_kd": ("kdistill online KD (`fit`, task 0.1 + kd 0.9)", Bench.kdistill_kd),
    "kdistill_plain": ("kdistill plain student (`fit`, task 1, no teacher)", Bench.kdistill_plain),
    "teacher_pass": ("kdistill teacher pass (`predict`, eval, no_grad)", Bench.teacher_pass),
    "handwritten": ("hand-written minimal KD loop", Bench.handwritten),
}


class CpuMeter:
    """How busy the rest of the machine was during a measurement: CPU seconds of all other processes
    (and hypervisor steal) per wall second, from /proc/stat minus this process's own CPU time.
    On a shared machine a stray job oversubscribes torch's OpenMP threads and an epoch can take 10×
    longer; such measurements are flagged and retried rather than silently mixed into the medians."""

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def read(self) -> tuple[float, float] | None:
        try:
            with open("/proc/stat") as handle:
                fields = [int(value) for value in handle.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        busy = (user + nice + system + irq + softirq + steal) / self.tick
        return busy - sum(os.times()[:2]), time.perf_counter()

    def other_cores(self, before: tuple[float, float] | None) -> float | None:
        after = self.read()
        if before is None or after is None or after[1] <= before[1]:
            return None
        return max(0.0, (after[0] - before[0]) / (after[1] - before[1]))


def measure(bench: Bench, name: str, meter: CpuMeter, max_other: float, retries: int) -> tuple[float, float | None, bool]:
    """(seconds, other processes' cores, clean) of one run of ``name``, retried while the machine is busy."""
    for _attempt in range(retries + 1):
        before = meter.read()
        seconds = VARIANTS[name][1](bench)
        other = meter.other_cores(before)
        clean = other is None or other <= max_other
        if clean:
            break
    return seconds, other, clean


class TimedPredict:
    """The torch backend with its ``predict`` (what ``fit`` validates with) time-stamped."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.calls: list[tuple[float, float]] = []

    def __getattr__(self, name: str):
        return getattr(self.backend, name)

    def predict(self, *args, **kwargs):
        entered = time.perf_counter()
        try:
            return self.backend.predict(*args, **kwargs)
        finally:
            self.calls.append((entered, time.perf_counter()))


def check_epoch_seconds(bench: Bench) -> str:
    """Run one KD ``fit`` with the validation ``predict`` timed; show that the epoch's seconds end before it."""
    backend = TimedPredict(BACKEND)
    distiller = bench.kd_distiller(bench.fresh_student())
    called = time.perf_counter()
    seconds = bench.fit("distilled", distiller, backend=backend).epoch_seconds[0]
    returned = time.perf_counter()
    calls = backend.calls
    if len(calls) != 1:
        return f"epoch_seconds check inconclusive: fit called predict {len(calls)} times, expected 1 (validation)"
    val_start, val_end = calls[0]
    excluded = called + seconds <= val_start
    verdict = "excludes" if excluded else "DOES NOT exclude"
    return (f"History.epoch_seconds {verdict} validation: fit() wall {returned - called:.3f} s = "
            f"epoch {seconds:.3f} s + validation predict {val_end - val_start:.3f} s "
            f"+ setup/metrics {returned - called - seconds - (val_end - val_start):.3f} s; "
            f"the epoch loop ended ≤ {val_start - called - seconds:.3f} s before validation began.")


def profile_epoch(bench: Bench, name: str, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    VARIANTS[name][1](bench)
    profiler.disable()
    stats = pstats.Stats(profiler)
    print(f"\n### cProfile, one epoch of {name} ({bench.steps} steps), top {top} by own time, ms per step\n")
    print("| function | calls/step | own ms/step | cumulative ms/step |")
    print("|---|---:|---:|---:|")
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    for (filename, line, function), (_, calls, own, cumulative, _) in rows:
        where = f"{os.path.basename(filename)}:{line}:{function}" if line else function
        print(f"| `{where}` | {calls / bench.steps:.1f} | {1000 * own / bench.steps:.3f} | "
              f"{1000 * cumulative / bench.steps:.3f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--limit", type=int, default=20_000, help="training samples (0 = all)")
    parser.add_argument("--rounds", type=int, default=11, help="measured rounds (after one warm-up round)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--teacher-hidden", type=parse_hidden, default=[1200, 1200], help="e.g. 1200,1200")
    parser.add_argument("--student-hidden", type=parse_hidden, default=[64], help="e.g. 64")
    parser.add_argument("--teacher-epochs", type=int, default=0, help="train the teacher first (0: untrained)")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--max-other", type=float, default=0.25,
                        help="a measurement is 'clean' if other processes used at most this many cores meanwhile")
    parser.add_argument("--retries", type=int, default=1, help="re-runs of a measurement taken on a busy machine")
    parser.add_argument("--profile", action="store_true", help="also cProfile one epoch of each KD loop")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"command: {shlex.join(['python', *sys.argv])}")
    print(f"machine: {timing.cpu_model()}; {os.cpu_count()} logical CPUs; torch {torch.__version__}, "
          f"{torch.get_num_threads()} intra-op threads; Python {platform.python_version()}")
    loaded = time.perf_counter()
    bench = Bench(args)
    print(f"data: fashion_mnist via load_task_data, {len(bench.x_train)} training samples "
          f"{tuple(bench.x_train.shape[1:])}, batch {args.batch_size} → {bench.steps} steps/epoch "
          f"(loaded in {time.perf_counter() - loaded:.1f} s)")
    print(f"models: teacher mlp {args.teacher_hidden} ({sum(p.numel() for p in bench.teacher.parameters()):,} "
          f"params, {'trained %d epoch(s)' % args.teacher_epochs if args.teacher_epochs else 'untrained'}), "
          f"student mlp {args.student_hidden} ({sum(p.numel() for p in bench.initial_student.parameters()):,} params); "
          f"AdamW lr {args.lr} wd 0, T={args.temperature}")
    print(check_epoch_seconds(bench))

    names = list(VARIANTS)
    for name in names:  # warm-up round, not measured
        VARIANTS[name][1](bench)
    with torch.no_grad():
        drift = max((a - b).abs().max().item() for a, b in zip(bench.last_student["kdistill_kd"].parameters(),
                                                               bench.last_student["handwritten"].parameters()))
    meter = CpuMeter()
    times: dict[str, list[float]] = {name: [] for name in names}
    clean: dict[str, list[bool]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        shown = []
        for name in order:
            seconds, other, ok = measure(bench, name, meter, args.max_other, args.retries)
            times[name].append(seconds)
            clean[name].append(ok)
            shown.append(f"{name} {seconds:.3f} s" + ("" if ok else f" [busy machine: others used {other:.1f} cores]"))
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(shown), flush=True)

    kept = {name: [t for t, ok in zip(times[name], clean[name]) if ok] or times[name] for name in names}
    contended = sum(not ok for flags in clean.values() for ok in flags)
    if contended:
        print(f"\nWARNING: {contended} of {len(names) * args.rounds} measurements ran while other processes used more "
              f"than {args.max_other} cores (after {args.retries} retries each); medians use the clean ones where a "
              f"variant has any. Re-run on a quiet machine for figures worth publishing.")
    median = {name: statistics.median(values) for name, values in kept.items()}
    floor = median["kdistill_plain"] + median["teacher_pass"]
    ratio_a = median["kdistill_kd"] / floor
    ratio_b = median["kdistill_kd"] / median["handwritten"]
    clean_rounds = [index for index in range(args.rounds) if all(clean[name][index] for name in names)]
    rounds = [{name: times[name][index] for name in names} for index in (clean_rounds or range(args.rounds))]
    per_round_a = [r["kdistill_kd"] / (r["kdistill_plain"] + r["teacher_pass"]) for r in rounds]
    per_round_b = [r["kdistill_kd"] / r["handwritten"] for r in rounds]
    ratio_c = median["handwritten"] / floor
    per_round_c = [r["handwritten"] / (r["kdistill_plain"] + r["teacher_pass"]) for r in rounds]

    print(f"\nstudent weights after one epoch, kdistill vs hand-written (same init, same batches): "
          f"max |Δw| = {drift:.2e} ({'same training' if drift < 1e-4 else 'DIFFERENT training'})")
    print(f"\n## Online KD, Fashion-MNIST, PyTorch CPU — median of {args.rounds} interleaved rounds "
          f"({len(clean_rounds)} fully clean)\n")
    print(f"{timing.cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{len(bench.x_train)} samples, batch {args.batch_size}, {bench.steps} steps; teacher mlp "
          f"{args.teacher_hidden}, student mlp {args.student_hidden}\n")
    print("| variant | epoch (s) | ms/step |")
    print("|---|---:|---:|")
    for name in names:
        print(f"| {VARIANTS[name][0]} | {median[name]:.3f} | {1000 * median[name] / bench.steps:.2f} |")
    print(f"| floor = plain student + teacher pass | {floor:.3f} | {1000 * floor / bench.steps:.2f} |")
    print()
    print(f"| ratio | median | per-round range ({'clean rounds' if clean_rounds else 'all rounds'}) | target |")
    print("|---|---:|---:|---:|")
    for label, ratio, spread in (("(a) kdistill KD ÷ (plain + teacher pass)", ratio_a, per_round_a),
                                 ("(b) kdistill KD ÷ hand-written KD loop", ratio_b, per_round_b)):
        verdict = "ok" if ratio <= TARGET else "MISSED"
        print(f"| {label} | {ratio:.3f} | {min(spread):.3f}–{max(spread):.3f} | ≤ {TARGET} {verdict} |")
    print(f"| (reference) hand-written KD ÷ (plain + teacher pass) | {ratio_c:.3f} | "
          f"{min(per_round_c):.3f}–{max(per_round_c):.3f} | — |")
    per_step = {name: 1000 * value / bench.steps for name, value in median.items()}
    floor_step = 1000 * floor / bench.steps
    print(f"\nper step: kdistill KD − floor = {per_step['kdistill_kd'] - floor_step:+.3f} ms, of which a minimal loop "
          f"shares {per_step['handwritten'] - floor_step:+.3f} ms (the KL term forward and backward, two models "
          f"sharing the caches: the cost of online KD itself) and kdistill's own loop adds "
          f"{per_step['kdistill_kd'] - per_step['handwritten']:+.3f} ms (kdistill KD − hand-written).")

    if args.profile:
        profile_epoch(bench, "kdistill_kd", 25)
        profile_epoch(bench, "handwritten", 25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
