"""The backward-stable ``svd`` form of q-NGD and the kept-rank report (issue #9).

``qngd_direction_svd`` computes d = -V diag(sigma (sigma^2 + damping)^{-1/q}) U^T s from
the thin SVD of the stacked Jacobian A (G = A^T A, g = A^T s). References:

* well-conditioned MLPs (MSE and softmax cross-entropy) and deep linear networks: the
  materialized GGN and gradient on the host, raised to the power with ``numpy.linalg.eigh``
  (same cut-off rule), and the other exact forms;
* accuracy: an exactly representable A = U diag(sigma) V^T with known Hadamard-based
  orthogonal U, V and sigma = 2^-e spanning cond 1e4 / 1e8 / 1e12
  (``tests/references/ill_conditioned.py``), where the answer is known in closed form and
  the error of a backward-stable algorithm (the first-order change of the exact answer
  under relative eps perturbations of A and s) is computed from SVD perturbation theory.
  The svd form stays within 10x of that limit; the full and dual forms, which decompose
  A^T A or A A^T (condition number squared), are 100x or more above it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import backend
from arraycurv.directions import fractional as fr
from tests.helpers import assert_close, seeds
from tests.references.deep_linear import make_case, np_of, np_psd_power, ref_qngd
from tests.references.ill_conditioned import exact_direction, exact_svd_case, model_case, stable_limit

QS = (1.0, 2.0, 4.0)


def _mlp_case(xp, seed, nb, ce, dtype="float64"):
    model = ac.mlp((3, 4, 3), activation="tanh")
    params = ac.init_params(model, seed, xp, dtype=dtype)
    x = backend.normal(seed + 1, (nb, 3), xp, dtype=dtype)
    if ce:
        y, loss = backend.integers(seed + 2, 0, 3, (nb,), xp), ac.SoftmaxCrossEntropy()
    else:
        y, loss = backend.normal(seed + 2, (nb, 3), xp, dtype=dtype), ac.MSE()
    return model, params, (x, y), loss


def _host_ggn_grad(model, params, batch, loss):
    """GGN and gradient as float64 host arrays (from the caller's data)."""
    gg = backend.to_numpy(ac.ggn_matrix(model, params, batch, loss)).astype(np.float64)
    _, g = ac.value_and_grad(model, params, batch, loss)
    return gg, backend.to_numpy(ac.flatten(g)).astype(np.float64)


def _kappa(gg, rcond, damping=0.0, gap=1e3):
    """Condition number of G + damping I on the kept range, or None when an eigenvalue
    lies within ``gap`` of the cut-off (the kept set would be ambiguous)."""
    lam = np.linalg.eigvalsh(gg) + damping
    rel = lam / lam.max()
    if np.any((rel > rcond / gap) & (rel < rcond * gap)):
        return None
    return 1.0 / rel[rel > rcond].min()


# --------------------------------------------------------------------------- agreement
@settings(max_examples=10)
@given(seed=seeds, q=st.sampled_from(QS), nb=st.integers(1, 6), ce=st.booleans(),
       damping=st.sampled_from([0.0, 0.01]))
def test_svd_form_matches_reference_and_other_forms_for_mlp(xp, seed, q, nb, ce, damping):
    model, params, batch, loss = _mlp_case(xp, seed, nb, ce)
    gg, g = _host_ggn_grad(model, params, batch, loss)
    rcond = 1e-9
    kappa = _kappa(gg, rcond, damping)
    assume(kappa is not None and kappa < 1e5)
    expected = -np_psd_power(gg, -1.0 / q, rcond, damping) @ g
    rtol = max(1e-10, 200 * np.finfo(np.float64).eps * kappa ** (1 + 1 / q))
    d = fr.qngd_direction_svd(model, params, batch, q, damping=damping, rcond=rcond, loss=loss)
    assert_close(ac.flatten(d), expected, like=params[0], rtol=rtol, name="svd")
    for form in ("full", "dual"):
        other = fr.qngd_direction(model, params, batch, q, form=form, damping=damping, rcond=rcond, loss=loss)
        assert_close(ac.flatten(d), ac.flatten(other), like=params[0], rtol=rtol, name=f"svd vs {form}")


@settings(max_examples=10)
@given(seed=seeds, q=st.sampled_from(QS), nb=st.integers(1, 6), ce=st.booleans())
def test_svd_form_float32(xp, seed, q, nb, ce):
    # float32 inputs; the reference is computed in float64 from the same (rounded) data
    model, params, batch, loss = _mlp_case(xp, seed, nb, ce, dtype="float32")
    gg, g = _host_ggn_grad(model, params, batch, loss)
    rcond, damping = 1e-6, 0.1  # G + damping I >= 0.1 I: the cut-off never bites
    kappa = _kappa(gg, rcond, damping)
    assume(kappa is not None and kappa < 100.0)
    expected = -np_psd_power(gg, -1.0 / q, rcond, damping) @ g
    # no squared condition number in the svd form: 50 eps32 kappa (at most ~6e-4 here)
    rtol = 50 * float(np.finfo(np.float32).eps) * kappa
    d = fr.qngd_direction(model, params, batch, q, form="svd", damping=damping, rcond=rcond, loss=loss)
    assert_close(ac.flatten(d), expected, like=params[0], rtol=rtol)


@pytest.mark.parametrize("q", QS)
@pytest.mark.parametrize("damping", [0.0, 0.05])
def test_svd_form_matches_reference_for_deep_linear(xp, q, damping):
    model, params, batch = make_case(xp, (3, 4, 2, 3), 5, 4)  # bottleneck: G singular
    rcond = 1e-9
    expected = ref_qngd(np_of(params), *np_of(batch), q, rcond, damping)
    for fn in (fr.qngd_direction_svd, fr.qngd_direction_full, fr.qngd_direction_dual):
        d = fn(model, params, batch, q, damping=damping, rcond=rcond)
        assert_close(ac.flatten(d), expected, like=params[0], rtol=1e-9, name=fn.__name__)


def test_svd_rcond_means_the_same_as_in_the_other_forms(numpy_xp):
    """The cut-off is relative to the largest eigenvalue of G (sigma_max^2), not to
    sigma_max: a cut-off between two eigenvalues of G drops the same directions in every
    form, and the direction is the closed form on the kept singular triplets."""
    xp = numpy_xp
    u, sig, v, c = exact_svd_case(16, 2.0**15, 3)  # sigma = 2^0, 2^-1, ..., 2^-15
    model, params, batch = model_case(xp, u, sig, v, c)
    rel = (sig / sig.max()) ** 2
    cut = math.sqrt(rel[7] * rel[8])  # geometric middle between two eigenvalues of G
    kept = rel > cut
    for q in QS:
        expected = -(v @ np.where(kept, sig ** (1.0 - 2.0 / q) * c, 0.0))
        for form in ("svd", "full", "dual"):
            d, info = fr.qngd_direction(model, params, batch, q, form=form, rcond=cut, return_info=True)
            assert info.rank == int(kept.sum()) == 8
            assert_close(ac.flatten(d), expected, like=params[0], rtol=1e-9, name=form)


def test_svd_form_q_inf_and_batch_errors(xp):
    model, params, batch = make_case(xp, (2, 3, 2), 4, 0)
    d = fr.qngd_direction_svd(model, params, batch, math.inf)
    _, g = ac.value_and_grad(model, params, batch)
    assert_close(ac.flatten(d), -backend.to_numpy(ac.flatten(g)), like=params[0], rtol=1e-12)
    with pytest.raises(TypeError, match=r"^batch: expected a tuple \(x, y\) for form='svd'"):
        fr.qngd_direction_svd(model, params, ac.models.whitened_moments(params[1] @ params[0]), 1.0)
    with pytest.raises(ValueError, match=r"^q: expected"):
        fr.qngd_direction_svd(model, params, batch, 0.5)
    with pytest.raises(ValueError, match=r"^damping: expected"):
        fr.qngd_direction_svd(model, params, batch, 1.0, damping=-1.0)


# --------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("cond", [1e4, 1e8, 1e12])
@pytest.mark.parametrize("q", QS)
def test_svd_form_is_backward_stable_where_gram_forms_lose_digits(numpy_xp, cond, q):
    xp = numpy_xp
    u, sig, v, c = exact_svd_case(64, cond, 0)
    model, params, batch = model_case(xp, u, sig, v, c)
    assert np.array_equal(backend.to_numpy(batch[0]) / 8.0, (u * sig) @ v.T)  # data exact
    expected = exact_direction(u, sig, v, c, q)
    limit = stable_limit(u, sig, v, c, q)
    rcond = 1e-3 * (sig.min() / sig.max()) ** 2  # below the spectrum: keep every direction
    errs = {}
    for form in ("svd", "full", "dual"):
        d = backend.to_numpy(ac.flatten(fr.qngd_direction(model, params, batch, q, form=form, rcond=rcond)))
        errs[form] = float(np.linalg.norm(d - expected) / np.linalg.norm(expected))
    assert errs["svd"] <= 10 * limit, (errs, limit)
    assert errs["full"] >= 100 * limit and errs["dual"] >= 100 * limit, (errs, limit)


@pytest.mark.parametrize("q", QS)
def test_svd_form_backward_stable_float32(numpy_xp, q):
    """float32 at cond 2^10 ~ 1e3: cond^2 is near 1 / eps32, so the Gram forms keep 1-2
    digits at best; the svd form stays within 10x of the float32 limit."""
    xp = numpy_xp
    u, sig, v, c = exact_svd_case(16, 1e3, 1)
    model, params, batch = model_case(xp, u, sig, v, c, dtype="float32")
    expected = exact_direction(u, sig, v, c, q)
    limit = stable_limit(u, sig, v, c, q, eps=float(np.finfo(np.float32).eps))
    rcond = 1e-3 * (sig.min() / sig.max()) ** 2
    errs = {}
    for form in ("svd", "full", "dual"):
        d = backend.to_numpy(ac.flatten(fr.qngd_direction(model, params, batch, q, form=form, rcond=rcond)))
        errs[form] = float(np.linalg.norm(d - expected) / np.linalg.norm(expected))
    assert errs["svd"] <= 10 * limit, (errs, limit)
    assert min(errs["full"], errs["dual"]) >= 30 * limit, (errs, limit)


def test_float32_default_cutoff_drops_most_of_the_spectrum_and_info_shows_it(xp):
    """The issue's trap: in float32 the default cut-off P eps32 (relative to sigma_max^2)
    keeps only sigma > sqrt(16 eps32) sigma_max ~ 1.4e-3 sigma_max; return_info reports
    the kept rank (counted from the exact sigma) without changing the cut-off."""
    u, sig, v, c = exact_svd_case(16, 2.0**40, 2)  # sigma = 2^-e, e = 0, 3, 5, ..., 40
    model, params, batch = model_case(xp, u, sig, v, c, dtype="float32")
    # float32 X: sums of 16 terms spanning 40 bits are rounded, so compare the count only
    rc = 16 * float(np.finfo(np.float32).eps)
    want = int(np.sum(sig**2 > rc * sig.max() ** 2))
    assert 2 <= want <= 6
    d, info = fr.qngd_direction(model, params, batch, 1.0, form="svd", return_info=True)
    assert (info.rank, info.size, info.form) == (want, 16, "svd")
    assert info.rcond == pytest.approx(rc) and info.dropped == 16 - want
    plain = fr.qngd_direction(model, params, batch, 1.0, form="svd")
    assert_close(ac.flatten(d), ac.flatten(plain), like=params[0], rtol=0.0)
