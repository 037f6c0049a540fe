"""Curvature of the training loss by Hessian-vector products (never the dense Hessian).

For parameters theta (flattened to one vector of size n) and the loss
L(theta) = sum_b |b| loss(f(x_b; theta), y_b) / sum_b |b| over fixed ``batches``:

- ``hessian_eigenvalues``: the top-k eigenvalues of H = d^2 L / d theta^2 by Lanczos with full
  reorthogonalization (Ritz values of the tridiagonal T_m = Q^T H Q; they converge to the
  extreme eigenvalues in far fewer products than power iteration with deflation).
- ``hessian_trace``: Hutchinson's estimator tr(H) = E[v^T H v], v Rademacher, with its
  standard error std(v^T H v) / sqrt(probes); probes are evaluated in batches by ``vmap``.
- ``spectral_density``: stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017): for each
  random unit v, the nodes theta_j (Ritz values) and weights tau_j = (e_1^T s_j)^2 of T_m give
  v^T g(H) v ~ sum_j tau_j g(theta_j); the density is their Gaussian-smoothed average.

The loss and its gradient are computed once, functionally (``torch.func.functional_call`` on a
flat parameter vector, so a float64 reference needs no copy of the model), with the gradient's
graph kept; each product H v is then one backward pass through that graph (reverse over
reverse: about 3x cheaper on CPU than forward-over-reverse ``jvp(grad)``, which redoes the
forward pass every time, and as fast as ``vmap`` over a batch of vectors). The model is
evaluated in eval mode (batch-norm running statistics, no dropout), as PyHessian does.

``mask`` (a dict name -> 0/1 tensor, e.g. a lottery ticket's) restricts H to the surviving
coordinates: the operator is P H P with P the diagonal 0/1 projection, seen on the subspace of
surviving weights (pruned coordinates contribute neither eigenvalues nor trace).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


class HessianOperator:
    """v -> H v for the mean loss of ``model`` over ``batches``, on the flat vector of its
    trainable parameters (restricted to ``mask``'s surviving coordinates when given).

    ``dtype``: the precision of parameters, inputs and products (float64 for references)."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        batches: Batches,
        mask: dict[str, torch.Tensor] | None = None,
        dtype: torch.dtype | None = None,
    ):
        self.model, self.loss_fn = model, loss_fn
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        self.names = [k for k, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        dtype = dtype or named[0][1].dtype
        self.dtype = dtype
        self.theta = torch.cat([p.detach().reshape(-1) for _, p in named]).to(dtype)
        self.buffers = {k: b.to(dtype) if b.is_floating_point() else b
                        for k, b in model.named_buffers()}  # fmt: skip
        self.batches = [(x.to(dtype) if x.is_floating_point() else x, y) for x, y in batches]
        self.n_samples = sum(len(y) for _, y in self.batches)
        self.mask = None
        if mask is not None:
            unknown = set(mask) - set(self.names)
            if unknown:
                raise KeyError(f"mask names no trainable parameter: {sorted(unknown)}")
            self.mask = torch.cat([
                (mask[k] != 0).reshape(-1).to(dtype) if k in mask else torch.ones(n, dtype=dtype)
                for k, n in zip(self.names, self.sizes)
            ])  # fmt: skip
        self.dim = int(self.mask.sum()) if self.mask is not None else self.theta.numel()
        self._graph: tuple[torch.Tensor, torch.Tensor] | None = None

    def params(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: t.view(s) for k, t, s in zip(self.names, theta.split(self.sizes), self.shapes)}

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        total = theta.new_zeros(())
        for x, y in self.batches:
            out = functional_call(self.model, {**self.params(theta), **self.buffers}, (x,))
            total = total + self.loss_fn(out, y) * len(y)
        return total / self.n_samples

    def _gradient_graph(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(theta as a leaf, grad L(theta) with its graph kept): built once, so each product
        afterwards is one backward pass through the gradient (no new forward pass)."""
        if self._graph is None:
            was_training = self.model.training
            self.model.eval()
            try:
                theta = self.theta.clone().requires_grad_()
                (g,) = torch.autograd.grad(self.loss(theta), theta, create_graph=True)
            finally:
                self.model.train(was_training)
            self._graph = (theta, g)
        return self._graph

    def _hvp(self, v: torch.Tensor) -> torch.Tensor:
        theta, g = self._gradient_graph()
        (hv,) = torch.autograd.grad(g, theta, grad_outputs=v, retain_graph=True)
        return hv

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """H v for v (n,), or a batch of products for v (k, n)."""
        if self.mask is not None:
            v = v * self.mask
        with torch.enable_grad():
            hv = torch.stack([self._hvp(u) for u in v]) if v.dim() == 2 else self._hvp(v)
        hv = hv.detach()
        return hv * self.mask if self.mask is not None else hv

    def project(self, v: torch.Tensor) -> torch.Tensor:
        return v * self.mask if self.mask is not None else v


def lanczos(
    op: Callable[[torch.Tensor], torch.Tensor],
    v0: torch.Tensor,
    steps: int,
    project: Callable[[torch.Tensor], torch.Tensor] = lambda v: v,
    tol: float = 0.0,
    k: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lanczos tridiagonalization of the symmetric ``op`` from v0 with full reorthogonalization:
    (alpha (m,), beta (m-1,)) of T_m, m <= steps. Stops early on an invariant subspace
    (beta_j <= 1e-6 ||T|| in the working precision's terms), or, when tol > 0, once each of
    the top-k Ritz pairs (theta_i, y_i = Q s_i) has residual ||H y_i - theta_i y_i|| =
    beta_j |s_i[-1]| <= tol |theta_i|."""
    q = project(v0)
    q = q / torch.linalg.vector_norm(q)
    basis, alphas, betas = [q], [], []
    eps = torch.finfo(q.dtype).eps
    for j in range(steps):
        w = project(op(basis[j]))
        alpha = torch.dot(w, basis[j])
        alphas.append(alpha)
        Q = torch.stack(basis)
        w = w - Q.T @ (Q @ w)  # full reorthogonalization (twice is enough)
        w = w - Q.T @ (Q @ w)
        beta = torch.linalg.vector_norm(w)
        if j == steps - 1:
            break
        a, b = torch.stack(alphas), torch.stack(betas) if betas else None
        scale = float(tridiagonal(a, b).abs().max())
        if float(beta) <= 100 * eps * max(scale, 1e-30) * len(alphas):
            break  # an invariant subspace: the Ritz values are eigenvalues
        if tol > 0 and len(alphas) >= k:
            theta, s = torch.linalg.eigh(tridiagonal(a, b).double())
            residual = float(beta) * s[-1, -k:].abs()
            if bool((residual <= tol * theta[-k:].abs().clamp_min(1e-30)).all()):
                break
        betas.append(beta)
        basis.append(w / beta)
    a = torch.stack(alphas)
    return a, torch.stack(betas[: len(a) - 1]) if len(a) > 1 else a.new_zeros(0)


def tridiagonal(alpha: torch.Tensor, beta: torch.Tensor | None) -> torch.Tensor:
    T = torch.diag(alpha)
    if beta is not None and len(beta):
        T = T + torch.diag(beta, 1) + torch.diag(beta, -1)
    return T


def ritz_values(alpha: torch.Tensor, beta: torch.Tensor | None) -> torch.Tensor:
    """Eigenvalues of T (ascending), in float64."""
    return torch.linalg.eigvalsh(tridiagonal(alpha, beta).double())


def hessian_eigenvalues(
    model: nn.Module,
    loss_fn: Callable,
    batches: Batches,
    k: int = 1,
    max_iter: int = 100,
    tol: float = 1e-4,
    mask: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The k largest eigenvalues of the loss Hessian (descending, float64), by Lanczos from a
    seeded Gaussian start, stopped when each Ritz pair's residual is below ``tol`` times its
    value (the eigenvalue error is then at most about residual^2 / gap), or after ``max_iter``
    products."""
    op = HessianOperator(model, loss_fn, batches, mask, dtype)
    if k > op.dim:
        raise ValueError(f"k={k} exceeds the {op.dim} (surviving) parameters")
    g = torch.Generator().manual_seed(seed)
    v0 = torch.randn(op.theta.numel(), generator=g, dtype=torch.float64).to(op.dtype)
    alpha, beta = lanczos(op, v0, min(max_iter, op.dim), op.project, tol, k)
    if len(alpha) < k:
        raise ValueError(f"Lanczos found an invariant subspace of size {len(alpha)} < k={k} "
                         "(a degenerate start or operator): try another seed")  # fmt: skip
    return ritz_values(alpha, beta).flip(0)[:k]


@dataclass(frozen=True)
class TraceEstimate:
    value: float
    """Hutchinson's estimate of tr(H): the mean of v^T H v over the probes."""
    stderr: float
    """Its standard error, std(v^T H v, ddof=1) / sqrt(probes)."""
    probes: int


def hessian_trace(
    model: nn.Module,
    loss_fn: Callable,
    batches: Batches,
    probes: int = 100,
    batch: int = 10,
    mask: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    method: str = "hutchinson",
) -> TraceEstimate:
    """tr(H) from ``probes`` Hessian-vector products.

    ``hutchinson``: mean_i v_i^T H v_i, v_i Rademacher (on the surviving coordinates), ``batch``
    products at a time. ``hutch++`` (Meyer, Musco, Musco & Woodruff 2021): a third of the
    products sketch H's range (Q = orth(H S)), a third compute tr(Q^T H Q) exactly, and the
    last third estimate the rest, tr((I - QQ^T) H (I - QQ^T)), by Hutchinson; unbiased, and
    with the few large eigenvalues of a trained network's Hessian captured by Q, its error is
    far below plain Hutchinson's for the same products. The standard error is the residual
    part's (conditional on Q)."""
    op = HessianOperator(model, loss_fn, batches, mask, dtype)
    g = torch.Generator().manual_seed(seed)
    n = op.theta.numel()

    def rademacher(k: int) -> torch.Tensor:
        return op.project((torch.randint(0, 2, (k, n), generator=g) * 2 - 1).to(op.dtype))

    if method == "hutchinson":
        quads = []
        for start in range(0, probes, batch):
            v = rademacher(min(batch, probes - start))
            quads.append((v * op(v)).sum(1).double())
        q = torch.cat(quads)
        se = float(q.std() / math.sqrt(probes)) if probes > 1 else float("inf")
        return TraceEstimate(float(q.mean()), se, probes)
    if method != "hutch++":
        raise ValueError(f"method must be hutchinson or hutch++, got {method!r}")
    k = probes // 3
    if k < 2:
        raise ValueError(f"hutch++ needs at least 6 products, got {probes}")
    Q, _ = torch.linalg.qr(op(rademacher(k)).double().T)  # (n, k) orthonormal, H's range
    Q = Q.to(op.dtype)
    exact = float(torch.einsum("ij,ij->", Q.T.double(), op(Q.T).double()))  # tr(Q^T H Q)
    G = rademacher(k)
    G = G - (G @ Q) @ Q.T  # (I - QQ^T) g, still on the surviving coordinates
    q = (G * op(G)).sum(1).double()
    return TraceEstimate(exact + float(q.mean()), float(q.std() / math.sqrt(k)), 3 * k)


@dataclass(frozen=True)
class SpectralDensity:
    nodes: torch.Tensor
    """(probes, m) Ritz values of each probe's Lanczos run."""
    weights: torch.Tensor
    """(probes, m) their quadrature weights (each row sums to 1)."""

    def density(self, grid: torch.Tensor, width: float) -> torch.Tensor:
        """The spectral density on ``grid``: the probes' average of sum_j tau_j
        N(grid; theta_j, width^2)."""
        z = (grid[:, None, None] - self.nodes[None]) / width
        gauss = torch.exp(-0.5 * z**2) / (width * math.sqrt(2 * math.pi))
        return (gauss * self.weights[None]).sum(-1).mean(-1)

    def moment(self, g: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """The quadrature of tr(g(H)) / n: the probes' average of sum_j tau_j g(theta_j)."""
        return float((self.weights * g(self.nodes)).sum(-1).mean())


def spectral_density(
    model: nn.Module,
    loss_fn: Callable,
    batches: Batches,
    steps: int = 60,
    probes: int = 1,
    mask: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature of the Hessian's eigenvalue distribution (Rademacher
    starts; ``steps`` Lanczos steps per probe)."""
    op = HessianOperator(model, loss_fn, batches, mask, dtype)
    g = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    m = min(steps, op.dim)
    for _ in range(probes):
        v0 = (torch.randint(0, 2, (op.theta.numel(),), generator=g) * 2 - 1).to(op.dtype)
        alpha, beta = lanczos(op, v0, m, op.project)
        evals, evecs = torch.linalg.eigh(tridiagonal(alpha, beta).double())
        pad = m - len(evals)  # an early invariant subspace: pad with zero-weight nodes
        nodes.append(torch.cat([evals, evals.new_zeros(pad)]))
        weights.append(torch.cat([evecs[0] ** 2, evals.new_zeros(pad)]))
    return SpectralDensity(torch.stack(nodes), torch.stack(weights))
