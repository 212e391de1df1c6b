"""Implicit hypergradient (spec §4.3, §10.6): closed-form inner problems and a full outer step."""

import math

import pytest
import torch
import torch.nn.functional as F

from cdrbench.data.graph import Graph, bipartite_edge_index
from cdrbench.methods.bignas.hypergrad import apply_hypergradient, neumann_hypergradient
from cdrbench.methods.bignas.perceptron import ImportancePerceptron, train_union_edge_index
from cdrbench.methods.bignas.supernet import CrossDomainSupernet, CTRPredictor, pair_repr

DT = torch.float64


def _cos(a, b):
    return (a @ b / (a.norm() * b.norm())).item()


def _spd(n, eigenvalues, seed):
    """Symmetric matrix with the given spectrum and a random eigenbasis."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=DT))
    return q @ torch.diag(torch.as_tensor(eigenvalues, dtype=DT)) @ q.T


# ----------------------------------------------------------------------------- quadratic


class Quadratic:
    r"""L_main = ½θᵀAθ − θᵀBφ, L_dev = ½‖θ − c‖², θ = θ*(φ) = A⁻¹Bφ.

    Exact hypergradient: ∇_φ L_dev = Bᵀ A⁻¹ (θ* − c) (∇_φ∇_θ L_main = −B).
    """

    def __init__(self, A, B, seed=0):
        gen = torch.Generator().manual_seed(seed + 1)
        self.A, self.B = A, B
        self.phi = torch.randn(B.shape[1], generator=gen, dtype=DT, requires_grad=True)
        self.c = torch.randn(A.shape[0], generator=gen, dtype=DT)
        theta_star = torch.linalg.solve(A, B @ self.phi.detach())
        self.theta = theta_star.clone().requires_grad_(True)
        self.exact = B.T @ torch.linalg.solve(A, theta_star - self.c)

    def estimate(self, k, eta, scale_series_by_eta=False):
        th, phi = self.theta, self.phi
        l_main = 0.5 * th @ self.A @ th - th @ (self.B @ phi)
        l_dev = 0.5 * (th - self.c).pow(2).sum()
        (h,) = neumann_hypergradient(l_dev, l_main, [th], [phi], k=k, eta=eta, scale_series_by_eta=scale_series_by_eta)
        return h


def test_quadratic_large_k_matches_exact_times_eta():
    # ||I - eta A|| = 0.7 < 1 (eta = 1), rectangular B: theta in R^6, phi in R^4
    A = _spd(6, [0.3, 0.5, 0.8, 1.0, 1.4, 1.7], seed=0)
    B = torch.randn(6, 4, generator=torch.Generator().manual_seed(5), dtype=DT)
    q = Quadratic(A, B)
    torch.testing.assert_close(q.estimate(k=200, eta=1.0) * 1.0, q.exact, atol=1e-5, rtol=0)


def test_quadratic_eta_prefactor():
    # A close to I / eta with eta = 0.25: spectrum [3, 5] -> ||I - eta A|| = 0.25
    eta = 0.25
    A = _spd(5, [3.0, 3.5, 4.0, 4.5, 5.0], seed=1)
    B = torch.randn(5, 3, generator=torch.Generator().manual_seed(6), dtype=DT)
    q = Quadratic(A, B)
    unscaled = q.estimate(k=60, eta=eta)
    scaled = q.estimate(k=60, eta=eta, scale_series_by_eta=True)
    torch.testing.assert_close(unscaled * eta, q.exact, atol=1e-5, rtol=0)
    torch.testing.assert_close(scaled, q.exact, atol=1e-5, rtol=0)
    # without the prefactor the estimate is 1/eta = 4x too large: right direction, wrong scale
    assert unscaled.norm() / q.exact.norm() == pytest.approx(1 / eta, rel=1e-4)


def test_quadratic_k3_cosine_on_well_conditioned_a():
    # "well conditioned" here means A ≈ I / eta: spectrum [0.9, 1.1] with eta = 1, so the
    # neglected tail (I - A)^4 has norm <= 1e-4 and K = 3 is already accurate.
    A = _spd(8, torch.linspace(0.9, 1.1, 8), seed=2)
    B = torch.randn(8, 5, generator=torch.Generator().manual_seed(7), dtype=DT)
    q = Quadratic(A, B)
    assert _cos(q.estimate(k=3, eta=1.0), q.exact) > 0.999
    # and an ill-suited eta (series diverges: ||I - eta A|| > 1) is caught by the same check
    assert _cos(q.estimate(k=3, eta=2.5), q.exact) < 0.999


def test_quadratic_error_decreases_monotonically_in_k():
    # Square orthogonal B keeps norms, so the error is ||(I - A)^{K+1} A^{-1} g_V||, which
    # strictly decreases in K when ||I - A|| < 1.
    A = _spd(6, [0.3, 0.5, 0.8, 1.0, 1.4, 1.7], seed=3)
    B, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(8), dtype=DT))
    q = Quadratic(A, B)
    errors = [(q.estimate(k=k, eta=1.0) - q.exact).norm().item() for k in [0, 1, 2, 3, 5, 10, 20]]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-2 * errors[0]


def test_k0_is_minus_mixed_derivative_times_dev_gradient():
    A = _spd(4, [0.5, 0.7, 0.9, 1.2], seed=4)
    B = torch.randn(4, 3, generator=torch.Generator().manual_seed(9), dtype=DT)
    q = Quadratic(A, B)
    torch.testing.assert_close(q.estimate(k=0, eta=1.0), B.T @ (q.theta.detach() - q.c))


def test_hypergradient_leaves_no_grad_and_handles_unused_params():
    A = _spd(4, [0.5, 0.7, 0.9, 1.2], seed=4)
    B = torch.randn(4, 3, generator=torch.Generator().manual_seed(9), dtype=DT)
    q = Quadratic(A, B)
    unused_inner = torch.zeros(2, dtype=DT, requires_grad=True)
    unused_outer = torch.ones(3, dtype=DT, requires_grad=True)
    th, phi = q.theta, q.phi
    l_main = 0.5 * th @ A @ th - th @ (B @ phi)
    l_dev = 0.5 * (th - q.c).pow(2).sum()
    h = neumann_hypergradient(l_dev, l_main, [th, unused_inner], [phi, unused_outer], k=50, eta=1.0)
    assert len(h) == 2 and torch.equal(h[1], torch.zeros(3, dtype=DT))
    torch.testing.assert_close(h[0], q.exact, atol=1e-5, rtol=0)
    assert all(p.grad is None for p in [th, phi, unused_inner, unused_outer])
    assert not h[0].requires_grad


# ----------------------------------------------------------------------------- weighted ridge


class WeightedRidge:
    r"""θ*(φ) = argmin_θ Σ_i w_i(φ)(x_iᵀθ − y_i)² + λ‖θ‖², w = sigmoid(φ) (one weight per
    training row), L_dev = ½ mean (X_dev θ − y_dev)². θ* has the closed form
    (XᵀWX + λI)⁻¹XᵀWy, so the exact hypergradient is autograd through that solve (implicit
    differentiation done by linear algebra, independent of the Neumann code)."""

    lam = 0.5

    def __init__(self, n=24, d=4, n_dev=16, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.X = torch.randn(n, d, generator=gen, dtype=DT)
        true = torch.randn(d, generator=gen, dtype=DT)
        self.y = self.X @ true + 0.5 * torch.randn(n, generator=gen, dtype=DT)
        self.y[:4] += 3.0  # a few corrupted rows, so the weights matter
        self.Xd = torch.randn(n_dev, d, generator=gen, dtype=DT)
        self.yd = self.Xd @ true
        self.phi = torch.randn(n, generator=gen, dtype=DT, requires_grad=True)

        theta_star = self.solve(self.phi)
        self.exact = torch.autograd.grad(self.dev_loss(theta_star), self.phi)[0]
        self.theta = theta_star.detach().clone().requires_grad_(True)
        hess = 2 * (self.X.T * torch.sigmoid(self.phi.detach())) @ self.X + 2 * self.lam * torch.eye(d, dtype=DT)
        self.eta = 1.0 / torch.linalg.eigvalsh(hess).max().item()  # ||I - eta H|| < 1

    def solve(self, phi):
        w = torch.sigmoid(phi)
        lhs = (self.X.T * w) @ self.X + self.lam * torch.eye(self.X.shape[1], dtype=DT)
        return torch.linalg.solve(lhs, (self.X.T * w) @ self.y)

    def main_loss(self, theta, phi):
        return (torch.sigmoid(phi) * (self.X @ theta - self.y).pow(2)).sum() + self.lam * theta.pow(2).sum()

    def dev_loss(self, theta):
        return 0.5 * (self.Xd @ theta - self.yd).pow(2).mean()

    def estimate(self, k):
        (h,) = neumann_hypergradient(
            self.dev_loss(self.theta), self.main_loss(self.theta, self.phi), [self.theta], [self.phi],
            k=k, eta=self.eta, scale_series_by_eta=True,
        )
        return h


def test_weighted_ridge_matches_implicit_differentiation():
    r = WeightedRidge()
    # stationarity holds at theta*, so the implicit-function theorem applies
    (g,) = torch.autograd.grad(r.main_loss(r.theta, r.phi), r.theta)
    assert g.abs().max() < 1e-10
    assert _cos(r.estimate(k=400), r.exact) > 0.99
    torch.testing.assert_close(r.estimate(k=2000), r.exact, atol=1e-6, rtol=1e-4)


def test_weighted_ridge_error_shrinks_with_k():
    r = WeightedRidge(seed=3)
    errors = [(r.estimate(k) - r.exact).norm().item() for k in [0, 5, 20, 100, 400]]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.1 * errors[0]


# ----------------------------------------------------------------------------- apply


def test_apply_overwrites_grad_clips_and_steps():
    phi = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    phi.grad = torch.tensor([100.0, -100.0])  # left over by a training loss: must be discarded
    opt = torch.optim.SGD([phi], lr=1.0)
    norm = apply_hypergradient([phi], [torch.tensor([3.0, 4.0])], opt, clip_norm=10.0)
    assert norm.item() == pytest.approx(5.0)
    torch.testing.assert_close(phi.grad, torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(phi.detach(), torch.tensor([-2.0, -2.0]))
    apply_hypergradient([phi], [torch.tensor([30.0, 40.0])], opt, clip_norm=10.0)
    torch.testing.assert_close(phi.grad, torch.tensor([6.0, 8.0]), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- full outer step

ALL_OPS = ["gcn", "gat", "gatv2", "sage", "lightgcn", "linear"]
U, I_S, I_T, D = 10, 8, 6, 8


def _graph(num_items, num_edges, seed):
    gen = torch.Generator().manual_seed(seed)
    users = torch.randint(0, U, (num_edges,), generator=gen)
    items = torch.randint(0, num_items, (num_edges,), generator=gen)
    return Graph.from_edge_index(bipartite_edge_index(users, items, U), U + num_items, U), users, items


def _setup(space, form):
    torch.manual_seed(0)
    gs, su, si = _graph(I_S, 30, 1)
    gt, tu, ti = _graph(I_T, 25, 2)
    sy = torch.randint(0, 2, (30,), generator=torch.Generator().manual_seed(3)).float()
    ty = torch.randint(0, 2, (25,), generator=torch.Generator().manual_seed(4)).float()
    model = CrossDomainSupernet(U, (I_S, I_T), D, D, 2, space=space, dropout=0.3)
    head_s, head_t = CTRPredictor(2 * model.out_dim), CTRPredictor(2 * model.out_dim)
    perc = ImportancePerceptron(form, U, I_S, I_T, rep_dim=model.out_dim, emb_dim=D)
    perc_edges = train_union_edge_index(gs, gt) if form == "three_level" else gs.edge_index

    def main_loss(t_rows, s_rows):
        reps_s, reps_t = model(gs, gt)
        lt = F.binary_cross_entropy_with_logits(head_t(pair_repr(reps_t, tu[t_rows], ti[t_rows], U)), ty[t_rows])
        gamma = perc(
            su[s_rows], si[s_rows], model.user_embedding.weight, model.item_embeddings["source"].weight,
            perc_edges, target_item_emb=model.item_embeddings["target"].weight, source_item_reps=reps_s[U:],
        )
        ls = F.binary_cross_entropy_with_logits(
            head_s(pair_repr(reps_s, su[s_rows], si[s_rows], U)), sy[s_rows], reduction="none"
        )
        return lt + (gamma * ls).sum()

    def dev_loss(t_rows):
        _, reps_t = model(gs, gt)
        return F.binary_cross_entropy_with_logits(head_t(pair_repr(reps_t, tu[t_rows], ti[t_rows], U)), ty[t_rows])

    return model, (head_s, head_t), perc, main_loss, dev_loss


@pytest.mark.parametrize("form", ["three_level", "item_only"])
@pytest.mark.parametrize("space", [[op] for op in ALL_OPS] + [ALL_OPS], ids=ALL_OPS + ["all"])
def test_full_outer_step(space, form):
    model, heads, perc, main_loss, dev_loss = _setup(space, form)
    phi = list(perc.parameters())
    opt_phi = torch.optim.Adam(phi, lr=1e-3, weight_decay=1e-3)
    model.train()

    # an inner step leaves training-loss gradients on phi; they must not leak into the update
    main_loss(torch.arange(0, 12), torch.arange(0, 15)).backward()
    assert all(p.grad is not None for p in phi)
    model_grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]

    h = neumann_hypergradient(
        dev_loss(torch.arange(12, 25)), main_loss(torch.arange(0, 12), torch.arange(15, 30)),
        model.shared_parameters(), phi, k=3, eta=1.0,
    )
    assert len(h) == len(phi)
    assert all(torch.isfinite(g).all() for g in h)
    total = math.sqrt(sum(g.pow(2).sum().item() for g in h))
    assert total > 0
    # no .grad side effects on the model
    for before, p in zip(model_grads, model.parameters()):
        assert (before is None and p.grad is None) or torch.equal(before, p.grad)

    clip = 0.5 * total  # forces clipping, so the check covers the clip
    before = [p.detach().clone() for p in phi]
    apply_hypergradient(phi, h, opt_phi, clip_norm=clip)
    scale = clip / (total + 1e-6)
    for p, g, b in zip(phi, h, before):
        torch.testing.assert_close(p.grad, g * scale, atol=1e-7, rtol=1e-5)
    assert any(not torch.equal(p.detach(), b) for p, b in zip(phi, before))
