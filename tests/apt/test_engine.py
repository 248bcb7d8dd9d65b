"""MultiTaskOptimizer on a small MMoE-shaped model: which gradient each parameter gets, per path.

The model here is plain torch (sparse EmbeddingBag tables, experts, one gate and tower per task),
so these tests do not depend on models/. References are computed by hand with autograd.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aptrank.apt import METHODS, MTLConfig, MultiTaskOptimizer, ParamRoles

K = 3


class TinyMMoE(nn.Module):
    def __init__(self, k: int = K, experts: int = 2, dim: int = 4, rows: int = 30, hidden: int = 8) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.tables = nn.ModuleList(nn.EmbeddingBag(rows, dim, mode="mean", sparse=True) for _ in range(2))
            d = 2 * dim + 3
            self.experts = nn.ModuleList(nn.Sequential(nn.Linear(d, hidden), nn.ReLU()) for _ in range(experts))
            self.gates = nn.ModuleList(nn.Linear(d, experts) for _ in range(k))
            self.towers = nn.ModuleList(
                nn.Sequential(nn.Linear(hidden, 4), nn.ReLU(), nn.Linear(4, 1)) for _ in range(k)
            )

    def forward_with_intermediates(self, batch, detach_rep: bool = False):
        ids, dense = batch
        emb = torch.cat([t(ids[:, i]) for i, t in enumerate(self.tables)] + [dense], dim=1)
        rep = torch.stack([e(emb) for e in self.experts], dim=1)
        r = rep.detach() if detach_rep else rep
        outs = [
            tower(torch.einsum("be,beh->bh", torch.softmax(gate(emb), -1), r))
            for gate, tower in zip(self.gates, self.towers, strict=True)
        ]
        return torch.cat(outs, dim=1), emb, rep

    def param_roles(self):
        return {
            "shared": [*self.experts.parameters(), *self.gates.parameters()],
            "embeddings": [t.weight for t in self.tables],
            "task": [list(t.parameters()) for t in self.towers],
            "output": [p for t in self.towers for p in t[2].parameters()],
        }


def batch(step: int, b: int = 16):
    g = torch.Generator().manual_seed(100 + step)
    ids = torch.randint(0, 30, (b, 2, 3), generator=g)
    dense = torch.randn(b, 3, generator=g)
    labels = torch.randint(0, 2, (b, K), generator=g).float()
    return (ids, dense), labels


def task_losses(logits, labels):
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(0)


def make(cfg: dict, model: TinyMMoE | None = None, **kw):
    model = model or TinyMMoE()
    opt = MultiTaskOptimizer(MTLConfig.from_dict(cfg), ParamRoles.from_model(model), K, **kw)
    return model, opt


def capture(opt: MultiTaskOptimizer) -> list[dict[str, torch.Tensor]]:
    """Record (dense copies of) the gradients the optimizer is about to apply, by parameter name."""
    seen: list[dict[str, torch.Tensor]] = []
    inner = opt.optimizer.step
    names = opt.roles.names

    def step(*args, **kwargs):
        grads = {}
        for group in opt.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None and id(p) in names:
                    grads[names[id(p)]] = p.grad.to_dense().clone() if p.grad.is_sparse else p.grad.clone()
        seen.append(grads)
        return inner(*args, **kwargs)

    opt.optimizer.step = step
    return seen


def one_step(cfg: dict, step: int = 0, **step_kw):
    model, opt = make(cfg)
    seen = capture(opt)
    (x, labels) = batch(step)
    logits, emb, rep = model.forward_with_intermediates(x)
    losses = task_losses(logits, labels)
    kw = {"embedded": emb, "representation": rep}
    kw.update(step_kw)
    metrics = opt.step(losses, **kw)
    return model, seen[0], metrics


def reference_per_task(model: TinyMMoE, params, step: int = 0):
    """Per-task gradients by K plain backward passes (dense)."""
    (x, labels) = batch(step)
    logits, _, _ = model.forward_with_intermediates(x)
    losses = task_losses(logits, labels)
    out = []
    for k in range(K):
        gs = torch.autograd.grad(losses[k], params, retain_graph=True, allow_unused=True)
        out.append(
            [
                torch.zeros_like(p) if g is None else (g.to_dense() if g.is_sparse else g)
                for g, p in zip(gs, params, strict=True)
            ]
        )
    return losses.detach(), out


def named(model: nn.Module):
    return dict(model.named_parameters())


def assert_grads(seen: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], tol: float = 1e-5) -> None:
    assert set(expected) <= set(seen), set(expected) - set(seen)
    for n, e in expected.items():
        torch.testing.assert_close(seen[n], e, rtol=tol, atol=tol, msg=n)


# ---- which gradient each parameter gets ---------------------------------------------------------
def test_ew_is_one_backward_of_the_summed_loss() -> None:
    _model, seen, _ = one_step({"method": "ew"})
    ref = TinyMMoE()
    (x, labels) = batch(0)
    task_losses(ref.forward_with_intermediates(x)[0], labels).sum().backward()
    expected = {n: (p.grad.to_dense() if p.grad.is_sparse else p.grad) for n, p in named(ref).items()}
    assert_grads(seen, expected, tol=1e-6)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("mgda", {}),
        ("pcgrad", {}),
        ("cagrad", {"alpha": 0.5}),
        ("nash_mtl", {"max_norm": 0.0}),
        ("imgrad", {}),
        ("sdmgrad", {}),
        ("aligned_mtl", {}),
    ],
)
@pytest.mark.parametrize("backend", ["batched", "loop"])
def test_exact_mode_writes_the_method_combination(name: str, kwargs: dict, backend: str) -> None:
    _model, seen, _ = one_step({"method": name, "method_kwargs": kwargs, "per_task_backend": backend, "seed": 5})
    ref = TinyMMoE()
    roles = ref.param_roles()
    shared, tables = roles["shared"], roles["embeddings"]
    towers = [p for ps in roles["task"] for p in ps]
    params = shared + tables + towers
    losses, per_task = reference_per_task(ref, params)
    gram = torch.zeros(K, K, dtype=torch.float64)
    for i in range(len(shared)):
        flat = torch.stack([per_task[k][i].reshape(-1) for k in range(K)]).double()
        gram += flat @ flat.T
    method = METHODS[name](K, generator=torch.Generator().manual_seed(5), **kwargs)
    comb = method.combine(gram, losses.double())
    names = {id(p): n for n, p in named(ref).items()}
    expected = {}
    for i, p in enumerate(params):
        w = comb.coef if i < len(shared) else comb.tower_weights
        expected[names[id(p)]] = sum(float(w[k]) * per_task[k][i] for k in range(K))
    assert_grads(seen, expected)


@pytest.mark.parametrize("backend", ["batched", "loop"])
@pytest.mark.parametrize("method", ["mgda", "nash_mtl"])
def test_tables_never_get_per_task_dense_copies_under_scope_dense(monkeypatch, backend: str, method: str) -> None:
    """No backward ever asks for a table's gradient per task: tables get one summed sparse gradient."""
    requested = []
    inner = torch.autograd.grad

    def spy(outputs, inputs, *args, **kwargs):
        requested.extend(tuple(x.shape) for x in ([inputs] if isinstance(inputs, torch.Tensor) else inputs))
        return inner(outputs, inputs, *args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    model, opt = make({"method": method, "per_task_backend": backend})
    grads_seen = []
    inner_step = opt.optimizer.step

    def step(*a, **kw):
        grads_seen.extend(t.weight.grad for t in model.tables)
        return inner_step(*a, **kw)

    opt.optimizer.step = step
    (x, labels) = batch(0)
    logits, emb, rep = model.forward_with_intermediates(x)
    opt.step(task_losses(logits, labels), embedded=emb, representation=rep)
    table_shape = tuple(model.tables[0].weight.shape)
    assert requested and table_shape not in requested
    assert len(grads_seen) == 2 and all(g.is_sparse for g in grads_seen)


@pytest.mark.parametrize("backend", ["batched", "loop"])
@pytest.mark.parametrize("method", ["mgda", "nash_mtl"])
def test_without_embedded_the_tables_get_the_same_gradient(backend: str, method: str) -> None:
    cfg = {"method": method, "per_task_backend": backend}
    _, with_emb, _ = one_step(cfg)
    _, without, _ = one_step(cfg, embedded=None)
    assert_grads(without, with_emb, tol=1e-6)


@pytest.mark.parametrize("method, extra", [("mgda", 0), ("nash_mtl", 1), ("uw", 2)])
def test_loop_backend_runs_k_backward_passes(monkeypatch, method: str, extra: int) -> None:
    """Unit tower weights: K - 1 task passes and one pass of sum_k L_k. Tower weights != 1
    (Nash-MTL's alpha, UW on the per-task path): K task passes and one weighted pass for towers and
    tables. (UW's other call is the gradient of its own objective w.r.t. its log-variances.)"""
    calls = []
    inner = torch.autograd.grad

    def spy(*args, **kwargs):
        calls.append(1)
        return inner(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    optimizer = "adatask" if method == "uw" else "adamw"
    one_step({"method": method, "per_task_backend": "loop", "optimizer": optimizer})
    assert len(calls) == K + extra


@pytest.mark.parametrize("method", ["pcgrad", "nash_mtl", "uw"])
def test_loop_and_batched_backends_agree(method: str) -> None:
    """The loop backend (summed pass for unit tower weights, weighted pass otherwise) and the
    batched backward write the same gradients (UW on the per-task path through AdaTask)."""
    cfg = {"method": method, "seed": 3, "optimizer": "adatask" if method == "uw" else "adamw"}
    _, loop, _ = one_step({**cfg, "per_task_backend": "loop"})
    _, batched, _ = one_step({**cfg, "per_task_backend": "batched"})
    assert_grads(loop, batched, tol=1e-5)


def test_rep_mode_backprops_the_combined_representation_gradient() -> None:
    """Reference surrogate: towers see a detached representation and get sum_k w_k L_k; the
    representation itself gets <sum_k coef_k dL_k/dR, R>. Its gradient is what rep mode must write."""
    _model, seen, _ = one_step({"method": "mgda", "grad_mode": "rep"})
    ref = TinyMMoE()
    (x, labels) = batch(0)
    logits, _, rep = ref.forward_with_intermediates(x)
    losses = task_losses(logits, labels)
    g_rep = torch.stack([torch.autograd.grad(losses[k], rep, retain_graph=True)[0] for k in range(K)])
    flat = g_rep.reshape(K, -1).double()
    comb = METHODS["mgda"](K).combine(flat @ flat.T, losses.detach().double())
    target = torch.tensordot(comb.coef.float(), g_rep, dims=1)
    logits_d, _, rep_d = ref.forward_with_intermediates(x, detach_rep=True)
    surrogate = (task_losses(logits_d, labels) * comb.tower_weights.float()).sum() + (target * rep_d).sum()
    surrogate.backward()
    expected = {n: (p.grad.to_dense() if p.grad.is_sparse else p.grad) for n, p in named(ref).items()}
    assert_grads(seen, expected)


def test_scope_all_matches_the_dense_libmtl_style_computation() -> None:
    _model, seen, _ = one_step({"method": "mgda", "grad_scope": "all"})
    ref = TinyMMoE()
    roles = ref.param_roles()
    mtl = roles["shared"] + roles["embeddings"]
    towers = [p for ps in roles["task"] for p in ps]
    losses, per_task = reference_per_task(ref, mtl + towers)
    g = torch.stack([torch.cat([x.reshape(-1) for x in per_task[k][: len(mtl)]]) for k in range(K)]).double()
    written = METHODS["mgda"](K).apply(g, losses.double()).float()
    names = {id(p): n for n, p in named(ref).items()}
    expected, start = {}, 0
    for p in mtl:
        expected[names[id(p)]] = written[start : start + p.numel()].view_as(p)
        start += p.numel()
    for i, p in enumerate(towers):
        expected[names[id(p)]] = sum(per_task[k][len(mtl) + i] for k in range(K))
    assert_grads(seen, expected)


def test_weightings_scale_towers_and_tables_too() -> None:
    _model, seen, metrics = one_step({"method": "uw"})
    ref = TinyMMoE()
    (x, labels) = batch(0)
    w = 0.5 * torch.exp(torch.tensor(0.5))  # 1 / (2 e^{s}) with s = -0.5
    (task_losses(ref.forward_with_intermediates(x)[0], labels) * w).sum().backward()
    expected = {n: (p.grad.to_dense() if p.grad.is_sparse else p.grad) for n, p in named(ref).items()}
    assert_grads(seen, expected)
    assert metrics["weight/task0"] == pytest.approx(float(w))


def test_per_task_path_and_single_backward_agree_for_ew() -> None:
    _, single, _ = one_step({"method": "ew"})
    _, per_task, _ = one_step({"method": "ew", "diagnostics_every": 1})
    assert_grads(per_task, single)


def test_grad_reducer_sees_g_and_the_other_dense_gradients() -> None:
    calls = []

    def halve(t: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(t.shape))
        return t / 2

    model = TinyMMoE()
    n_shared = sum(p.numel() for p in model.param_roles()["shared"])
    n_towers = sum(p.numel() for ps in model.param_roles()["task"] for p in ps)
    _, opt = make({"method": "mgda"}, model, grad_reducer=halve)
    seen = capture(opt)
    (x, labels) = batch(0)
    logits, emb, rep = model.forward_with_intermediates(x)
    opt.step(task_losses(logits, labels), embedded=emb, representation=rep)
    assert calls == [(K, n_shared), (n_towers,)]
    _, plain, _ = one_step({"method": "mgda"})
    for name, g in plain.items():
        factor = 1.0 if name.startswith("tables") else 0.5  # sparse tables are not reduced
        torch.testing.assert_close(seen[0][name], g * factor, rtol=1e-5, atol=1e-6)


# ---- diagnostics, combinations, checkpoints ----------------------------------------------------
def test_diagnostics_every_n_steps_through_the_callback() -> None:
    got = []
    model, opt = make(
        {"method": "pcgrad", "optimizer": "adatask", "apt": {"momentum": True}, "diagnostics_every": 2},
        callback=lambda step, m: got.append((step, m)),
    )
    plain = []
    for t in range(5):
        (x, labels) = batch(t)
        logits, emb, rep = model.forward_with_intermediates(x)
        plain.append(opt.step(task_losses(logits, labels), embedded=emb, representation=rep))
    assert [s for s, _ in got] == [0, 2, 4]
    m = got[-1][1]
    for key in ("grad_norm/task0", "grad_cos/task0_task1", "apt/instant_share", "apt/cos_grad_update", "apt/beta_mean"):
        assert key in m, key
    assert any(k.startswith("adatask/rau/experts.0.0.weight/task") for k in m)
    rau = [m[f"adatask/rau/experts.0.0.weight/task{k}"] for k in range(K)]
    assert sum(rau) == pytest.approx(1.0)
    assert "grad_norm/task0" not in plain[1]
    assert 0 < m["apt/instant_share"] < 10


def test_instant_share_without_apt_is_one_minus_beta_times_ratio() -> None:
    """With EMA momentum beta the first step's instant share is exactly 1 (m_1 = (1 - beta) d_1)."""
    _, _, m = one_step({"method": "ew", "diagnostics_every": 1})
    assert m["apt/instant_share"] == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("optimizer", ["adamw", "adatask", "muon", "adatask_muon"])
def test_every_optimizer_with_apt_trains(optimizer: str) -> None:
    muon = optimizer in ("muon", "adatask_muon")
    cfg = {
        "method": "pcgrad",
        "optimizer": optimizer,
        "lr": 0.01,
        "apt": {"momentum": True, "direction_preservation": muon, "gamma": 0.2},
    }
    model, opt = make(cfg)
    first = last = None
    for t in range(30):
        (x, labels) = batch(t % 2)
        logits, emb, rep = model.forward_with_intermediates(x)
        losses = task_losses(logits, labels)
        total = float(losses.detach().sum())
        first = total if first is None else first
        last = total
        opt.step(losses, embedded=emb, representation=rep)
    assert last < first


CHECKPOINT_CASES = [
    {"method": "pcgrad", "optimizer": "adatask_muon", "apt": {"momentum": True, "direction_preservation": True}},
    {"method": "rlw", "optimizer": "adamw", "apt": {"momentum": True}},
    {"method": "nash_mtl", "optimizer": "muon"},
    {"method": "uw", "optimizer": "adamw"},
    {"method": "sdmgrad", "optimizer": "adatask", "diagnostics_every": 2},
    {"method": "gradnorm", "optimizer": "adamw"},
    {"method": "dwa", "optimizer": "adamw"},
    {"method": "cagrad", "grad_mode": "rep"},
]


@pytest.mark.parametrize("cfg", CHECKPOINT_CASES, ids=lambda c: f"{c['method']}-{c.get('optimizer', 'adamw')}")
def test_state_dict_resumes_exactly(cfg: dict) -> None:
    def run(model, opt, steps):
        for t in steps:
            (x, labels) = batch(t)
            logits, emb, rep = model.forward_with_intermediates(x)
            opt.step(task_losses(logits, labels), embedded=emb, representation=rep)
            if t % 2 == 1:
                opt.end_epoch([0.7 - 0.01 * t, 0.6, 0.5 + 0.01 * t])

    model, opt = make(cfg)
    run(model, opt, range(4))
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    run(model, opt, range(4, 8))
    model2, opt2 = make(cfg)
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    run(model2, opt2, range(4, 8))
    for (n, a), b in zip(model.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b), n


def test_dwa_and_gradnorm_use_epoch_losses() -> None:
    model, opt = make({"method": "dwa"})
    opt.end_epoch([1.0, 1.0, 1.0])
    opt.end_epoch([0.5, 1.0, 2.0])
    (x, labels) = batch(0)
    logits, emb, _ = model.forward_with_intermediates(x)
    m = opt.step(task_losses(logits, labels), embedded=emb)
    expected = 3 * torch.softmax(torch.tensor([0.5, 1.0, 2.0]) / 2, 0)
    assert [m[f"weight/task{k}"] for k in range(K)] == pytest.approx(expected.tolist())

    model, opt = make({"method": "gradnorm"})
    assert not opt.method.needs_gram()
    opt.end_epoch([0.7, 0.7, 0.7])
    assert opt.method.needs_gram()
    for t in range(3):
        (x, labels) = batch(t)
        logits, emb, _rep = model.forward_with_intermediates(x)
        m = opt.step(task_losses(logits, labels), embedded=emb)
    assert [m[f"weight/task{k}"] for k in range(K)] != pytest.approx([1.0, 1.0, 1.0])
    assert sum(m[f"weight/task{k}"] for k in range(K)) == pytest.approx(3.0)


def test_bad_inputs_are_refused() -> None:
    model, opt = make({"method": "ew"})
    with pytest.raises(ValueError, match="shape"):
        opt.step(torch.zeros(2, requires_grad=True))
    model, opt = make({"method": "mgda", "grad_mode": "rep"})
    (x, labels) = batch(0)
    with pytest.raises(ValueError, match="representation"):
        opt.step(task_losses(model.forward_with_intermediates(x)[0], labels))
    with pytest.raises(ValueError, match="task lists"):
        MultiTaskOptimizer(MTLConfig(), ParamRoles.from_model(TinyMMoE(k=2)), K)


@pytest.mark.parametrize(
    "cfg",
    [
        {"method": "ew"},
        {"method": "mgda", "per_task_backend": "loop"},
        {"method": "nash_mtl", "per_task_backend": "loop"},
        {"method": "mgda", "per_task_backend": "batched"},
        {"method": "mgda", "grad_mode": "rep"},
    ],
    ids=lambda c: "-".join(str(v) for v in c.values()),
)
def test_external_tables_receive_the_summed_gradient_through_embedded(cfg: dict) -> None:
    """Tables updated outside apt (fused kernels): apt leaves their gradient in .grad, the same
    gradient apt's own tables would get."""
    _, internal, _ = one_step(cfg)
    model = TinyMMoE()
    roles = ParamRoles.from_model(model)
    roles.embeddings, roles.external_embeddings = [], True
    opt = MultiTaskOptimizer(MTLConfig.from_dict(cfg), roles, K)
    (x, labels) = batch(0)
    logits, emb, rep = model.forward_with_intermediates(x)
    opt.step(task_losses(logits, labels), embedded=emb, representation=rep)
    for i, t in enumerate(model.tables):
        torch.testing.assert_close(t.weight.grad.to_dense(), internal[f"tables.{i}.weight"], rtol=1e-5, atol=1e-6)


def test_forget_drops_only_the_given_parameters_state() -> None:
    """``forget`` (MEDA's fresh tables): the next update of a forgotten parameter is a first one, the
    same as a fresh optimizer's on the same gradient; the others keep their moments."""
    model, opt = make({"method": "mgda"})
    for step in range(2):
        (x, labels) = batch(step)
        logits, emb, rep = model.forward_with_intermediates(x)
        opt.step(task_losses(logits, labels), embedded=emb, representation=rep)
    tables = [t.weight for t in model.tables]
    kept = {
        id(p): {k: v.clone() for k, v in opt.optimizer.state[p].items() if torch.is_tensor(v)}
        for p in model.experts.parameters()
    }
    opt.forget(tables)
    assert all(p not in opt.optimizer.state for p in tables)
    for p in model.experts.parameters():
        assert all(torch.equal(opt.optimizer.state[p][k], v) for k, v in kept[id(p)].items())
    # a forgotten table's next update equals a fresh optimizer's first update from the same weights
    fresh_model = copy.deepcopy(model)
    _, fresh = make({"method": "mgda"}, fresh_model)
    for m, o in ((model, opt), (fresh_model, fresh)):
        (x, labels) = batch(5)
        logits, emb, rep = m.forward_with_intermediates(x)
        o.step(task_losses(logits, labels), embedded=emb, representation=rep)
    torch.testing.assert_close(model.tables[0].weight, fresh_model.tables[0].weight, rtol=0, atol=1e-7)
    assert not torch.equal(model.experts[0][0].weight, fresh_model.experts[0][0].weight), "experts kept momentum"
