"""Optimizers: exact equalities with torch's AdamW / Muon, AdaTask's formula, APT, sparse rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from aptrank.apt.optim import AdamW, AdaTask, AdaTaskMuon, Muon, TaskAwareOptimizer, zeropower_via_newtonschulz
from aptrank.apt.optim.newton_schulz import NS_COEFFICIENTS, NS_EPS, orthogonalise_all

STEPS = 8


def params(seed: int = 0, shapes=((6, 5), (5,), (3, 6))) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]


def grads_for(ps, step: int, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed * 1000 + step)
    return [torch.randn(p.shape, generator=g) for p in ps]


def task_grads_for(ps, step: int, k: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7000 + step)
    return [torch.randn((k, *p.shape), generator=g) for p in ps]


def run(opt, ps, steps: int = STEPS, **step_kw):
    for t in range(steps):
        for p, g in zip(ps, grads_for(ps, t), strict=True):
            p.grad = g.clone()
        opt.step(**step_kw)
    return [p.detach().clone() for p in ps]


def assert_same(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y), (x - y).abs().max()


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adamw_equals_torch_adamw(wd: float) -> None:
    ours, ref = params(), params()
    a = run(AdamW(ours, lr=1e-2, weight_decay=wd), ours)
    b = run(torch.optim.AdamW(ref, lr=1e-2, weight_decay=wd, foreach=False), ref)
    assert_same(a, b)


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adatask_with_one_task_equals_adamw_step_for_step(wd: float) -> None:
    ours, ref = params(), params()
    opt = AdaTask(ours, num_tasks=1, lr=1e-2, weight_decay=wd)
    torch_opt = torch.optim.AdamW(ref, lr=1e-2, weight_decay=wd, foreach=False)
    for t in range(STEPS):
        gs = grads_for(ours, t)
        for p, q, g in zip(ours, ref, gs, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step(task_grads={p: g.unsqueeze(0) for p, g in zip(ours, gs, strict=True)})
        torch_opt.step()
        assert_same(ours, ref)  # every step, not only the end


def test_adatask_matches_reference_formula() -> None:
    """Per-task Adam moments; theta <- theta (1 - lr wd) - sum_k lr m_k_hat / (sqrt(v_k_hat) + eps)."""
    k, lr, wd, (b1, b2), eps = 3, 1e-2, 0.01, (0.9, 0.999), 1e-8
    ours = params()
    opt = AdaTask(ours, num_tasks=k, lr=lr, weight_decay=wd)
    theta = [p.detach().double().numpy().copy() for p in ours]
    m = [np.zeros((k, *t.shape)) for t in theta]
    v = [np.zeros((k, *t.shape)) for t in theta]
    for step in range(1, STEPS + 1):
        tg = task_grads_for(ours, step, k)
        for p, g in zip(ours, tg, strict=True):
            p.grad = g.sum(0)
        opt.step(task_grads=dict(zip(ours, tg, strict=True)))
        for i, g in enumerate(tg):
            gd = g.double().numpy()
            theta[i] = theta[i] * (1 - lr * wd)
            for t in range(k):
                m[i][t] = b1 * m[i][t] + (1 - b1) * gd[t]
                v[i][t] = b2 * v[i][t] + (1 - b2) * gd[t] ** 2
                mhat, vhat = m[i][t] / (1 - b1**step), v[i][t] / (1 - b2**step)
                theta[i] = theta[i] - lr * mhat / (np.sqrt(vhat) + eps)
    for p, t in zip(ours, theta, strict=True):
        np.testing.assert_allclose(p.detach().double().numpy(), t, rtol=1e-5, atol=1e-6)


def test_adatask_reads_task_contributions_through_the_mix() -> None:
    """With task_mix C the moments see u = C G (PCGrad's projected gradients, MGDA's weighted ones)."""
    k = 3
    a_ps, b_ps = params(), params()
    a = AdaTask(a_ps, num_tasks=k, lr=1e-2)
    b = AdaTask(b_ps, num_tasks=k, lr=1e-2)
    mix = torch.tensor([[1.0, -0.2, 0.0], [0.0, 0.5, 0.0], [0.1, 0.0, 2.0]])
    for step in range(4):
        tg = task_grads_for(a_ps, step, k)
        u = [(mix @ g.reshape(k, -1)).view_as(g) for g in tg]
        for p, q, _g, uu in zip(a_ps, b_ps, tg, u, strict=True):
            p.grad, q.grad = uu.sum(0), uu.sum(0)
        a.step(task_grads=dict(zip(a_ps, tg, strict=True)), task_mix=mix)
        b.step(task_grads=dict(zip(b_ps, u, strict=True)))
    for p, q in zip(a_ps, b_ps, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def two_d(seed: int = 0):
    # two (16, 8) matrices: our Muon orthogonalises them in one stack
    return params(seed, shapes=((16, 8), (8, 12), (10, 10), (16, 8)))


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("adjust", [None, "match_rms_adamw"])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_muon_equals_torch_muon_on_2d(nesterov: bool, adjust: str | None, wd: float) -> None:
    ours, ref = two_d(), two_d()
    kw = dict(lr=0.02, momentum=0.95, nesterov=nesterov, weight_decay=wd, adjust_lr_fn=adjust)
    a = run(Muon(ours, **kw), ours)
    b = run(torch.optim.Muon(ref, **kw), ref)
    assert_same(a, b)


def test_newton_schulz_equals_torch() -> None:
    from torch.optim._muon import _zeropower_via_newtonschulz

    g = torch.randn(20, 7)
    for x in (g, g.T):
        expected = _zeropower_via_newtonschulz(x, (3.4445, -4.775, 2.0315), 5, 1e-7)
        assert torch.equal(zeropower_via_newtonschulz(x), expected)


def test_batched_newton_schulz_gives_each_matrix_its_own_bits() -> None:
    """A [B, m, n] stack and ``orthogonalise_all`` (buckets by shape and settings) give exactly what
    one call per matrix gives."""
    g = torch.Generator().manual_seed(4)
    mats = [torch.randn(9, 5, generator=g) for _ in range(3)] + [torch.randn(4, 7, generator=g) for _ in range(2)]
    mats.append(torch.zeros(4, 7))  # a zero matrix stays zero (eps guard) in a stack too
    stacked = zeropower_via_newtonschulz(torch.stack(mats[:3]))
    for m, o in zip(mats[:3], stacked, strict=True):
        assert torch.equal(o, zeropower_via_newtonschulz(m))
    settings = [(NS_COEFFICIENTS, 5, NS_EPS)] * 5 + [(NS_COEFFICIENTS, 3, NS_EPS)]
    for m, o, (coef, steps, eps) in zip(mats, orthogonalise_all(mats, settings), settings, strict=True):
        assert torch.equal(o, zeropower_via_newtonschulz(m, coef, steps, eps))
    assert not orthogonalise_all(mats[-1:], settings[-1:])[0].any()


def test_muon_holds_an_auxiliary_adamw_for_non_2d_parameters() -> None:
    ours = params(shapes=((6, 5), (5,), (7,)))
    ref_m, ref_a = params(shapes=((6, 5), (5,), (7,)))[:1], params(shapes=((6, 5), (5,), (7,)))[1:]
    opt = Muon(ours, lr=0.02, weight_decay=0.0, adamw_lr=1e-3, adamw_weight_decay=0.01)
    kinds = sorted(g["kind"] for g in opt.param_groups)
    assert kinds == ["adam", "muon"]
    tm = torch.optim.Muon(ref_m, lr=0.02, weight_decay=0.0)
    ta = torch.optim.AdamW(ref_a, lr=1e-3, weight_decay=0.01, foreach=False)
    for t in range(STEPS):
        gs = grads_for(ours, t)
        for p, g in zip(ours, gs, strict=True):
            p.grad = g.clone()
        for p, g in zip(ref_m + ref_a, gs, strict=True):
            p.grad = g.clone()
        opt.step()
        tm.step()
        ta.step()
    assert_same(ours, ref_m + ref_a)


# ---- APT ---------------------------------------------------------------------------------------
def test_apt_with_equal_bounds_is_adamw_exactly() -> None:
    a_ps, b_ps = params(), params()
    a = run(AdamW(a_ps, lr=1e-2, weight_decay=0.01, apt=True, beta_min=0.9, beta_max=0.9), a_ps)
    b = run(AdamW(b_ps, lr=1e-2, weight_decay=0.01), b_ps)
    assert_same(a, b)


def step_both_with_task_grads(a, b, a_ps: list, b_ps: list, k: int) -> None:
    """STEPS steps of two optimizers fed the same per-task gradients; their parameters must agree."""
    for step in range(STEPS):
        tg = task_grads_for(a_ps, step, k)
        for p, q, g in zip(a_ps, b_ps, tg, strict=True):
            p.grad, q.grad = g.sum(0), g.sum(0)
        a.step(task_grads=dict(zip(a_ps, tg, strict=True)))
        b.step(task_grads=dict(zip(b_ps, tg, strict=True)))
    assert_same(a_ps, b_ps)


def test_apt_with_equal_bounds_is_adatask_exactly() -> None:
    k = 3
    a_ps, b_ps = params(), params()
    a = AdaTask(a_ps, num_tasks=k, lr=1e-2, apt=True, beta_min=0.9, beta_max=0.9)
    b = AdaTask(b_ps, num_tasks=k, lr=1e-2)
    step_both_with_task_grads(a, b, a_ps, b_ps, k)


@pytest.mark.parametrize("nesterov", [True, False])
def test_apt_with_equal_bounds_is_muon_exactly(nesterov: bool) -> None:
    a_ps, b_ps = two_d(), two_d()
    a = run(Muon(a_ps, momentum=0.95, nesterov=nesterov, apt=True, beta_min=0.95, beta_max=0.95), a_ps)
    b = run(Muon(b_ps, momentum=0.95, nesterov=nesterov), b_ps)
    assert_same(a, b)


def test_apt_with_equal_bounds_is_adatask_muon_exactly() -> None:
    k = 3
    a_ps, b_ps = two_d(), two_d()
    a = AdaTaskMuon(a_ps, num_tasks=k, apt=True, beta_min=0.9, beta_max=0.9)
    b = AdaTaskMuon(b_ps, num_tasks=k)
    step_both_with_task_grads(a, b, a_ps, b_ps, k)


def test_apt_adaptive_momentum_matches_reference() -> None:
    """s = cos(m_{t-1}, d_t), beta_t = lo + (hi - lo)(1 + s)/2, m_t = beta_t m + (1 - beta_t) d, bias
    correction 1 - prod beta_t (Adam's second moment unchanged)."""
    lo, hi, lr, b2, eps = 0.5, 0.9, 1e-2, 0.999, 1e-8
    (p,) = params(shapes=((4, 3),))
    opt = AdamW([p], lr=lr, weight_decay=0.0, apt=True, beta_min=lo, beta_max=hi)
    theta = p.detach().double().numpy().copy()
    m, v, prod = np.zeros_like(theta), np.zeros_like(theta), 1.0
    rng = np.random.default_rng(0)
    base = rng.normal(size=theta.shape)
    for step in range(1, 10):
        d = base * (1 if step % 3 else -1) + 0.3 * rng.normal(size=theta.shape)  # some sign flips
        p.grad = torch.from_numpy(d).float()
        opt.step()
        d = p.grad.double().numpy()
        nm, nd = np.linalg.norm(m), np.linalg.norm(d)
        s = (m * d).sum() / (nm * nd) if nm > 0 else 0.0
        beta = lo + (hi - lo) * (1 + s) / 2
        m = beta * m + (1 - beta) * d
        v = b2 * v + (1 - b2) * d**2
        prod *= beta
        theta = theta - lr * (m / (1 - prod)) / (np.sqrt(v / (1 - b2**step)) + eps)
        np.testing.assert_allclose(p.detach().double().numpy(), theta, rtol=1e-5, atol=1e-6)


def test_apt_lowers_beta_on_conflict() -> None:
    (p,) = params(shapes=((5, 5),))
    opt = AdamW([p], apt=True, beta_min=0.5, beta_max=0.9)
    g = torch.randn(5, 5)
    p.grad = g.clone()
    opt.step()  # m_1 is parallel to g
    p.grad = g.clone()
    betas = opt._apt_betas([(p, opt.param_groups[0], None)])
    assert betas[id(p)][0] == pytest.approx(0.9)  # same direction: keep momentum
    p.grad = -g
    betas = opt._apt_betas([(p, opt.param_groups[0], None)])
    assert betas[id(p)][0] == pytest.approx(0.5)  # opposite: the new direction steers


def test_direction_preservation_adds_normalised_task_gradients_before_newton_schulz() -> None:
    k, gamma = 3, 0.3
    (a,), (b,) = two_d()[:1], two_d()[:1]
    opt = Muon([a], momentum=0.95, nesterov=True, weight_decay=0.0, direction_preservation=True, gamma=gamma)
    buf = torch.zeros_like(b)
    for step in range(4):
        tg = task_grads_for([a], step, k)[0]
        a.grad = tg.sum(0)
        opt.step(task_grads={a: tg})
        grad = tg.sum(0)
        buf.lerp_(grad, 1 - 0.95)
        m = grad.lerp(buf, 0.95)
        unit = tg / tg.reshape(k, -1).norm(dim=1).view(k, 1, 1)
        m = m / m.norm() + gamma * unit.sum(0) / k
        with torch.no_grad():
            b.add_(zeropower_via_newtonschulz(m), alpha=-0.02 * max(1, 16 / 8) ** 0.5)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_direction_preservation_needs_muon() -> None:
    with pytest.raises(ValueError, match="direction preservation"):
        TaskAwareOptimizer(params(), {"kind": "adam", "dp": True})


# ---- sparse rows -------------------------------------------------------------------------------
def test_sparse_rows_match_a_dense_reference_on_touched_rows() -> None:
    """Row-wise lazy AdamW: touched rows follow AdamW (global step count for bias correction);
    untouched rows and their moments do not move."""
    rows, dim, lr, wd, (b1, b2), eps = 20, 4, 1e-2, 0.01, (0.9, 0.999), 1e-8
    emb = nn.Embedding(rows, dim, sparse=True)
    opt = AdamW(emb.parameters(), lr=lr, weight_decay=wd)
    w = emb.weight.detach().double().numpy().copy()
    m, v = np.zeros_like(w), np.zeros_like(w)
    g = torch.Generator().manual_seed(0)
    for step in range(1, 9):
        ids = torch.randint(0, rows, (6,), generator=g)
        before = emb.weight.detach().clone()
        emb(ids).pow(2).sum().backward()
        grad = emb.weight.grad
        assert grad.is_sparse
        dense_grad = grad.to_dense().double().numpy()
        touched = np.unique(ids.numpy())
        opt.step()
        emb.weight.grad = None
        for r in touched:
            w[r] *= 1 - lr * wd
            m[r] = b1 * m[r] + (1 - b1) * dense_grad[r]
            v[r] = b2 * v[r] + (1 - b2) * dense_grad[r] ** 2
            w[r] -= lr / (1 - b1**step) * m[r] / (np.sqrt(v[r] / (1 - b2**step)) + eps)
        untouched = np.setdiff1d(np.arange(rows), touched)
        assert torch.equal(emb.weight.detach()[untouched], before[untouched])
        np.testing.assert_allclose(emb.weight.detach().double().numpy(), w, rtol=1e-5, atol=1e-6)


def test_sparse_rows_touching_every_row_equal_dense_adamw_exactly() -> None:
    rows, dim = 8, 3
    a = nn.Embedding(rows, dim, sparse=True)
    b = nn.Embedding(rows, dim)
    b.load_state_dict(a.state_dict())
    oa = AdamW(a.parameters(), lr=1e-2, weight_decay=0.01)
    ob = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.01, foreach=False)
    ids = torch.arange(rows)
    for step in range(5):
        for e in (a, b):
            (e(ids) * (step + 1)).sin().sum().backward()
        oa.step()
        ob.step()
        a.weight.grad = b.weight.grad = None
        assert torch.equal(a.weight, b.weight)
