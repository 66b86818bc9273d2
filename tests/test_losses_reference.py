"""The numpy reference losses against hand-computed values and known identities."""

import inspect

import numpy as np
import pytest
from scipy.special import entr, log_softmax, rel_entr, softmax
from scipy.stats import pearsonr

from kdistill.losses import CATALOGUE
from kdistill.losses import reference as R

RNG = np.random.default_rng(20240611)
S = RNG.normal(size=(6, 5)) * 2
T_ = RNG.normal(size=(6, 5)) * 2
LABELS = RNG.integers(5, size=6)


@pytest.mark.parametrize("name", CATALOGUE)
def test_every_catalogue_loss_has_a_reference_taking_its_params(name):
    parameters = inspect.signature(getattr(R, name)).parameters.values()
    assert {p.name for p in parameters if p.default is not p.empty} == set(CATALOGUE[name].params)
    default_temperature = CATALOGUE[name].default_temperature
    if default_temperature is not None:
        assert inspect.signature(getattr(R, name)).parameters["temperature"].default == default_temperature


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kd_of_identical_logits_is_zero(temperature):
    assert R.kd(S, S, temperature) == pytest.approx(0.0, abs=1e-15)


def test_kd_matches_kl_computed_by_hand():
    s = np.array([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])
    t = np.log([[1.0, 2.0, 3.0], [0.2, 0.5, 0.3]])
    # row 0: p_t = (1, 2, 3) / 6 against the uniform p_s = 1/3, so KL = Σ (k/6) · log(k/2)
    row0 = sum(k / 6 * np.log(k / 2) for k in (1, 2, 3))
    # row 1: p_t = (0.2, 0.5, 0.3) against softmax(1, -2, 0.5)
    row1 = rel_entr([0.2, 0.5, 0.3], softmax([1.0, -2.0, 0.5])).sum()
    assert R.kd(s, t) == pytest.approx((row0 + row1) / 2, rel=1e-14)
    # at T = 2 the distributions soften and the result is scaled by T² = 4
    expected_t2 = 4 * rel_entr(softmax(t / 2, axis=1), softmax(s / 2, axis=1)).sum(axis=1).mean()
    assert R.kd(s, t, temperature=2.0) == pytest.approx(expected_t2, rel=1e-14)


def test_kd_is_invariant_to_a_constant_per_row():
    shift = RNG.normal(size=(6, 1)) * 100
    assert R.kd(S + shift, T_ - shift, 2.0) == pytest.approx(R.kd(S, T_, 2.0), rel=1e-10)


def test_listwise_is_kd_on_the_same_arrays():
    assert R.listwise(S, T_, 1.5) == R.kd(S, T_, 1.5)


def test_soft_ce_is_kd_plus_teacher_entropy():
    q = softmax(T_ / 2, axis=1)
    assert R.soft_ce(S, q, 2.0) == pytest.approx(R.kd(S, T_, 2.0) + 4 * entr(q).sum(axis=1).mean(), rel=1e-12)


@pytest.mark.parametrize("shape", [(7,), (7, 1)])
def test_binary_kd_is_two_class_soft_ce(shape):
    s, t, temp = RNG.normal(size=shape) * 3, RNG.normal(size=shape) * 3, 2.5
    two = lambda z: np.stack([np.zeros(7), z.reshape(-1)], axis=1)  # noqa: E731
    q = softmax(two(t) / temp, axis=1)  # softmax([0, t] / T) = [1 − σ(t/T), σ(t/T)]
    np.testing.assert_allclose(q[:, 1], 1 / (1 + np.exp(-t.reshape(-1) / temp)), rtol=1e-14)
    assert R.binary_kd(s, t, temp) == pytest.approx(R.soft_ce(two(s), q, temp), rel=1e-12)
    # the BCE form is kd on the two-class logits plus T² · the teacher's binary entropy
    entropy = entr(q).sum(axis=1).mean()
    assert R.binary_kd(s, t, temp) == pytest.approx(R.kd(two(s), two(t), temp) + temp**2 * entropy, rel=1e-12)


def test_mse_and_hint_by_hand():
    a, b = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 0.0], [0.0, 4.0]])
    assert R.mse(a, b) == R.hint(a, b) == pytest.approx((0 + 4 + 9 + 0) / 4)


