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
TOKENS = 4  # sequence length of the token losses' inputs
TOKEN_LAYOUTS = {"hidden_cosine": "hidden", "hidden_mse": "hidden", "attention_kl": "attention"}




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


def _mask(rng, batch):
    """(batch, TOKENS) 0/1 integers, real tokens first: random lengths, the last sequence all padding
    when there are several."""
    lengths = rng.integers(1, TOKENS + 1, size=batch)
    lengths[1:][-1:] = 0
    return (np.arange(TOKENS) < lengths[:, None]).astype(np.int64)


def _attention(rng, shape, mask, extreme):
    """Rows of softmax over the real keys, padded keys 0 (a fully padded row: uniform), as a
    transformer's masked self-attention gives them."""
    return softmax(_draw(rng, shape, extreme) + np.where(mask[:, None, None, :] != 0, 0.0, -1e9), axis=-1)


def _token_inputs(case, rng, batch, width, extreme):
    """(student, teacher, {"mask": mask}) for a loss over tokens: hidden states (batch, TOKENS,
    width), or attention (batch, heads, TOKENS, TOKENS) with width // 2 + 1 heads."""
    mask = _mask(rng, batch)
    if TOKEN_LAYOUTS[case] == "attention":
        shape = (batch, width // 2 + 1, TOKENS, TOKENS)
        return _attention(rng, shape, mask, extreme), _attention(rng, shape, mask, extreme), {"mask": mask}
    shape = (batch, TOKENS, width)
    return _draw(rng, shape, extreme), _draw(rng, shape, extreme), {"mask": mask}


def _inputs(case, seed, batch, width, temperature, extreme=False):
    """(student, second argument, keyword arguments) as numpy arrays, built from the catalogue entry."""
    rng = np.random.default_rng(seed)
    if case in TOKEN_LAYOUTS:
        return _token_inputs(case, rng, batch, width, extreme)
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
    if "metric" in info.params:  # pooled embeddings (batch, dim)
        shape = (batch, width)
    elif info.inputs == "features":
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
    if "metric" in info.params:  # even seeds the default, odd seeds the other metric
        kwargs["metric"] = R.METRICS[seed % 2]
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


@pytest.mark.parametrize("case", TOKEN_LAYOUTS)
def test_token_losses_without_a_real_token_are_nan(backend, case):
    student, teacher, kwargs = _inputs(case, 40, 3, 4, 1.0)
    kwargs["mask"] = np.zeros_like(kwargs["mask"])
    assert np.isnan(_reference(case)(student, teacher, **kwargs))
    value, _ = backend.value_and_grad(case, student, teacher, kwargs, "float64")
    assert np.isnan(value)


def test_embedding_metrics_and_a_zero_embedding(backend):
    """Both metrics; a zero student row has cosine 0 (NORMALIZE_EPS) and a finite gradient."""
    student, teacher, _ = _inputs("embedding", 41, 3, 4, 1.0)
    student[1] = 0.0
    for metric in R.METRICS:
        value, grad = backend.value_and_grad("embedding", student, teacher, {"metric": metric}, "float64")
        assert value == pytest.approx(R.embedding(student, teacher, metric), rel=1e-10)
        assert np.isfinite(grad).all()


def test_attention_kl_reads_a_zero_student_probability_as_the_floor(backend):
    """A teacher probability under a student 0 costs p · (log p − log PROBABILITY_FLOOR), no gradient there."""
    teacher = np.array([[[[0.5, 0.5, 0.0]] * 3]])  # (1 sequence, 1 head, 3 queries, 3 keys)
    student = np.array([[[[1.0, 0.0, 0.0]] * 3]])
    mask = np.array([[1, 1, 0]])
    value, grad = backend.value_and_grad("attention_kl", student, teacher, {"mask": mask}, "float64")
    assert value == pytest.approx(R.attention_kl(student, teacher, mask), rel=1e-12)
    assert value == pytest.approx(0.5 * np.log(0.5) + 0.5 * (np.log(0.5) - np.log(R.PROBABILITY_FLOOR)), rel=1e-12)
    assert np.isfinite(grad).all() and not grad[..., 1:].any() and not grad[:, :, 2].any()


def _bad_token_shapes(case):
    """(student, teacher, mask) with one thing wrong each: the mask, the hidden width or the head count."""
    student, teacher, kwargs = _inputs(case, 42, 3, 4, 1.0)
    mask = kwargs["mask"]
    return {"mask": (student, teacher, mask[:, :-1]),
            "mask_rank": (student, teacher, mask[..., None]),
            "width": (student, teacher[:, :1] if TOKEN_LAYOUTS[case] == "attention" else teacher[..., :-1], mask)}


@pytest.mark.parametrize("case", TOKEN_LAYOUTS)
@pytest.mark.parametrize("bad", ["mask", "mask_rank", "width"])
def test_token_loss_shape_errors_read_as_in_reference(backend, case, bad):
    student, teacher, mask = _bad_token_shapes(case)[bad]
    with pytest.raises(ValueError) as reference_error:
        _reference(case)(student, teacher, mask)
    with pytest.raises(ValueError) as backend_error:
        backend.value_and_grad(case, student, teacher, {"mask": mask}, "float64")
    assert str(backend_error.value) == str(reference_error.value)
    expected = {"mask": "mask must be (batch, tokens)", "mask_rank": "mask must be (batch, tokens)",
                "width": "they differ in heads" if TOKEN_LAYOUTS[case] == "attention" else "they differ in hidden"}
    assert expected[bad] in str(reference_error.value)


def test_embedding_metric_error_reads_as_in_reference(backend):
    student, teacher, _ = _inputs("embedding", 43, 2, 3, 1.0)
    with pytest.raises(ValueError, match="embedding: metric must be one of 'mse', 'cosine', got 'l1'"):
        backend.value_and_grad("embedding", student, teacher, {"metric": "l1"}, "float64")
