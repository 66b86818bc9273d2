"""The PyTorch losses against the numpy reference: values, gradients and extreme logits."""

import inspect
from functools import partial

import numpy as np
import pytest
from scipy.special import softmax

from kdistill.losses import CATALOGUE, LOSSES_BY_TASK
from kdistill.losses import reference as R

torch = pytest.importorskip("torch")
from kdistill.torch import losses as L  # noqa: E402

# every catalogue loss, plus the supervised loss of every task: a new entry is tested automatically
CASES = [*CATALOGUE, *(f"task:{task}" for task in LOSSES_BY_TASK)]
SIZES = [(1, 2, 1.0), (3, 5, 2.0), (8, 10, 4.0), (4, 7, 0.5)]  # (batch, classes or channels, temperature)


def _functions(case: str):
    """(reference, torch) functions for a case."""
    if case.startswith("task:"):
        task = case.removeprefix("task:")
        return partial(R.task, task=task), partial(L.task_loss, task=task)
    return getattr(R, case), L.LOSS_FUNCTIONS[case]


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


def _tensor(x, dtype):
    """Arrays to tensors (integer ones stay int64 labels); plain numbers such as T pass through."""
    if not isinstance(x, np.ndarray):
        return x
    return torch.as_tensor(x) if np.issubdtype(x.dtype, np.integer) else torch.tensor(x, dtype=dtype)


def _torch_value_and_grad(case, student, second, kwargs, dtype):
    s = torch.tensor(student, dtype=dtype, requires_grad=True)
    value = _functions(case)[1](s, _tensor(second, dtype), **{k: _tensor(v, dtype) for k, v in kwargs.items()})
    value.backward()
    assert value.shape == () and value.dtype == dtype
    return value.item(), s.grad.numpy().astype(np.float64)


def _reference_grad(case, student, second, kwargs, eps=1e-6):
    """Central finite differences of the numpy reference in the student input."""
    reference = _functions(case)[0]
    grad = np.zeros_like(student)
    for index in np.ndindex(student.shape):
        up, down = student.copy(), student.copy()
        up[index] += eps
        down[index] -= eps
        grad[index] = (reference(up, second, **kwargs) - reference(down, second, **kwargs)) / (2 * eps)
    return grad


def test_loss_functions_cover_the_catalogue_with_the_reference_signatures():
    assert set(L.LOSS_FUNCTIONS) == set(CATALOGUE)
    for name in CATALOGUE:
        assert L.LOSS_FUNCTIONS[name].__name__ == name
        reference, function = getattr(R, name), L.LOSS_FUNCTIONS[name]
        assert inspect.signature(function).parameters.keys() == inspect.signature(reference).parameters.keys()
        assert function.__defaults__ == reference.__defaults__


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed, size", list(enumerate(SIZES)))
def test_values_match_reference(case, seed, size):
    student, second, kwargs = _inputs(case, seed, *size)
    expected = _functions(case)[0](student, second, **kwargs)
    value64, _ = _torch_value_and_grad(case, student, second, kwargs, torch.float64)
    value32, _ = _torch_value_and_grad(case, student, second, kwargs, torch.float32)
    assert value64 == pytest.approx(expected, rel=1e-10, abs=1e-14)
    assert value32 == pytest.approx(expected, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed, size", [(10, (3, 4, 2.0)), (11, (2, 3, 1.0))])
def test_gradients_match_reference_finite_differences(case, seed, size):
    student, second, kwargs = _inputs(case, seed, *size)
    _, grad = _torch_value_and_grad(case, student, second, kwargs, torch.float64)
    np.testing.assert_allclose(grad, _reference_grad(case, student, second, kwargs), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed, size", [(20, (4, 5, 1.0)), (21, (6, 3, 4.0))])
def test_extreme_logits_are_finite_and_match_reference_in_float32(case, seed, size):
    student, second, kwargs = _inputs(case, seed, *size, extreme=True)
    student = student.astype(np.float32).astype(np.float64)  # the float32 inputs, exactly
    value, grad = _torch_value_and_grad(case, student, second, kwargs, torch.float32)
    assert np.isfinite(value) and np.isfinite(grad).all()
    expected = _functions(case)[0](student, second, **kwargs)
    assert value == pytest.approx(expected, rel=1e-4, abs=1e-5)
    # float64 autograd is the gradient reference here: finite differences of losses near 1e8 are noise
    _, grad64 = _torch_value_and_grad(case, student, second, kwargs, torch.float64)
    np.testing.assert_allclose(grad, grad64, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(grad64).max()))


def test_attention_allows_different_channel_counts():
    rng = np.random.default_rng(3)
    fs, ft = rng.normal(size=(2, 2, 4, 3)), rng.normal(size=(2, 5, 4, 3))  # 2 student, 5 teacher channels
    value = L.attention(torch.tensor(fs), torch.tensor(ft))
    assert value.item() == pytest.approx(R.attention(fs, ft), rel=1e-10)


def test_ranking_task_without_relevant_items_is_zero_and_differentiable():
    scores = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss = L.task_loss(scores, torch.zeros(3, 4, dtype=torch.float64), "ranking")
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(scores.grad, torch.zeros(3, 4, dtype=torch.float64))


@pytest.mark.parametrize("case", CASES)
def test_shape_errors_read_as_in_reference(case):
    student, second, kwargs = _inputs(case, 30, 3, 4, 2.0)
    second = second[:2]  # one example short
    with pytest.raises(ValueError) as reference_error:
        _functions(case)[0](student, second, **kwargs)
    with pytest.raises(ValueError) as torch_error:
        _torch_value_and_grad(case, student, second, kwargs, torch.float64)
    assert str(torch_error.value) == str(reference_error.value)
    assert "shape" in str(reference_error.value)
