"""The online natural gradient rule of Bernacchia, Lengyel & Hennequin (2018) Sec. 5.

``bernacchia_ngd(alpha) = chain(scale_by_bernacchia(damping=levenberg_marquardt(...)), scale_by_lr(alpha))``:

* per layer the damped natural gradient of eq (20),
  ``dW_i = (alpha / L) (Lambda~_i + sqrt(lambda) I)^{-1} <e_i x_{i-1}^T> (Lambda_i + sqrt(lambda) I)^{-1}``
  (:func:`arraycurv.directions.bernacchia.bernacchia_factors`: the error covariance from
  K samples of the model's predictive distribution, K = 1 by default as in the paper);
* lambda adapted by a damping controller of :mod:`arraycurv.rules.damping`, by default
  :func:`~arraycurv.rules.damping.levenberg_marquardt` with the thresholds 0.25 / 0.75 and
  factors 3/2, 2/3 of eq (21), from the ratio rho of the actual change of the loss to the
  change predicted by the quadratic model of footnote 1
  (:func:`arraycurv.rules.transforms.predicted_change`). With ``same_batch=True`` (default)
  the actual change is measured on the minibatch of the previous step (one extra forward
  pass), so that minibatch noise does not enter rho;
* the inverses either computed afresh from the minibatch (``inverse="direct"`` or
  ``"randomized"``, Sec. 7) or kept as **running inverses** in the state
  (``inverse="sherman_morrison"``): exponential moving averages of the two covariances,
  updated by Woodbury with ``sm_rows`` sampled rows per step
  (:func:`arraycurv.linalg.lowrank.running_inverse`), re-inverted directly only when the
  damping changes (the paper notes that adaptive damping and Sherman-Morrison estimation
  do not combine directly, Sec. 7).

The state is the NamedTuple :class:`BernacchiaState`. See ``docs/bernacchia.md``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .. import backend
from ..directions.bernacchia import (
    INVERSES,
    _dense_widths,
    _factors,
    _layer_directions,
    _mc_errors,
    _noise_factor,
    _prepare,
    _to_params,
)
from ..linalg.lowrank import running_inverse
from ..losses import MSE, loss_value
from ..models import sequential as _seq
from ..models.base import forward, linearize
from ..models.deep_linear import DeepLinear, LinearMoments, _prefixes, _suffixes
from ..params import tree_vdot
from ..validation import check_int, check_real
from .base import UpdateRule, chain
from .damping import DampingController, levenberg_marquardt
from .registry import RuleSpec, register_rule
from .transforms import _predicted_change, scale_by_lr

__all__ = ["BERNACCHIA_INVERSES", "BernacchiaState", "bernacchia_ngd", "scale_by_bernacchia"]

#: ``inverse=`` of the rule: fresh inverses per step, or running Sherman-Morrison inverses.
BERNACCHIA_INVERSES = INVERSES + ("sherman_morrison",)


class BernacchiaState(NamedTuple):
    """State of :func:`scale_by_bernacchia`.

    Attributes
    ----------
    damping : NamedTuple
        The damping controller's state (``damping.damping`` is lambda).
    params, batch, value : optional
        Parameters, minibatch and loss of the previous step (for rho).
    direction : tuple, optional
        The previous preconditioned gradient ``P g`` (gradient-like).
    g_dot_d : float, optional
        ``<g, P g>`` of the previous step (footnote 1).
    covs, inverses : tuple, optional
        Running covariances ``(Lambda~_i, Lambda_i)`` and inverses of their damped
        versions (``inverse="sherman_morrison"``).
    inv_delta : float, optional
        The sqrt(lambda) the running inverses include.
    count : int
        Steps taken.
    """

    damping: Any
    params: Any = None
    batch: Any = None
    value: float | None = None
    direction: Any = None
    g_dot_d: float | None = None
    covs: Any = None
    inverses: Any = None
    inv_delta: float | None = None
    count: int = 0


def _batch_loss(model, params, batch) -> float:
    """Mean squared error of ``params`` on ``batch`` (one forward pass)."""
    if isinstance(batch, LinearMoments):
        from ..curvature.generic import value_and_grad

        return float(value_and_grad(model, params, batch, MSE())[0])
    x, y = batch
    return float(loss_value(MSE(), forward(model, params, x), y))


def _controller_update(controller, dstate, state, params, value, same_batch, model):
    """The damping step of eq (21) with the predicted change of the previous step."""
    if state.params is None:
        return controller.update(dstate, value=value, predicted_change=None)
    step = tuple(p - q for p, q in zip(params, state.params))
    pred = _predicted_change(step, state.direction, state.g_dot_d)
    fields = getattr(dstate, "_fields", ())
    if same_batch and "value" in fields and state.batch is not None:
        now = _batch_loss(model, params, state.batch)  # the new parameters on the previous minibatch
        return controller.update(dstate._replace(value=state.value), value=now, predicted_change=pred)
    return controller.update(dstate, value=value, predicted_change=pred)


def _factor_rows(xp, model, params, batch, m, seed, chol, inv_chol):
    """Sample rows of both covariances from ``m`` inputs of the batch: per layer
    ``(e_i rows, x_{i-1} rows)`` with ``rows^T rows / m`` an unbiased estimate of
    Lambda~_i and Lambda_i (one Monte-Carlo error per input, back-propagated)."""
    x = batch[0]
    nb = x.shape[0]
    if m < nb:
        idx = backend.rng(seed).choice(nb, size=m, replace=False)
        x = xp.take(x, xp.asarray(backend.to_numpy(idx)), axis=0)
    if isinstance(model, DeepLinear):
        pre = _prefixes(xp, params)
        wbar = pre.pop()
        suf = _suffixes(xp, params)
        out = xp.matmul(x, xp.matrix_transpose(wbar))
        e = _mc_errors(xp, out, chol, inv_chol, seed, 1)[0, ...]
        return tuple((xp.matmul(e, s), xp.matmul(x, xp.matrix_transpose(p))) for p, s in zip(pre, suf))
    lin = linearize(model, params, x)
    e = _mc_errors(xp, lin.outputs, chol, inv_chol, seed, 1)
    deltas = _seq.backprop_to_layer_outputs(lin, e)
    inputs = _seq.layer_inputs(lin)
    rows = []
    for i, (layer, (p0, p1)) in enumerate(zip(model.layers, _seq.layer_param_indices(model))):
        if p1 == p0:
            continue
        a = inputs[i]
        if layer.bias:
            a = xp.concat([a, xp.ones((a.shape[0], 1), dtype=a.dtype, device=backend.device_of(a))], axis=1)
        rows.append((xp.reshape(deltas[i], (-1, layer.n_out)), a))
    return tuple(rows)


def _running_inverses(xp, model, params, batch, factors, state, delta, opts, seed, chol, inv_chol):
    """EMA covariances of the minibatches and the running inverses of their damped
    versions: refreshed by a direct inversion of ``EMA + sqrt(lambda) I`` at the start,
    when lambda changed and every ``refresh`` steps; in between updated by Woodbury with
    ``sm_rows`` sampled rows, ``D <- decay D + (1 - decay) rows^T rows / m`` (so the
    damping inside D decays as decay^t until the next refresh)."""
    decay, sm_rows, refresh = opts
    new = tuple((f.error_cov, f.input_cov) for f in factors.layers)
    covs = new if state.covs is None else tuple(
        (decay * e + (1 - decay) * ne, decay * a + (1 - decay) * na) for (e, a), (ne, na) in zip(state.covs, new))
    stale = (state.inverses is None or state.inv_delta is None or not math.isclose(state.inv_delta, delta)
             or state.count % refresh == 0)
    if stale:
        return covs, _direct(xp, covs, delta), delta
    rows = _factor_rows(xp, model, params, batch, sm_rows, seed, chol, inv_chol)
    invs = tuple((running_inverse(ei, re, decay=decay), running_inverse(ai, ra, decay=decay))
                 for (ei, ai), (re, ra) in zip(state.inverses, rows))
    return covs, invs, state.inv_delta


def _direct(xp, covs, delta):
    """Direct inverses of ``cov + delta I`` (a tiny ridge n eps when delta = 0)."""
    out = []
    for e, a in covs:
        pair = []
        for c in (e, a):
            n = c.shape[-1]
            eye = xp.eye(n, dtype=c.dtype, device=backend.device_of(c))
            reg = delta if delta > 0 else n * float(xp.finfo(c.dtype).eps) * float(xp.max(xp.abs(c)))
            pair.append(xp.linalg.inv(c + reg * eye))
        out.append(tuple(pair))
    return tuple(out)


def scale_by_bernacchia(*, damping=None, num_samples=1, noise_cov=None, inverse="direct", same_batch=True,
                        decay=0.5, sm_rows=None, refresh=10, rcond=None, seed=0) -> UpdateRule:
    """The preconditioning transform of eq (20): gradient -> ``P g`` with
    ``-P g = (1 / L) (Lambda~ + sqrt(lambda) I)^{-1} <e x^T> (Lambda + sqrt(lambda) I)^{-1}``
    per layer (Bernacchia et al. (2018) eqs 10, 20, 21, Sec. 5-7).

    Parameters
    ----------
    damping : DampingController or float, optional
        A controller of :mod:`arraycurv.rules.damping`; a number is the initial lambda of
        :func:`~arraycurv.rules.damping.levenberg_marquardt` (eq 21); default
        ``levenberg_marquardt(1e-3)``.
    num_samples : int or None
        K samples of q(y|x) per input for the error covariance; None: closed form.
    noise_cov : array, optional
        The predictive covariance Sigma~.
    inverse : {"direct", "randomized", "sherman_morrison"}
        Fresh inverses per step, or running inverses in the state (see the module).
    same_batch : bool
        Measure rho on the previous minibatch (one extra forward pass).
    decay, sm_rows, refresh : float, int, int
        Running inverses (``inverse="sherman_morrison"``): EMA decay, sampled inputs per
        Woodbury update (default: the largest layer width) and the period of the direct
        refresh (also done whenever lambda changes).
    rcond, seed
        Cut-off of the pseudo-inverses and seed of the samples (advanced per step).
    """
    if inverse not in BERNACCHIA_INVERSES:
        raise ValueError(f"inverse: expected one of {BERNACCHIA_INVERSES}, got {inverse!r}")
    if damping is None:
        damping = levenberg_marquardt(1e-3)
    elif not isinstance(damping, DampingController):
        damping = levenberg_marquardt(damping)
    if num_samples is not None:
        num_samples = check_int(num_samples, "num_samples", lo=1, want="None (closed form) or a positive integer")
    decay = check_real(decay, "decay", lo=0, lo_open=True, hi=1, want="a number in (0, 1]")
    sm_rows = check_int(sm_rows, "sm_rows", lo=1, allow_none=True)
    refresh = check_int(refresh, "refresh", lo=1)
    controller = damping

    def init(params):
        return BernacchiaState(controller.init())

    def update(grads, state, params, *, model, batch, loss=None, value=None, **extra):
        if not isinstance(state, BernacchiaState):
            raise TypeError(f"state: expected a BernacchiaState from rule.init(params), got {type(state).__name__}")
        if loss is not None and not isinstance(loss, MSE):
            raise TypeError(f"loss: expected MSE() (the Gaussian likelihood of eq 6), got {loss!r}")
        xp, _ = _prepare(model, params, batch, noise_cov, num_samples)
        chol, inv_chol = _noise_factor(xp, noise_cov, _dense_widths(model)[-1], params[0])
        step_seed = [int(backend.rng(seed).integers(2**31)), state.count]
        factors = _factors(xp, model, params, batch, chol, inv_chol, num_samples, step_seed)
        value = float(factors.loss) if value is None else float(value)
        dstate = _controller_update(controller, state.damping, state, params, value, same_batch, model)
        delta = math.sqrt(float(dstate.damping))
        covs = inv_delta = None
        if inverse == "sherman_morrison":
            if not isinstance(batch, (tuple, list)):
                raise TypeError(f"batch: expected a tuple (x, y) for inverse='sherman_morrison', got "
                                f"{type(batch).__name__}")
            width = max(max(f.error_cov.shape[-1], f.input_cov.shape[-1]) for f in factors.layers)
            covs, invs, inv_delta = _running_inverses(xp, model, params, batch, factors, state, delta,
                                                      (decay, sm_rows or width, refresh), step_seed, chol, inv_chol)
            layer_d = tuple(-xp.matmul(xp.matmul(e, f.grad), a) / len(invs) for (e, a), f in zip(invs, factors.layers))
        else:
            invs = None
            layer_d = _layer_directions(xp, factors.layers, delta, inverse, rcond, step_seed, 1.0 / len(factors.layers))
        d = _to_params(model, layer_d)
        g = _to_params(model, tuple(f.grad for f in factors.layers))
        pg = tuple(-di for di in d)
        new = BernacchiaState(dstate, tuple(params), batch, value, pg, float(tree_vdot(g, pg)), covs,
                              invs, inv_delta, state.count + 1)
        return pg, new

    return UpdateRule(init, update, "scale_by_bernacchia")


def bernacchia_ngd(alpha=1.0, *, damping=None, num_samples=1, noise_cov=None, inverse="direct", same_batch=True,
                   decay=0.5, sm_rows=None, refresh=10, rcond=None, seed=0, name="bernacchia_ngd") -> UpdateRule:
    """Online natural gradient descent of Bernacchia et al. (2018) Sec. 5 (Fig. 1):
    ``chain(scale_by_bernacchia(...), scale_by_lr(alpha))``, the step
    ``Delta W_i = (alpha / L) (Lambda~_i + sqrt(lambda_k) I)^{-1} <e_i x_{i-1}^T> (Lambda_i + sqrt(lambda_k) I)^{-1}``
    of eq (20) with lambda_k adapted by eq (21) (footnote 1's predicted decrease).

    ``alpha`` is the paper's learning rate (1 in Fig. 1); a number ``damping`` is the
    initial lambda of :func:`arraycurv.rules.damping.levenberg_marquardt`; the other
    arguments are those of :func:`scale_by_bernacchia`. Works for deep linear networks and
    MLPs (Sec. 5, Fig. 1D) under the Gaussian likelihood (MSE).
    """
    return chain(scale_by_bernacchia(damping=damping, num_samples=num_samples, noise_cov=noise_cov, inverse=inverse,
                                     same_batch=same_batch, decay=decay, sm_rows=sm_rows, refresh=refresh, rcond=rcond,
                                     seed=seed),
                 scale_by_lr(alpha), name=name)


register_rule(RuleSpec("bernacchia_ngd", bernacchia_ngd, "NGD (Bernacchia)", 1.0, "eqs (10), (20)-(21), footnote 1",
                       "Bernacchia et al. 2018"))
