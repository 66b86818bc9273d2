"""Every backend's losses against the numpy reference: values (float64 and float32), gradients
against finite differences of the reference, extreme logits, shape errors. One module for all
backends: ``loss_backends.BACKENDS`` lists them."""

import inspect
from functools import partial

import numpy as np
import pytest
from scipy.special import softmax

from kdistill.losses import CATALOGUE, LOSSES_BY_TASK
from kdistill.losses import reference as R

from loss_backends import BACKENDS, available

# every catalogue loss, plus the supervised loss of every task: a new entry is tested automatically
CASES = [*CATALOGUE, *(f"task:{task}" for task in LOSSES_BY_TASK)]
SIZES = [(1, 2, 1.0), (3, 5, 2.0), (8, 10, 4.0), (4, 7, 0.5)]  # (batch, classes or channels, temperature)




@pytest.fixture(scope="module", params=available())
def backend(request):
    return BACKENDS[request.param]()


def _reference(case: str):
    if case.startswith("task:"):
        return partial(R.task, task=case.removeprefix("task:"))
    return getattr(R, case)


def _draw(rng, shape, extreme):
    x = rng.normal(size=shape) * 2
    if extreme:  # a mix of ±1e4 and ordinary values
        x = np.choose(rng.integers(3, size=shape), [x, np.full(shape, 1e4), np.full(shape, -1e4)])
    return x


def _inputs(case, seed, batch, width, temperature, extreme=False):
    """(student, second argument, keyword arguments) as numpy arrays, built from the catalogue entry."""
    rng = np.random.default_rng(seed)
    binary_shape = (batch,) if width % 2 else (batch, 1)
    if case.startswith("task:"):
        task = case.removeprefix("task:")
        shape = binary_shape if task == "binary" else (batch, width)
        outputs = _draw(rng, shape, extreme)
        targets = {
            "classification": lambda: rng.integers(width, size=batch),
            "binary": lambda: rng.integers(2, size=shape).astype(float),
            "regression": lambda: rng.normal(size=shape),
            "ranking": lambda: rng.integers(3, size=shape).astype(float) * (np.arange(batch) > 0)[:, None],
        }[task]()
        return outputs, targets, {}
    info = CATALOGUE[case]
    if info.inputs == "features":
        shape = (batch, width, 3, 2)
    elif info.tasks == ("binary",):
        shape = binary_shape
    else:
        shape = (batch, width)
    student, teacher = _draw(rng, shape, extreme), _draw(rng, shape, extreme)
    if info.inputs == "probs":
        teacher = softmax(teacher, axis=-1)
    kwargs = {}
    if "temperature" in info.params:
        kwargs["temperature"] = temperature
    if info.needs_labels:
        kwargs["labels"] = rng.integers(width, size=batch)
    return student, teacher, kwargs


def _reference_grad(case, student, second, kwargs, eps=1e-6):
    """Central finite differences of the numpy reference in the student input."""
    reference = _reference(case)
    grad = np.zeros_like(student)
    for index in np.ndindex(student.shape):
        up, down = student.copy(), student.copy()
        up[index] += eps
        down[index] -= eps
        grad[index] = (reference(up, second, **kwargs) - reference(down, second, **kwargs)) / (2 * eps)
    return grad


def test_loss_functions_cover_the_catalogue_with_the_reference_signatures(backend):
    assert set(backend.functions) == set(CATALOGUE)
    for name in CATALOGUE:
        assert backend.functions[name].__name__ == name
        reference, function = getattr(R, name), backend.functions[name]
        assert inspect.signature(function).parameters.keys() == inspect.signature(reference).parameters.keys()
        assert function.__defaults__ == reference.__defaults__


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed, size", list(enumerate(SIZES)))
def test_values_match_reference(backend, case, seed, size):
    student, second, kwargs = _inputs(case, seed, *size)
    expected = _reference(case)(student, second, **kwargs)
    value64, _ = backend.value_and_grad(case, student, second, kwargs, "float64")
    value32, _ = backend.value_and_grad(case, student, second, kwargs, "float32")
    assert value64 == pytest.approx(expected, rel=1e-10, abs=1e-14)
    assert value32 == pytest.approx(expected, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed, size", [(10, (3, 4, 2.0)), (11, (2, 3, 1.0))])
def test_gradients_match_reference_finite_differences(backend, case, seed, size):
    student, second, kwargs = _inputs(case, seed, *size)
    _, grad = backend.value_and_grad(case, student, second, kwargs, "float64")
    np.testing.assert_allclose(grad, _reference_grad(case, student, second, kwargs), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed, size", [(20, (4, 5, 1.0)), (21, (6, 3, 4.0))])
def test_extreme_logits_are_finite_and_match_reference_in_float32(backend, case, seed, size):
    student, second, kwargs = _inputs(case, seed, *size, extreme=True)
    student = student.astype(np.float32).astype(np.float64)  # the float32 inputs, exactly
    value, grad = backend.value_and_grad(case, student, second, kwargs, "float32")
    assert np.isfinite(value) and np.isfinite(grad).all()
    expected = _reference(case)(student, second, **kwargs)
    assert value == pytest.approx(expected, rel=1e-4, abs=1e-5)
    # float64 autograd is the gradient reference here: finite differences of losses near 1e8 are noise
    _, grad64 = backend.value_and_grad(case, student, second, kwargs, "float64")
    np.testing.assert_allclose(grad, grad64, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(grad64).max()))


def test_attention_allows_different_channel_counts(backend):
    rng = np.random.default_rng(3)
    fs, ft = rng.normal(size=(2, 2, 4, 3)), rng.normal(size=(2, 5, 4, 3))  # 2 student, 5 teacher channels
    value, _ = backend.value_and_grad("attention", fs, ft, {}, "float64")
    assert value == pytest.approx(R.attention(fs, ft), rel=1e-10)


def test_ranking_task_without_relevant_items_is_zero_and_differentiable(backend):
    scores = np.random.default_rng(4).normal(size=(3, 4))
    value, grad = backend.value_and_grad("task:ranking", scores, np.zeros((3, 4)), {}, "float64")
    assert value == 0.0 and not grad.any()


@pytest.mark.parametrize("case", CASES)
def test_shape_errors_read_as_in_reference(backend, case):
    student, second, kwargs = _inputs(case, 30, 3, 4, 2.0)
    second = second[:2]  # one example short
    with pytest.raises(ValueError) as reference_error:
        _reference(case)(student, second, **kwargs)
    with pytest.raises(ValueError) as backend_error:
        backend.value_and_grad(case, student, second, kwargs, "float64")
    assert str(backend_error.value) == str(reference_error.value)
    assert "shape" in str(reference_error.value)