def test_attention_by_hand_and_scale_invariance():
    fs = RNG.normal(size=(3, 4, 5, 5))
    ft = RNG.normal(size=(3, 7, 5, 5))  # channels may differ
    maps = [(f**2).mean(axis=1).reshape(3, -1) for f in (fs, ft)]
    a_s, a_t = (m / np.linalg.norm(m, axis=1, keepdims=True) for m in maps)
    assert R.attention(fs, ft) == pytest.approx(((a_s - a_t) ** 2).mean(), rel=1e-13)
    assert R.attention(10.0 * fs, 0.01 * ft) == pytest.approx(R.attention(fs, ft), rel=1e-10)
    assert R.attention(fs, 3.0 * fs) == pytest.approx(0.0, abs=1e-15)


def test_dkd_matches_mdistiller_formula():
    temp = 4.0
    gt = np.eye(5, dtype=bool)[LABELS]

    def split(z):  # mdistiller's cat_mask: [p_gt, Σ others]
        p = softmax(z / temp, axis=1)
        return np.stack([p[gt], p[~gt].reshape(6, -1).sum(axis=1)], axis=1)

    tckd = temp**2 * rel_entr(split(T_), split(S)).sum(axis=1).mean()
    # mdistiller masks the target logit with −1000 before the non-target softmax
    masked = lambda z: softmax(z / temp - 1000.0 * gt, axis=1)  # noqa: E731
    nckd = temp**2 * rel_entr(masked(T_), masked(S)).sum(axis=1).mean()
    assert R.dkd(S, T_, LABELS, alpha=1.0, beta=0.0) == pytest.approx(tckd, rel=1e-10)
    assert R.dkd(S, T_, LABELS, alpha=0.0, beta=1.0) == pytest.approx(nckd, rel=1e-10)
    assert R.dkd(S, T_, LABELS) == pytest.approx(tckd + 8.0 * nckd, rel=1e-10)


def test_dkd_nckd_is_kd_on_the_non_target_logits():
    gt = np.eye(5, dtype=bool)[LABELS]
    drop = lambda z: z[~gt].reshape(6, 4)  # noqa: E731
    assert R.dkd(S, T_, LABELS, alpha=0.0, beta=1.0, temperature=2.0) == pytest.approx(
        R.kd(drop(S), drop(T_), 2.0), rel=1e-12
    )


def test_dkd_is_finite_at_extreme_logits():
    s = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4]])
    t = np.array([[-1e4, 1e4, 1e4], [1e4, -1e4, 1e4]])
    value = R.dkd(s, t, np.array([0, 2]))
    assert np.isfinite(value) and value > 1e4


def test_dist_matches_pearsonr():
    temp = 2.0
    p_s, p_t = softmax(S / temp, axis=1), softmax(T_ / temp, axis=1)
    inter = 1 - np.mean([pearsonr(a, b).statistic for a, b in zip(p_s, p_t)])
    intra = 1 - np.mean([pearsonr(a, b).statistic for a, b in zip(p_s.T, p_t.T)])
    expected = temp**2 * (0.5 * inter + 2.0 * intra)
    assert R.dist(S, T_, beta=0.5, gamma=2.0, temperature=temp) == pytest.approx(expected, rel=1e-6)


def test_dist_of_identical_logits_is_zero():
    assert R.dist(S, S) == pytest.approx(0.0, abs=1e-6)
    assert R.dist(S, -S) > 1.0  # anti-correlated probabilities are far from zero


def test_hard_is_task_cross_entropy_on_teacher_argmax():
    argmax = T_.argmax(axis=1)
    assert R.hard(S, T_) == R.task(S, argmax, "classification")
    assert R.hard(S, T_) == pytest.approx(-log_softmax(S, axis=1)[np.arange(6), argmax].mean(), rel=1e-14)


