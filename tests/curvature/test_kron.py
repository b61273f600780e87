"""K-FAC / KFC Kronecker factors and the Kronecker-factored q-NGD direction (spec 3.7).

References, all independent of arraycurv.kfac:

* deep linear networks (Dense without bias, identity activations) under MSE:
  ``kron(G, A)`` against the materialized GGN diagonal blocks (``ggn_block_diag``) and
  the factors against the closed forms E_i = W_{>i}^T W_{>i}, A_i = W_{<i} Sxx W_{<i}^T
  (Bernacchia eqs 14, 15, 22) computed in NumPy and by the DeepLinear closed form of ``kron_factors``;
* general MLPs and CNNs: both factors against their definitions, with the input patches
  gathered by explicit loops and the output cotangents from central finite differences
  of the network tail (exact and Monte-Carlo variants); batch size 1 with Dense layers:
  ``kron(G, A)`` equals the exact GGN block of [W, b] (rank-one input moment);
* the direction against the explicit ``psd_power(kron(G, A), -1/q) @ grad`` and, for
  deep linear networks, against ``qngd_blockdiag_direction`` built from the materialized
  blocks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import Sequential, backend, mlp
from arraycurv.models.layers import Activation, Dense, MaxPool2d
from arraycurv.models.sequential import layer_param_indices
from tests.cases import CE, MSE, cnn_models, make_case, mlp_models, out_dim
from tests.helpers import RTOL, assert_close, dtypes, seeds
from tests.references.curvature import npf


# ---------------------------------------------------------------- helpers
@st.composite
def deep_linear_cases(draw):
    depth = draw(st.integers(1, 4))
    widths = tuple(draw(st.integers(1, 5)) for _ in range(depth + 1))
    return widths, draw(st.integers(1, 8)), draw(dtypes), draw(seeds)


def layer_out_shapes(model):
    ins, out = ac.models.sequential._shapes(model)
    return tuple(ins[1:]) + (out,)


def np_patches(x, layer):
    """Explicit im2col loop: (B, T, C*kh*kw) with T in row-major (u, v) order."""
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho = (xpad.shape[2] - kh) // sh + 1
    wo = (xpad.shape[3] - kw) // sw + 1
    out = np.empty((x.shape[0], ho * wo, x.shape[1] * kh * kw))
    for b in range(x.shape[0]):
        for u in range(ho):
            for v in range(wo):
                out[b, u * wo + v] = xpad[b, :, sh * u : sh * u + kh, sw * v : sw * v + kw].ravel()
    return out


def differentiable_at(layer, a, gap=1e-4):
    """False at (or within ``gap`` of) a kink, where central differences are not a
    derivative: relu inputs near 0 (e.g. the exact zeros behind a dead unit) and max-pool
    windows whose two largest entries (nearly) tie."""
    if isinstance(layer, Activation) and layer.name == "relu":
        return bool(np.all(np.abs(a) > gap))
    if isinstance(layer, MaxPool2d):
        (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
        ho, wo = (a.shape[2] - kh) // sh + 1, (a.shape[3] - kw) // sw + 1
        for u in range(ho):
            for v in range(wo):
                win = np.sort(a[:, :, sh * u : sh * u + kh, sw * v : sw * v + kw].reshape(a.shape[0], a.shape[1], -1))
                if np.any(win[..., -1] - win[..., -2] <= gap):
                    return False
    return True


def tail_jacobians(model, params, i, z):
    """d f / d z_b of the layers after i at z (B, *out_shape_i) by central differences
    (float64): array (B, k, D)."""
    layers = model.layers[i + 1 :]
    b = z.shape[0]
    d = int(np.prod(z.shape[1:]))
    if not layers:
        return np.broadcast_to(np.eye(d), (b, d, d)).copy()
    tail = Sequential(layers, tuple(z.shape[1:]))
    p0 = layer_param_indices(model)[i][1]
    tp = tuple(np.asarray(npf(p)).reshape(p.shape) for p in params[p0:])
    h = 1e-6
    out = []
    for bb in range(b):
        eye = np.eye(d).reshape((d, *z.shape[1:]))
        zp = z[bb][None] + h * eye
        zm = z[bb][None] - h * eye
        out.append(((npf(ac.forward(tail, tp, zp)) - npf(ac.forward(tail, tp, zm))) / (2 * h)).T)
    return np.stack(out)


def reference_factors(model, params, x, loss, cotangent_rows):
    """(A, G) per parameterized layer from the definitions; ``cotangent_rows(out)`` gives
    the (m, B, k) output cotangents (rows of S_b, or sampled residuals) and the count
    m_avg to average over (1 for the exact factor, N for Monte-Carlo)."""
    xs = npf(x).reshape(x.shape)
    ps = tuple(npf(p).reshape(p.shape) for p in params)
    out = npf(ac.forward(model, ps, xs))
    cot, m_avg = cotangent_rows(out)
    b = xs.shape[0]
    refs = []
    a = xs
    for i, (layer, (p0, p1)) in enumerate(zip(model.layers, layer_param_indices(model))):
        assume(differentiable_at(layer, a))
        z = npf(ac.models.layers.layer_forward(layer, ps[p0:p1], a)[0]).reshape((b, *layer_out_shapes(model)[i]))
        if p1 > p0:
            jt = tail_jacobians(model, ps, i, z)  # (B, k, D)
            delta = np.einsum("mbk,bkd->mbd", cot, jt)  # (m, B, D)
            if isinstance(layer, Dense):
                rows = a
                dl = delta.reshape(-1, layer.n_out)
                t = 1
            else:
                pt = np_patches(a, layer)
                t = pt.shape[1]
                rows = pt.reshape(-1, pt.shape[2])
                dl = delta.reshape(delta.shape[0], b, layer.out_channels, t).transpose(0, 1, 3, 2)
                dl = dl.reshape(-1, layer.out_channels)
            if layer.bias:
                rows = np.concatenate([rows, np.ones((rows.shape[0], 1))], axis=1)
            refs.append((rows.T @ rows / b, dl.T @ dl / (b * t * m_avg)))
        a = z
    return refs


def exact_rows(loss):
    def rows(out):
        s = npf(ac.losses.loss_hessian_factor(loss, out))  # (B, k, k)
        return s.transpose(1, 0, 2), 1

    return rows


def block_index(layer, offset):
    """Flat indices of [W, b] in row-major order of the (n_out, n_in + 1) matrix."""
    w_shape = ac.models.layers.layer_param_shapes(layer)[0]
    n_out, n_in = w_shape[0], int(np.prod(w_shape[1:]))
    idx = []
    for r in range(n_out):
        idx += [offset + r * n_in + c for c in range(n_in)]
        if layer.bias:
            idx.append(offset + n_out * n_in + r)
    return np.array(idx)


def param_offsets(model):
    sizes = [int(np.prod(s)) for s in ac.param_shapes(model)]
    return np.concatenate([[0], np.cumsum(sizes)])


# ------------------------------------------------------------- deep linear
@settings(max_examples=10)
@given(case=deep_linear_cases())
def test_kfac_equals_exact_block_diagonal_for_deep_linear_networks(xp, case):
    widths, b, dtype, seed = case
    model = mlp(widths, activation="identity", bias=False)
    params, x, y, _ = make_case(xp, model, b, dtype, seed)
    factors = ac.curvature.kron_factors(model, params, x)
    blocks = ac.ggn_block_diag(model, params, (x, y))
    assert len(factors) == len(blocks) == len(widths) - 1
    # closed forms (Bernacchia eqs 14, 15) in NumPy
    ws = [npf(w) for w in params]
    xs = npf(x)
    sxx = xs.T @ xs / b
    for i, (f, blk) in enumerate(zip(factors, blocks)):
        pre = np.eye(widths[0])
        for w in ws[:i]:
            pre = w @ pre
        suf = np.eye(widths[i + 1])
        for w in ws[i + 1 :]:
            suf = w @ suf
        scale = max(1.0, float(np.abs(pre @ sxx @ pre.T).max()) * float(np.abs(suf.T @ suf).max()))
        assert_close(ac.curvature.kfac_block(f), blk, like=params[0], atol=RTOL[dtype] * scale)
        assert_close(f.A, pre @ sxx @ pre.T, like=params[0])
        assert_close(f.G, suf.T @ suf, like=params[0])
    # the DeepLinear model itself gives Bernacchia's factors (its registered closed form,
    # also reached through the alias fisher_kron_factors and from LinearMoments), equal to
    # the layer-wise K-FAC of its Sequential form
    dl = ac.DeepLinear(widths)
    closed = ac.curvature.kron_factors(dl, params, x)
    assert type(closed) is tuple and len(closed) == len(factors)
    alias = ac.curvature.fisher_kron_factors(dl, params, (x, y))
    from_moments = ac.curvature.kron_factors(dl, params, ac.models.moments(x, y))
    for f, g, (e_i, a_i), h in zip(closed, factors, alias, from_moments):
        assert_close(f.G, g.G, like=params[0])
        assert_close(f.A, g.A, like=params[0])
        assert_close(f.G, e_i, like=params[0])
        assert_close(f.A, a_i, like=params[0])
        assert_close(h.G, f.G, like=params[0])
        assert_close(h.A, f.A, like=params[0])
        assert f.param_index == g.param_index and f.layer == g.layer and not f.bias


# ------------------------------------------------------- general networks
@settings(max_examples=10, deadline=None)
@given(model=st.one_of(mlp_models(), cnn_models()), b=st.integers(1, 3), seed=seeds,
       loss=st.sampled_from([MSE, CE]))
def test_factors_match_their_definitions_exact_fisher(model, b, seed, loss):
    """A from explicit patch loops, G from finite-difference cotangents of the rows of S_b."""
    if out_dim(model) < 2:
        loss = MSE
    np_ns = backend.namespace_by_name("numpy")
    params, x, _, _ = make_case(np_ns, model, b, "float64", seed, loss)
    got = ac.curvature.kron_factors(model, params, x, loss)
    ref = reference_factors(model, params, x, loss, exact_rows(loss))
    assert len(got) == len(ref)
    for f, (a, g) in zip(got, ref):
        np.testing.assert_allclose(f.A, a, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(a).max()))
        np.testing.assert_allclose(f.G, g, rtol=1e-6, atol=1e-7 * max(1.0, np.abs(g).max()))


@settings(max_examples=6, deadline=None)
@given(model=st.one_of(mlp_models(), cnn_models()), b=st.integers(1, 3), seed=seeds, n=st.integers(1, 3),
       loss=st.sampled_from([MSE, CE]))
def test_factors_match_their_definitions_monte_carlo(model, b, seed, n, loss):
    """G from output gradients at targets drawn from the model (same seed), averaged."""
    if out_dim(model) < 2:
        loss = MSE
    np_ns = backend.namespace_by_name("numpy")
    params, x, _, _ = make_case(np_ns, model, b, "float64", seed, loss)

    def rows(out):
        ys = ac.losses.sample_targets(loss, out, seed + 1, n)
        return np.stack([npf(ac.losses.loss_grad(loss, out, ys[j])) for j in range(n)]), n

    got = ac.curvature.kron_factors(model, params, x, loss, fisher="mc", num_samples=n, seed=seed + 1)
    for f, (a, g) in zip(got, reference_factors(model, params, x, loss, rows)):
        np.testing.assert_allclose(f.A, a, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(a).max()))
        np.testing.assert_allclose(f.G, g, rtol=1e-6, atol=1e-7 * max(1.0, np.abs(g).max()))


@settings(max_examples=10)
@given(model=mlp_models(), seed=seeds, dtype=dtypes, loss=st.sampled_from([MSE, CE]))
def test_batch_of_one_dense_blocks_are_exact(xp, model, seed, dtype, loss):
    """B = 1: the input moment is rank one, so kron(G, A) is the exact GGN block of [W, b]."""
    if out_dim(model) < 2:
        loss = MSE
    params, x, y, _ = make_case(xp, model, 1, dtype, seed, loss)
    ggn = npf(ac.ggn_matrix(model, params, (x, y), loss))
    offs = param_offsets(model)
    factors = ac.curvature.kron_factors(model, params, x, loss)
    for f in factors:
        idx = block_index(model.layers[f.layer], offs[layer_param_indices(model)[f.layer][0]])
        ref = ggn[np.ix_(idx, idx)]
        assert_close(ac.curvature.kfac_block(f), ref, like=params[0], atol=RTOL[dtype] * max(1.0, np.abs(ggn).max()))


@settings(max_examples=10)
@given(model=st.one_of(mlp_models(), cnn_models()), b=st.integers(1, 4), seed=seeds, dtype=dtypes,
       loss=st.sampled_from([MSE, CE]), fisher=st.sampled_from(["exact", "mc"]))
def test_kfac_blocks_are_symmetric_psd_in_the_callers_namespace(xp, model, b, seed, dtype, loss, fisher):
    if out_dim(model) < 2:
        loss = MSE
    params, x, _, _ = make_case(xp, model, b, dtype, seed, loss)
    for f in ac.curvature.kron_factors(model, params, x, loss, fisher=fisher, num_samples=2, seed=seed):
        blk = ac.curvature.kfac_block(f)
        assert_close(blk, np.transpose(npf(blk)), like=params[0])
        w = np.linalg.eigvalsh(npf(blk))
        assert w.min() >= -RTOL[dtype] * max(1.0, abs(w).max()), w.min()
        assert f.A.shape[0] == f.A.shape[1] and f.G.shape[0] == f.G.shape[1]


# ------------------------------------------------------------- direction
@settings(max_examples=12)
@given(model=st.one_of(mlp_models(), cnn_models()), b=st.integers(1, 4), seed=seeds, dtype=dtypes,
       q=st.sampled_from([1.0, 2.0, 3.5]), damping=st.sampled_from([0.0, 0.1]), normalize=st.booleans(),
       fisher=st.sampled_from(["exact", "mc"]))
def test_direction_equals_explicit_power_of_the_kronecker_block(xp, model, b, seed, dtype, q, damping, normalize,
                                                               fisher):
    """Pseudo-inverse powers (damping 0) use a cut-off well above rounding (sqrt(eps)) so
    that both sides drop the same eigenvalues of the (often rank-deficient) blocks."""
    params, x, y, _ = make_case(xp, model, b, dtype, seed)
    rcond = None if damping else (1e-7 if dtype == "float64" else 1e-3)
    d = ac.kfac_qngd_direction(model, params, (x, y), q, damping=damping, rcond=rcond, fisher=fisher,
                               normalize=normalize, num_samples=2, seed=seed)
    _, grad = ac.value_and_grad(model, params, (x, y))
    factors = ac.curvature.kron_factors(model, params, x, fisher=fisher, num_samples=2, seed=seed)
    norm = len(factors) ** (1.0 / q) if normalize else 1.0
    offs = param_offsets(model)
    g_flat = npf(grad)
    got = npf(d)
    expected = np.zeros_like(g_flat)
    for f in factors:
        idx = block_index(model.layers[f.layer], offs[layer_param_indices(model)[f.layer][0]])
        power = npf(ac.linalg.psd_power(ac.linalg.kron(f.G, f.A), -1.0 / q, damping=damping, rcond=rcond))
        expected[idx] = -power @ g_flat[idx] / norm
    # per tensor relative to its own scale, plus rounding relative to the whole direction: a
    # tensor whose exact value is 0 (dead relu units) holds only eigenvector-mixing noise
    # in the explicit reference
    assert_close(d, ac.unflatten(backend.from_numpy(expected, xp, dtype=dtype), ac.param_shapes(model)),
                 like=params[0], rtol=50 * RTOL[dtype], atol=50 * RTOL[dtype] * float(np.abs(expected).max()))
    assert got.shape == g_flat.shape


@settings(max_examples=10)
@given(case=deep_linear_cases(), q=st.sampled_from([1.0, 2.0, 4.0]))
def test_direction_of_deep_linear_net_equals_exact_blockdiagonal_q_ngd(xp, case, q):
    """Huh (2020) eqs 19-21: K-FAC blocks are exact here, so the direction is q-NGD-d.

    The damping bounds the amplification of rounding errors in the (often singular)
    blocks by (lambda_max / damping)^(1/q); float32 uses a larger one to keep it ~100."""
    widths, b, dtype, seed = case
    damping = 1e-3 if dtype == "float64" else 1e-1
    model = mlp(widths, activation="identity", bias=False)
    params, x, y, _ = make_case(xp, model, b, dtype, seed)
    d = ac.kfac_qngd_direction(model, params, (x, y), q, damping=damping)
    ref = ac.qngd_blockdiag_direction(model, params, (x, y), q, damping=damping)
    assert_close(d, ref, like=params[0], rtol=20 * RTOL[dtype])
    # the DeepLinear model gives the same direction
    assert_close(ac.kfac_qngd_direction(ac.DeepLinear(widths), params, (x, y), q, damping=damping), ref,
                 like=params[0], rtol=20 * RTOL[dtype])


def test_infinite_q_is_the_gradient_direction(xp):
    model = mlp((3, 4, 2))
    params, x, y, _ = make_case(xp, model, 3, "float64", 0)
    _, g = ac.value_and_grad(model, params, (x, y))
    assert_close(ac.kfac_qngd_direction(model, params, (x, y), math.inf), tuple(-t for t in g), like=params[0])


def test_lenet5_factor_shapes_on_8x8_digits():
    """A LeNet-5 on 8x8 digits: factor sizes (C kh kw + 1 with the bias) and a finite direction."""
    xp = backend.namespace_by_name("numpy")
    model = ac.lenet5((1, 8, 8))
    params = ac.init_params(model, 0, xp)
    x = ac.backend.normal(1, (4, 1, 8, 8), xp)
    factors = ac.curvature.kron_factors(model, params, x, CE)
    shapes = [(f.G.shape[0], f.A.shape[0]) for f in factors]
    assert shapes == [(6, 26), (16, 151), (120, 65), (84, 121), (10, 85)]
    y = ac.backend.integers(2, 0, 10, (4,), xp)
    d = ac.kfac_qngd_direction(model, params, (x, y), 2.0, loss=CE, damping=1e-3)
    assert [tuple(t.shape) for t in d] == [tuple(p.shape) for p in params]
    assert np.all(np.isfinite(npf(d)))


# ------------------------------------------------------------- bad input
def test_bad_inputs_raise_named_errors(xp):
    model = mlp((3, 4, 2))
    params, x, y, _ = make_case(xp, model, 3, "float64", 0)
    with pytest.raises(ValueError, match="fisher: expected one of"):
        ac.curvature.kron_factors(model, params, x, fisher="empirical")
    with pytest.raises(ValueError, match="num_samples: expected a positive integer"):
        ac.curvature.kron_factors(model, params, x, fisher="mc", num_samples=0)
    with pytest.raises(TypeError, match="model: expected a Sequential"):
        ac.curvature.kron_factors("mlp", params, x)
    with pytest.raises(ValueError, match=r"params: expected 4 arrays"):
        ac.curvature.kron_factors(model, params[:2], x)
    nan = params[0] * float("nan")
    with pytest.raises(ValueError, match=r"params\[0\]: expected finite values"):
        ac.curvature.kron_factors(model, (nan,) + params[1:], x)
    with pytest.raises(ValueError, match="x: expected finite values"):
        ac.curvature.kron_factors(model, params, x * float("inf"))
    with pytest.raises(TypeError, match="factors: expected a KFactors"):
        ac.curvature.kfac_block((params[0], params[0]))
    with pytest.raises(ValueError, match="q: expected a real number >= 1"):
        ac.kfac_qngd_direction(model, params, (x, y), 0.5)
    with pytest.raises(ValueError, match="damping: expected"):
        ac.kfac_qngd_direction(model, params, (x, y), 2.0, damping=-1.0)
    with pytest.raises(ValueError, match="rcond: expected"):
        ac.kfac_qngd_direction(model, params, (x, y), 2.0, rcond=float("nan"))
    with pytest.raises(TypeError, match="batch: expected a tuple"):
        ac.kfac_qngd_direction(model, params, x, 2.0)
    with pytest.raises(ValueError, match="fisher: expected"):
        ac.kfac_qngd_direction(model, params, (x, y), 2.0, fisher="emp")


@settings(max_examples=8)
@given(case=deep_linear_cases(), fisher=st.sampled_from(["exact", "mc"]))
def test_deep_linear_cases_the_closed_form_does_not_cover_defer_to_the_default(xp, case, fisher):
    """Softmax cross-entropy and Monte-Carlo factors of a DeepLinear come from the default
    (its Sequential form), the same numbers as for the equivalent mlp."""
    widths, b, dtype, seed = case
    widths = widths[:-1] + (max(2, widths[-1]),)
    model = mlp(widths, activation="identity", bias=False)
    params, x, _, _ = make_case(xp, model, b, dtype, seed, CE)
    for loss in (CE, MSE):
        if loss == MSE and fisher == "exact":
            continue
        got = ac.curvature.kron_factors(ac.DeepLinear(widths), params, x, loss, fisher=fisher, num_samples=2,
                                        seed=seed)
        ref = ac.curvature.kron_factors(model, params, x, loss, fisher=fisher, num_samples=2, seed=seed)
        assert len(got) == len(ref)
        for f, g in zip(got, ref):
            assert_close(f.G, g.G, like=params[0])
            assert_close(f.A, g.A, like=params[0])


def test_layer_norm_is_not_a_kfac_layer():
    from arraycurv.models.layers import LayerNorm

    model = Sequential((Dense(3, 4), LayerNorm(4), Activation("gelu"), Dense(4, 2)), (3,))
    np_ns = backend.namespace_by_name("numpy")
    params = ac.init_params(model, 0, np_ns)
    with pytest.raises(TypeError, match=r"model: K-FAC supports Dense and Conv2d layers.*layers\[1\]"):
        ac.curvature.kron_factors(model, params, backend.normal(3, (2, 3), np_ns))


def test_unsupported_parameterized_layer_is_named():
    from dataclasses import dataclass

    from arraycurv.models.layers import layer_forward, layer_output_shape, layer_param_shapes

    @dataclass(frozen=True)
    class Scale:
        n: int

    layer_param_shapes.register(Scale)(lambda layer: ((layer.n,),))
    layer_output_shape.register(Scale)(lambda layer, s: tuple(s))
    layer_forward.register(Scale)(lambda layer, p, x: (x * p[0], x))
    model = Sequential((Scale(3), Dense(3, 2)), (3,))
    np_ns = backend.namespace_by_name("numpy")
    params = (backend.normal(0, (3,), np_ns), backend.normal(1, (2, 3), np_ns), backend.normal(2, (2,), np_ns))
    x = backend.normal(3, (2, 3), np_ns)
    with pytest.raises(TypeError, match=r"model: K-FAC supports Dense and Conv2d layers.*layers\[0\]"):
        ac.curvature.kron_factors(model, params, x)

