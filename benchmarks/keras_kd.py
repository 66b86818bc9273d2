"""kdistill's Keras Distiller vs ``keras.distillation.Distiller``: the same teacher, the same
student initial weights, the same batches, side by side in one run (the runs take turns epoch by
epoch, so machine noise hits them alike). Prints the median epoch time of each (first epoch, which
traces, left out), its ratio to Keras's Distiller with a correct KD loss, and the final test accuracy.

It also measures ``keras.distillation.LogitsDistillation``'s default ``loss="kl_divergence"``:
the string resolves to the function ``keras.losses.kl_divergence``, not a ``KLDivergence``
instance, so LogitsDistillation skips its softmax branch and applies the KL divergence to the
tempered logits themselves (clipped to [1e-7, 1]) without T². ``loss=keras.losses.KLDivergence()``
takes the softmax-and-T² branch: Hinton's KD.

kdistill's Distiller runs twice through Keras's own ``fit`` (teacher in the step, or its outputs
given as a store gives them) and once through kdistill's one training loop (``Backend.fit``, what
``kdistill run`` trains with) with ``train.teacher_ahead``: the teacher runs on the next chunks of
steps in a worker thread while the student trains. That loop drives the round: after each of its
epochs (``epoch_end``) every other run trains one epoch.

    python benchmarks/keras_kd.py                       # Fashion-MNIST, all 54,000 training images
    python benchmarks/keras_kd.py --limit 3000 --epochs 2  # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
from keras.distillation import Distiller as KerasDistiller
from keras.distillation import LogitsDistillation

from kdistill.data import load_task_data
from kdistill.keras.backend import BACKEND
from kdistill.keras.distiller import Distiller
from kdistill.keras.losses import KD
from kdistill.keras.zoo import mlp
from kdistill.losses import reference
from kdistill.recipe import TrainConfig, load_recipe
from kdistill.report.metrics import task_metrics
from kdistill.training.ahead import by_inputs

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class EpochTimer(keras.callbacks.Callback):
    def __init__(self, seconds: list[float]):
        super().__init__()
        self.seconds = seconds

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self.started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--temperature", type=float, default=3.0, help="3 is LogitsDistillation's default")
    parser.add_argument("--limit", type=int, help="use this many Fashion-MNIST images (default: all)")
    args = parser.parse_args()

    overrides = ["data.transfer=null"] + ([f"data.limit={args.limit}"] if args.limit else [])
    data = load_task_data(load_recipe("fashion_mnist_mlp", overrides).data, "classification")
    x, y, x_test = data.train.x, data.train.y, data.test.x
    shape, classes, T = list(data.input_shape), data.output_dim, args.temperature

    keras.utils.set_random_seed(0)
    teacher = mlp(shape, classes, hidden=[512, 512], dropout=0.3)
    teacher.compile(keras.optimizers.Adam(1e-3), CE)
    teacher.fit(x, y, batch_size=128, epochs=args.teacher_epochs, verbose=0)
    teacher.trainable = False
    teacher_logits = teacher.predict(x, batch_size=1024, verbose=0)
    keras.utils.set_random_seed(1)
    initial = mlp(shape, classes, hidden=[32]).get_weights()

    def student() -> keras.Model:
        model = mlp(shape, classes, hidden=[32])
        model.set_weights(initial)
        return model

    def keras_distiller(loss: str | keras.losses.Loss) -> tuple[keras.Model, keras.Model]:
        model = student()
        distiller = KerasDistiller(teacher, model, LogitsDistillation(temperature=T, loss=loss), student_loss_weight=0.5)
        distiller.compile(keras.optimizers.Adam(2e-3), loss=CE)
        return distiller, model

    def kdistill_distiller(offline: bool) -> tuple[keras.Model, keras.Model]:
        model = student()
        distiller = Distiller(model, {"task": 0.5, "kd": 0.5}, {"kd": {"temperature": T}},
                              teacher=None if offline else teacher, offline=offline)
        distiller.compile(keras.optimizers.Adam(2e-3))
        return distiller, model

    def scratch() -> tuple[keras.Model, keras.Model]:
        model = student()
        distiller = Distiller(model, {"task": 1.0})
        distiller.compile(keras.optimizers.Adam(2e-3))
        return distiller, model

    runs = {  # name → (distiller, student, training inputs)
        "kdistill Distiller, online teacher": (*kdistill_distiller(False), x),
        "kdistill Distiller, teacher outputs given (store)": (*kdistill_distiller(True),
                                                             {"inputs": x, "teacher_outputs": teacher_logits}),
        "keras.distillation, loss=KLDivergence() (correct KD)": (*keras_distiller(keras.losses.KLDivergence()), x),
        "keras.distillation, default loss='kl_divergence'": (*keras_distiller("kl_divergence"), x),
        "no distillation (task loss only, the scratch twin)": (*scratch(), x),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}

    def one_epoch_of_each(epoch: int, _validation: float) -> None:
        for name, (distiller, _, inputs) in runs.items():
            keras.utils.set_random_seed(100 + epoch)  # the same shuffled batches for every Keras fit
            distiller.fit(inputs, y, batch_size=128, initial_epoch=epoch, epochs=epoch + 1, verbose=0,
                          callbacks=[EpochTimer(seconds[name])])

    ahead_name = "kdistill one loop (`kdistill run`), teacher ahead"
    ahead_student = student()
    config = TrainConfig(epochs=args.epochs, batch_size=128, optimizer="adam", lr=2e-3, schedule="constant",
                         progress=False, device="cpu")
    history = BACKEND.fit("distilled", Distiller(ahead_student, {"task": 0.5, "kd": 0.5}, {"kd": {"temperature": T}},
                                                 offline=True), data, config,
                          teacher_outputs=by_inputs(BACKEND.frozen_forward(teacher, "cpu"), data), teacher_ahead=True,
                          epoch_end=one_epoch_of_each)
    runs[ahead_name], seconds[ahead_name] = (None, ahead_student, x), history.epoch_seconds

    # what the default loss computes, on one batch of real logits, against Hinton's KD
    s, t = runs["keras.distillation, default loss='kl_divergence'"][1].predict(x[:256], verbose=0), teacher_logits[:256]
    default = float(LogitsDistillation(temperature=T).compute_loss(t, s))
    correct = float(LogitsDistillation(temperature=T, loss=keras.losses.KLDivergence()).compute_loss(t, s))
    ours = float(KD(temperature=T).compute_loss(t, s))

    teacher_accuracy = task_metrics("classification", teacher.predict(x_test, verbose=0), data.test.y)["accuracy"]
    baseline = statistics.median(seconds["keras.distillation, loss=KLDivergence() (correct KD)"][1:])
    print(f"\nFashion-MNIST, {len(x)} training images, teacher MLP 512-512 (test accuracy {100 * teacher_accuracy:.2f} %), "
          f"student MLP 32, T = {T:g}, weights task 0.5 / distillation 0.5, {args.epochs} epochs, batch 128, "
          f"Keras {keras.__version__} ({keras.backend.backend()})\n")
    print("| distiller | epoch time (s, median) | ÷ keras.distillation (correct KD) | student test accuracy % |")
    print("|---|---:|---:|---:|")
    for name, (_, model, _) in runs.items():
        median = statistics.median(seconds[name][1:] or seconds[name])
        accuracy = task_metrics("classification", model.predict(x_test, verbose=0), data.test.y)["accuracy"]
        print(f"| {name} | {median:.2f} | {median / baseline:.2f} | {100 * accuracy:.2f} |")
    print(f"\nOne batch of 256 real logits at T = {T:g}: LogitsDistillation default loss = {default:.4f}; "
          f"with KLDivergence() = {correct:.4f}; kdistill KD = {ours:.4f}; numpy reference kd = "
          f"{reference.kd(s, t, T):.4f}")


if __name__ == "__main__":
    main()