def test_task_losses_by_hand():
    y = np.array([1.0, 0.0, 1.0])
    z = np.array([0.3, -1.2, 2.0])
    bce = -np.mean(y * np.log(1 / (1 + np.exp(-z))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-z))))
    assert R.task(z[:, None], y, "binary") == pytest.approx(bce, rel=1e-13)
    assert R.task(z, y, "regression") == pytest.approx(np.mean((z - y) ** 2))
    rel = np.array([[0.0, 0.0, 0.0], [3.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    scores = RNG.normal(size=(3, 3))
    kept = [1, 2]  # the query without relevant items is left out of the mean
    expected = np.mean([-(rel[i] / rel[i].sum() * log_softmax(scores[i])).sum() for i in kept])
    assert R.task(scores, rel, "ranking") == pytest.approx(expected, rel=1e-13)
    assert R.task(scores, np.zeros((3, 3)), "ranking") == 0.0


def test_losses_are_finite_at_extreme_logits():
    s = np.array([[1e4, -1e4, 3.0], [-1e4, -1e4, 1e4]])
    t = np.array([[-1e4, 1e4, 0.0], [1e4, -1e4, -1e4]])
    for value in (R.kd(s, t), R.listwise(s, t), R.hard(s, t), R.dist(s, t), R.soft_ce(s, softmax(t, axis=1))):
        assert np.isfinite(value)
    assert R.kd(s, t) == pytest.approx(2e4, rel=1e-6)  # each row puts the teacher's class at log p_s = −2e4
    assert np.isfinite(R.binary_kd(s[:, 0], t[:, 0], 1.0))


def test_class_count_mismatch_names_the_arguments():
    expected = r"kd: student_logits has shape \(6, 5\) but teacher_logits has shape \(6, 4\)"
    with pytest.raises(ValueError, match=expected):
        R.kd(S, T_[:, :4])
    with pytest.raises(ValueError, match="teacher_probs"):
        R.soft_ce(S, softmax(T_[:, :4], axis=1))
    with pytest.raises(ValueError, match=r"labels has shape \(5,\)"):
        R.dkd(S, T_, LABELS[:5])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        R.dkd(S, T_, LABELS + 5)
    with pytest.raises(ValueError, match="spatial"):
        R.attention(np.ones((2, 3, 4, 4)), np.ones((2, 3, 4, 5)))
    with pytest.raises(ValueError, match=r"\(batch,\) or \(batch, 1\)"):
        R.binary_kd(np.ones((4, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        R.kd(S, T_, temperature=0.0)
    with pytest.raises(ValueError, match="unknown task 'clustering'"):
        R.task(S, LABELS, "clustering")


# --- transformer losses (per token, masked over padding) ---------------------------------------

MASK = np.array([[1, 1, 1, 0], [1, 0, 0, 0]])  # sequence 0: 3 real tokens, sequence 1: 1


def test_hidden_cosine_of_identical_orthogonal_and_opposite_states():
    h = RNG.normal(size=(2, 4, 3))
    assert R.hidden_cosine(h, 5.0 * h, MASK) == pytest.approx(0.0, abs=1e-15)
    assert R.hidden_cosine(h, -h, MASK) == pytest.approx(2.0, rel=1e-15)
    e0, e1 = np.zeros((2, 4, 3)), np.zeros((2, 4, 3))
    e0[..., 0], e1[..., 1] = 1.0, 1.0
    assert R.hidden_cosine(e0, e1, MASK) == pytest.approx(1.0, rel=1e-15)
    # a zero state has cosine 0 with anything: each side is divided by max(‖·‖, NORMALIZE_EPS)
    assert R.hidden_cosine(np.zeros((2, 4, 3)), h, MASK) == 1.0


def test_hidden_losses_pool_every_real_token_and_ignore_padding():
    s, t = RNG.normal(size=(2, 4, 3)), RNG.normal(size=(2, 4, 3))
    cos = lambda a, b: 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))  # noqa: E731
    real = [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert R.hidden_cosine(s, t, MASK) == pytest.approx(np.mean([cos(s[i], t[i]) for i in real]), rel=1e-13)
    assert R.hidden_mse(s, t, MASK) == pytest.approx(np.mean([np.sum((s[i] - t[i]) ** 2) for i in real]), rel=1e-13)
    # pooled over tokens, not a mean of per-sequence means: sequence 1's one token weighs 1/4, not 1/2
    per_sequence = np.mean([np.mean([cos(s[0, j], t[0, j]) for j in range(3)]), cos(s[1, 0], t[1, 0])])
    assert R.hidden_cosine(s, t, MASK) != pytest.approx(per_sequence, rel=1e-6)
    padded = s.copy()
    padded[MASK == 0] = 1e6  # whatever the padded positions hold
    assert R.hidden_cosine(padded, t, MASK) == R.hidden_cosine(s, t, MASK)
    assert R.hidden_mse(padded, t, MASK) == R.hidden_mse(s, t, MASK)
    assert R.hidden_mse(s, t, MASK.astype(bool)) == R.hidden_mse(s, t, MASK.astype(float))


def test_hidden_mse_sums_the_hidden_axis():
    s = np.array([[[1.0, 2.0], [0.0, 0.0]]])
    t = np.array([[[0.0, 0.0], [3.0, 4.0]]])
    assert R.hidden_mse(s, t, np.array([[1, 1]])) == pytest.approx((1 + 4 + 9 + 16) / 2)
    assert R.hidden_mse(s, t, np.array([[1, 0]])) == pytest.approx(5.0)


def _rows(*rows):
    """(1 sequence, 1 head, tokens, tokens) attention from its rows."""
    return np.array([[rows]], dtype=float)


def test_attention_kl_of_equal_distributions_is_zero():
    a = softmax(RNG.normal(size=(2, 3, 4, 4)) + np.where(MASK[:, None, None, :] != 0, 0.0, -np.inf), axis=-1)
    assert (a[..., 3] == 0).all()  # padded keys hold 0
    assert R.attention_kl(a, a, MASK) == 0.0


def test_attention_kl_by_hand():
    p = _rows([0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5])
    q = _rows([0.25, 0.75, 0.0], [0.5, 0.5, 0.0], [0.9, 0.05, 0.05])
    row0 = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)  # the teacher's 0 contributes 0
    row1 = np.log(2.0)
    assert R.attention_kl(q, p, np.array([[1, 1, 0]])) == pytest.approx((row0 + row1) / 2, rel=1e-14)
    assert R.attention_kl(q, p, np.array([[1, 1, 1]])) == pytest.approx(rel_entr(p, q).sum(axis=-1).mean(), rel=1e-14)


def test_attention_kl_averages_heads_and_pools_queries():
    p = softmax(RNG.normal(size=(2, 3, 4, 4)), axis=-1)
    q = softmax(RNG.normal(size=(2, 3, 4, 4)), axis=-1)
    kl = rel_entr(p, q).sum(axis=-1)  # (batch, heads, queries)
    assert R.attention_kl(q, p, MASK) == pytest.approx(kl.transpose(0, 2, 1)[MASK != 0].mean(), rel=1e-13)


def test_attention_kl_reads_a_zero_student_probability_as_the_floor():
    p, q = _rows([0.5, 0.5], [0.5, 0.5]), _rows([1.0, 0.0], [0.5, 0.5])
    expected = 0.5 * np.log(0.5) + 0.5 * (np.log(0.5) - np.log(R.PROBABILITY_FLOOR))
    assert R.attention_kl(q, p, np.array([[1, 0]])) == pytest.approx(expected, rel=1e-14)
    assert R.attention_kl(q, p, np.array([[1, 1]])) == pytest.approx(expected / 2, rel=1e-14)
    assert np.isfinite(expected) and expected > 13


def test_embedding_by_hand():
    s = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    t = np.array([[0.0, 1.0], [6.0, 8.0], [1.0, 1.0]])
    assert R.embedding(s, t) == pytest.approx((2 + 25 + 2) / 3)
    assert R.embedding(s, t, metric="cosine") == pytest.approx((1 + 0 + 1) / 3)  # orthogonal, parallel, zero


def test_token_losses_without_a_real_token_are_nan():
    h = np.ones((2, 4, 3))
    for value in (R.hidden_cosine(h, h, 0 * MASK), R.hidden_mse(h, h, 0 * MASK),
                  R.attention_kl(np.full((2, 1, 4, 4), 0.25), np.full((2, 1, 4, 4), 0.25), 0 * MASK)):
        assert np.isnan(value)


def test_transformer_loss_shape_errors_name_what_differs():
    h, a = np.ones((2, 4, 3)), np.full((2, 3, 4, 4), 0.25)
    with pytest.raises(ValueError, match=r"hidden_cosine: student_hidden has shape \(2, 4, 3\) but teacher_hidden has"
                                         r" shape \(2, 4, 5\); they must match as \(batch, tokens, hidden\); they"
                                         r" differ in hidden"):
        R.hidden_cosine(h, np.ones((2, 4, 5)), MASK)
    with pytest.raises(ValueError, match=r"hidden_mse: mask has shape \(2, 3\) but student_hidden_projected has shape"
                                         r" \(2, 4, 3\); mask must be \(batch, tokens\) = \(2, 4\)"):
        R.hidden_mse(h, h, MASK[:, :3])
    with pytest.raises(ValueError, match=r"hidden_mse: student_hidden_projected must be \(batch, tokens, hidden\)"):
        R.hidden_mse(h[0], h[0], MASK)
    with pytest.raises(ValueError, match="attention_kl: .* they differ in heads"):
        R.attention_kl(a, a[:, :2], MASK)
    with pytest.raises(ValueError, match=r"attention_kl: student_attention has shape \(2, 3, 4, 3\); its token axes"):
        R.attention_kl(a[..., :3], a[..., :3], MASK)
    with pytest.raises(ValueError, match=r"embedding: .* they differ in dim"):
        R.embedding(np.ones((3, 2)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="embedding: metric must be one of 'mse', 'cosine', got 'l1'"):
        R.embedding(np.ones((3, 2)), np.ones((3, 2)), metric="l1")
