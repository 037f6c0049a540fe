"""Token-selection attention of Sakamoto & Sato (ICML 2025, arXiv 2409.17625) and fast trainers.

The model is ``f(X) = nu^T X^T softmax(X W p)`` for one sequence ``X`` (T, d): trainable
``W`` (d, d) and ``p`` (d,), fixed head ``nu = (mu_{+1} - mu_{-1}) / (sqrt(2) ||mu||^2)``,
trained on the logistic loss ``mean_i softplus(-y_i f(X_i))`` by full-batch plain gradient
descent (lr 5e-3, 1000 steps). ``W`` starts at PyTorch's default ``nn.Linear(d, d).weight``
init (Kaiming-uniform, ``a = sqrt(5)``, i.e. ``U(-1/sqrt(d), 1/sqrt(d))``, seeded from
``(seed, "W0")``) or at ``I``; ``p`` starts at 0 so attention starts uniform.

Three ways to train, all giving the same numbers (tests check float64 agreement < 1e-8):

* :func:`train_naive` - the reference: :class:`TokenAttention` (``nn.Module``) evaluated as
  ``(X W) p`` with autograd and ``torch.optim.SGD``, one cell at a time. Per step
  ``O(n T d^2)``.
* ``method="dense"`` - the loss depends on ``W`` only through the query ``q = W p``, so a step
  evaluates ``X q`` and the hand-written gradient (below), with ``dL/dW = g p^T`` and
  ``dL/dp = W^T g`` where ``g = dL/dq``. ``B`` cells of one ``d`` are stacked on a leading
  batch dim. Per step and cell ``O(d^2 + n T d)`` (three ``d x d`` matrix-vector products).
* ``method="gram"`` (chosen by ``"auto"`` when ``n T <= d``) - never materializes ``W``. Let ``U`` (d, m), ``m = n T``, hold the
  training tokens as columns. Every gradient ``g = dL/dq = U b`` lies in their span (``b``
  = ``dL/ds`` for the m scores), so by induction ``p_t = W_0^T U c_t`` and
  ``W_t = (I - U M_t U^T) W_0`` with ``c_0 = 0``, ``M_0 = 0`` (m-vector, m x m matrix). With
  ``P = U^T W_0 W_0^T U`` and ``G = U^T U`` (both m x m, precomputed once per cell) one GD step
  is exactly::

      z = P c;  r = M z;  s = z - G r            # training scores U^T q, q = W p
      b = dL/ds                                  # closed form through softmax, below
      M <- M + lr b c^T                          # W <- W - lr g p^T
      c <- c - lr (b - M_old^T G b)              # p <- p - lr W^T g

  Per step and cell ``O(m^2) = O((n T)^2)`` (five m x m matrix-vector products and a rank-1
  update), independent of ``d``; the one-time precompute is ``O(d^2 m)`` (two products with
  ``W_0``). The query, needed only for test evaluation at logged steps, is
  ``q = K c - U r`` with ``K = W_0 W_0^T U`` (d, m): ``O(d m)``, then ``X_test q`` is
  ``O(n_test T d)``. With ``W = I`` replace ``W_0`` by ``I`` (``P = G``, ``K = U``); with
  ``W`` frozen ``M`` stays 0. In float32 the gram path agrees with float64 to ~1e-7 on the
  default grid.

Closed-form gradient through the softmax, per sample i with scores ``s = X q`` (T,),
``a = softmax(s)``, token values ``v = X nu`` (T,) and ``f = a . v``::

    dL/df_i = -y_i sigmoid(-y_i f_i) / n
    dL/ds_it = dL/df_i * a_it (v_it - f_i)
    dL/dq = sum_it dL/ds_it X_it

The one-layer Transformer-encoder variant is :class:`TokenTransformer` (trained by
:func:`train_transformer`).

Shapes: B cells, n train / N test samples, T tokens, d features, m = n T, L logged steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.tokens import TokenData, make_generator
from genlab.executor import num_threads
from genlab.train import measurement_steps

#: Token classes reported by the attention trackers, in this order (last = per-token mean).
TOKEN_CLASSES = ("relevant", "weak_same", "weak_opposite", "irrelevant")

WInit = Literal["kaiming", "identity"]
Method = Literal["auto", "gram", "dense"]


# --------------------------------------------------------------------------------------------
# Parameters and the fixed head
# --------------------------------------------------------------------------------------------


def _check_w_init(w_init: str) -> None:
    if w_init not in ("kaiming", "identity"):
        raise ValueError(f"w_init must be 'kaiming' or 'identity', got {w_init!r}")


def init_w0(d: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(d, d) initial ``W``: ``nn.Linear(d, d).weight``'s default Kaiming-uniform init.

    Drawn in float32 from the generator of ``(seed, "W0")`` and cast to ``dtype``, so float32
    and float64 runs start from the same matrix.
    """
    w = torch.empty(d, d)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=make_generator(seed, "W0"))
    return w.to(dtype)


def head(mu_norm: float, d: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(d,) fixed head ``nu = (mu_{+1} - mu_{-1}) / (sqrt(2) ||mu||^2) = (e_1 - e_2) / (sqrt(2) ||mu||)``."""
    nu = torch.zeros(d, dtype=dtype)
    nu[0] = 1.0 / (math.sqrt(2.0) * mu_norm)
    nu[1] = -nu[0]
    return nu


def token_values(x: torch.Tensor, mu_norm: float | torch.Tensor) -> torch.Tensor:
    """``v = X nu``: x (..., T, d) -> (..., T); ``mu_norm`` a float or a tensor broadcastable to v."""
    return (x[..., 0] - x[..., 1]) / (math.sqrt(2.0) * mu_norm)


# --------------------------------------------------------------------------------------------
# Readout, loss and the closed-form gradient
# --------------------------------------------------------------------------------------------


def readout(
    s: torch.Tensor, v: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores s (..., N, T), values v (..., N, T), labels y (..., N) -> attention a (..., N, T),
    output f (..., N) and per-sample logistic loss ``softplus(-y f)`` (..., N)."""
    a = torch.softmax(s, dim=-1)
    f = (a * v).sum(-1)
    return a, f, F.softplus(-y * f)


def score_grad(a: torch.Tensor, f: torch.Tensor, v: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``dL/ds`` (..., n, T) of the mean logistic loss, closed form through the softmax."""
    n = y.shape[-1]
    df = -y * torch.sigmoid(-y * f) / n  # (..., n)
    return df.unsqueeze(-1) * a * (v - f.unsqueeze(-1))


def loss_and_query_grad(
    x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, q: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss (...,) and ``dL/dq`` (..., d) for x (..., n, T, d), y (..., n), v (..., n, T),
    q (..., d). Cost ``O(n T d)``. ``dL/dW = g p^T`` and ``dL/dp = W^T g`` follow from ``g``."""
    s = torch.einsum("...ntd,...d->...nt", x, q)
    a, f, loss = readout(s, v, y)
    b = score_grad(a, f, v, y)
    return loss.mean(-1), torch.einsum("...nt,...ntd->...d", b, x)


# --------------------------------------------------------------------------------------------
# Naive reference
# --------------------------------------------------------------------------------------------


class TokenAttention(nn.Module):
    """``f(X) = nu^T X^T softmax((X W) p)``, the naive autograd reference (one cell).

    ``W`` (d, d) is a parameter initialised by :func:`init_w0` (``w_init="kaiming"``) or the
    identity; with ``train_w=False`` it is a frozen buffer. ``p`` (d,) starts at 0; ``nu`` (d,)
    is a buffer. The forward takes x (N, T, d) and costs ``O(N T d^2)`` (``X W`` first).
    """

    def __init__(
        self,
        d: int,
        mu_norm: float,
        *,
        w_init: WInit = "kaiming",
        train_w: bool = True,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        _check_w_init(w_init)
        w0 = init_w0(d, seed, dtype) if w_init == "kaiming" else torch.eye(d, dtype=dtype)
        if train_w:
            self.W = nn.Parameter(w0)
        else:
            self.register_buffer("W", w0)
        self.p = nn.Parameter(torch.zeros(d, dtype=dtype))
        self.register_buffer("nu", head(mu_norm, d, dtype))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, T, d) -> attention logits (N, T), evaluated as ``(X W) p``."""
        return (x @ self.W) @ self.p

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, T, d) -> attention probabilities (N, T)."""
        return torch.softmax(self.scores(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, T, d) -> f(X) (N,)."""
        return (self.attention(x) * (x @ self.nu)).sum(-1)


# --------------------------------------------------------------------------------------------
# Histories and metrics
# --------------------------------------------------------------------------------------------


@dataclass
class TrainHistory:
    """Metrics of one cell at the logged steps (L of them; step 0 = initialisation).

    Scalars are (L,) float64; ``attn_*`` (L, 4) hold the mean attention on the token classes
    :data:`TOKEN_CLASSES` (relevant, weakly relevant same class, weakly relevant opposite
    class, and the per-token mean over the irrelevant tokens 3..T-1), averaged over the clean
    training, the noisy (flipped) training and the test samples. ``tracked_attn`` (L, k, T) is
    the full attention of the training samples ``tracked_idx`` (k,). ``noisy_train_acc`` is the
    fraction of flipped samples classified as their *flipped* label (i.e. memorised); NaN when
    there are none. ``final_query`` (d,) is ``W p`` after the last step (for the transformer,
    None).
    """

    steps: torch.Tensor
    train_loss: torch.Tensor
    test_loss: torch.Tensor
    train_acc: torch.Tensor
    clean_train_acc: torch.Tensor
    noisy_train_acc: torch.Tensor
    test_acc: torch.Tensor
    attn_clean: torch.Tensor
    attn_noisy: torch.Tensor
    attn_test: torch.Tensor
    tracked_idx: torch.Tensor
    tracked_attn: torch.Tensor
    final_query: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    def final(self) -> dict[str, float]:
        """The last logged values as plain floats (attention: relevant token only)."""
        out = {
            k: float(getattr(self, k)[-1])
            for k in (
                "train_loss",
                "test_loss",
                "train_acc",
                "clean_train_acc",
                "noisy_train_acc",
                "test_acc",
            )
        }
        out["attn_relevant_test"] = float(self.attn_test[-1, 0])
        out["attn_relevant_clean"] = float(self.attn_clean[-1, 0])
        return out

    def to_dict(self) -> dict:
        """Plain Python lists (JSON-ready)."""
        out = {}
        for k, val in self.__dict__.items():
            out[k] = val.tolist() if isinstance(val, torch.Tensor) else val
        return out


def class_attention(a: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean attention per token class: a (..., N, T) -> (..., 4), averaged over the samples
    where ``mask`` (..., N) is True (all when None); NaN where no sample is selected."""
    per = torch.stack([a[..., 0], a[..., 1], a[..., 2], a[..., 3:].mean(-1)], dim=-1)  # (..., N, 4)
    if mask is None:
        return per.mean(-2)
    w = mask.to(per.dtype).unsqueeze(-1)
    return (per * w).sum(-2) / w.sum(-2)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x, mask (..., N) -> (...,) mean over the True entries (NaN when none)."""
    w = mask.to(x.dtype)
    return (x * w).sum(-1) / w.sum(-1)


class _Recorder:
    """Collects batched metrics at logged steps and splits them into per-cell histories."""

    def __init__(self, y, clean_mask, track):
        self.y, self.clean, self.track = y, clean_mask, track  # (B,n), (B,n) bool, (k,)
        self.rows: list[dict[str, torch.Tensor]] = []
        self.steps: list[int] = []

    def log(self, step, a, f, loss, a_test, f_test, loss_test, y_test):
        """a (B,n,T), f/loss (B,n); test counterparts (B,N,T)/(B,N); y_test (B,N)."""
        correct = (self.y * f > 0).to(f.dtype)
        noisy = ~self.clean
        self.steps.append(step)
        self.rows.append(
            {
                "train_loss": loss.mean(-1),
                "test_loss": loss_test.mean(-1),
                "train_acc": correct.mean(-1),
                "clean_train_acc": _masked_mean(correct, self.clean),
                "noisy_train_acc": _masked_mean(correct, noisy),
                "test_acc": (y_test * f_test > 0).to(f.dtype).mean(-1),
                "attn_clean": class_attention(a, self.clean),
                "attn_noisy": class_attention(a, noisy),
                "attn_test": class_attention(a_test),
                "tracked_attn": a[:, self.track],
            }
        )

    def histories(self, final_query, meta) -> list[TrainHistory]:
        stacked = {
            k: torch.stack([r[k] for r in self.rows], dim=1).detach().to(torch.float64)
            for k in self.rows[0]
        }  # (B, L, ...)
        steps = torch.tensor(self.steps, dtype=torch.int64)
        out = []
        for b in range(self.y.shape[0]):
            out.append(
                TrainHistory(
                    steps=steps.clone(),
                    **{k: v[b].clone() for k, v in stacked.items()},
                    tracked_idx=self.track.clone(),
                    final_query=None if final_query is None else final_query[b].detach().clone(),
                    meta=dict(meta[b]),
                )
            )
        return out


def log_schedule(steps: int, log_every: int | None = 10, log_steps=None) -> list[int]:
    """Sorted logged steps in [0, steps]: every ``log_every`` steps plus 0 and ``steps``, or the
    explicit ``log_steps`` (0 and ``steps`` always added)."""
    if log_steps is not None:
        return sorted({int(t) for t in log_steps if 0 <= int(t) <= steps} | {0, steps})
    return measurement_steps(steps, every=max(1, int(log_every or steps or 1)))


# --------------------------------------------------------------------------------------------
# Naive training
# --------------------------------------------------------------------------------------------


def _default_track(data: TokenData, track) -> torch.Tensor:
    if track is None:
        return torch.arange(data.n)
    return torch.as_tensor(track, dtype=torch.int64).flatten()


def train_naive(
    data: TokenData,
    *,
    steps: int = 1000,
    lr: float = 5e-3,
    w_init: WInit = "kaiming",
    train_w: bool = True,
    seed: int | None = None,
    log_every: int | None = 10,
    log_steps: Sequence[int] | None = None,
    track: Sequence[int] | None = None,
) -> TrainHistory:
    """Train :class:`TokenAttention` on one cell with autograd and ``torch.optim.SGD``.

    The reference implementation ("naive per-cell autograd"): per step ``O(n T d^2)``.
    ``seed`` seeds ``W_0`` (default ``data.seed``). Metrics as :class:`TrainHistory`.
    """
    dtype = data.x_train.dtype
    model = TokenAttention(
        data.d,
        data.mu_norm,
        w_init=w_init,
        train_w=train_w,
        seed=data.seed if seed is None else seed,
        dtype=dtype,
    )
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    x, y = data.x_train, data.y_train
    v, v_test = x @ model.nu, data.x_test @ model.nu
    rec = _Recorder(y[None], ~data.noisy_mask[None], _default_track(data, track))
    schedule = set(log_schedule(steps, log_every, log_steps))
    for t in range(steps + 1):
        if t in schedule:
            with torch.no_grad():
                a, f, loss = readout(model.scores(x), v, y)
                at, ft, lt = readout(model.scores(data.x_test), v_test, data.y_test)
                rec.log(t, a[None], f[None], loss[None], at[None], ft[None], lt[None],
                        data.y_test[None])  # fmt: skip
        if t == steps:
            break
        opt.zero_grad()
        loss = F.softplus(-y * model(x)).mean()
        loss.backward()
        opt.step()
    meta = {"method": "naive", "w_init": w_init, "train_w": train_w, "lr": lr, "steps": steps}
    q = (model.W @ model.p).detach()
    return rec.histories(q[None], [meta])[0]


# --------------------------------------------------------------------------------------------
# Fast batched training
# --------------------------------------------------------------------------------------------


@dataclass
class GramOperators:
    """Precomputed operators of B cells for ``method="gram"``; m = n T.

    ``P`` (B, m, m) = ``U^T W0 W0^T U``; ``G`` (B, m, m) = ``U^T U``; ``K`` (B, d, m) =
    ``W0 W0^T U``; ``U`` (B, d, m) the training tokens as columns (sample-major: column
    ``i T + t`` is token t of sample i). For ``W = I``: ``P = G`` and ``K = U``.
    """

    P: torch.Tensor
    G: torch.Tensor
    K: torch.Tensor
    U: torch.Tensor

    def query(self, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``q = W p = K c - U r`` (B, d) from c (B, m) and ``r = M P c`` (B, m)."""
        return torch.einsum("bdm,bm->bd", self.K, c) - torch.einsum("bdm,bm->bd", self.U, r)


def gram_operators(
    x_train: torch.Tensor, w0: Sequence[torch.Tensor | None] | None
) -> GramOperators:
    """Precompute :class:`GramOperators` from x_train (B, n, T, d) and one ``W0`` (d, d) per cell
    (None entries or ``w0=None``: identity). Cost ``O(d^2 n T)`` per cell (cells sharing the same
    ``W0`` object are multiplied together in one matrix product)."""
    B, n, T, d = x_train.shape
    U = x_train.reshape(B, n * T, d).transpose(1, 2)  # (B, d, m)
    G = U.transpose(1, 2) @ U  # (B, m, m)
    P = G.clone()
    K = U.clone()
    if w0 is not None:
        groups: dict[int, list[int]] = {}
        for b, w in enumerate(w0):
            if w is not None:
                groups.setdefault(id(w), []).append(b)
        for idx in groups.values():
            w = w0[idx[0]]
            Ub = U[idx].transpose(0, 1).reshape(d, -1)  # (d, |idx| m)
            A = w.T @ Ub  # (d, |idx| m) = W0^T U
            Kb = (w @ A).reshape(d, len(idx), n * T).transpose(0, 1)  # (|idx|, d, m)
            A = A.reshape(d, len(idx), n * T).transpose(0, 1)
            K[idx] = Kb
            P[idx] = A.transpose(1, 2) @ A
    return GramOperators(P=P, G=G, K=K, U=U)


@dataclass
class LowRankGram:
    """B symmetric (m, m) operators that share a base and differ by a scaled low-rank part:
    ``O_b = O0 + mu_b (F C + C^T F^T) + mu_b^2 C^T Q C`` with ``O0`` (m, m), ``F`` (m, k),
    ``C`` (k, m), ``Q`` (k, k) symmetric, ``mu`` (B,). The grid's cells sharing (n, seed, d)
    have exactly this form (signal ``mu_b C`` on k = 2 coordinates): stored once instead of B
    dense matrices, and ``x O_b`` for all cells is one GEMM with ``O0`` plus O(B m k) work."""

    O0: torch.Tensor
    F: torch.Tensor
    C: torch.Tensor
    Q: torch.Tensor
    mu: torch.Tensor

    def rmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x_b O_b`` for row vectors x (B, 1, m)."""
        B, _, m = x.shape
        x2 = x.view(B, m)
        xf, xc = x2 @ self.F, x2 @ self.C.T  # (B, k) each
        mu = self.mu.view(B, 1)
        out = x2 @ self.O0 + mu * (xf @ self.C + xc @ self.F.T) + (mu * mu) * (xc @ self.Q @ self.C)
        return out.view(B, 1, m)

    def dense(self) -> torch.Tensor:
        """The B operators as (B, m, m) (for tests and small cases)."""
        low = self.F @ self.C
        mu = self.mu.view(-1, 1, 1)
        return self.O0 + mu * (low + low.T) + mu * mu * (self.C.T @ self.Q @ self.C)


def _rmul(x: torch.Tensor, op: torch.Tensor | LowRankGram) -> torch.Tensor:
    """``x_b O_b`` for row vectors x (B, 1, m): dense (B, m, m) operators or a LowRankGram."""
    return op.rmul(x) if isinstance(op, LowRankGram) else torch.bmm(x, op)


@dataclass
class GramStep:
    """What :func:`gram_descent` hands to ``on_log``: scores s (B, n, T) for the current
    parameters, attention a (B, n, T), outputs f (B, n), per-sample losses (B, n), and the
    state c (B, m), ``r = M P c`` (B, m) from which ``q = K c - U r``."""

    step: int
    s: torch.Tensor
    a: torch.Tensor
    f: torch.Tensor
    loss: torch.Tensor
    c: torch.Tensor
    r: torch.Tensor


def gram_descent(
    P: torch.Tensor | LowRankGram,
    G: torch.Tensor | LowRankGram,
    v: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: float,
    train_w: bool = True,
    log_steps: Sequence[int] = (),
    on_log: Callable[[GramStep], None] | None = None,
    threads: int | None = 1,
) -> GramStep:
    """Run ``steps`` GD steps in the m-dimensional representation; see the module docstring.

    P, G (B, m, m), or :class:`LowRankGram` s; v (B, n, T) token values ``X nu``; y (B, n)
    observed labels. Calls
    ``on_log`` at each step in ``log_steps`` (parameters after that many updates) and returns
    the :class:`GramStep` of the final parameters. Per step and cell ``O(m^2)``. The loop runs
    with ``threads`` intra-op threads (``on_log`` with the caller's setting).
    """
    outer = torch.get_num_threads()
    with num_threads(threads):
        return _gram_loop(P, G, v, y, steps, lr, train_w, set(log_steps), on_log, outer)


def _gram_loop(P, G, v, y, steps, lr, train_w, logs, on_log, outer) -> GramStep:
    B, n, T = v.shape
    m = n * T
    # Row-vector layout: (B, 1, m) @ (B, m, m) is a fast batched GEMV on CPU, while
    # (B, m, m) @ (B, m, 1) is not. P and G are symmetric, so c^T P = (P c)^T.
    dtype = v.dtype
    c = torch.zeros(B, 1, m, dtype=dtype)
    M = torch.zeros(B, m, m, dtype=dtype) if train_w else None
    for t in range(steps + 1):
        z = _rmul(c, P)  # (B, 1, m) = (P c)^T
        if M is not None:
            r = torch.bmm(z, M.transpose(1, 2))  # (M P c)^T
            s = (z - _rmul(r, G)).view(B, n, T)  # (P c - G M P c)^T
        else:
            r = torch.zeros_like(z)
            s = z.view(B, n, T)
        a, f, loss = readout(s, v, y)
        state = GramStep(t, s, a, f, loss, c.view(B, m), r.view(B, m))
        if on_log is not None and t in logs:
            with num_threads(outer):
                on_log(state)
        if t == steps:
            return state
        b = score_grad(a, f, v, y).reshape(B, 1, m)  # (dL/ds)^T
        if M is not None:
            mt = torch.bmm(_rmul(b, G), M)  # (M^T G b)^T with the old M
            M.baddbmm_(b.transpose(1, 2), c, alpha=lr)  # M += lr b c^T
            c = c - lr * (b - mt)
        else:
            c = c - lr * b
    raise AssertionError("unreachable")


def dense_descent(
    x: torch.Tensor,
    v: torch.Tensor,
    y: torch.Tensor,
    W: torch.Tensor,
    *,
    steps: int,
    lr: float,
    train_w: bool = True,
    log_steps: Sequence[int] = (),
    on_log: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    threads: int | None = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GD on explicit W (B, d, d) (updated in place) and p (B, d) with the query trick.

    x (B, n, T, d), v (B, n, T), y (B, n). Per step and cell ``O(d^2 + n T d)``. Calls
    ``on_log(step, s, q)`` with scores s (B, n, T) and query q (B, d) at ``log_steps``; returns
    the final (W, p). The loop runs with ``threads`` intra-op threads.
    """
    B, n, T, d = x.shape
    p = torch.zeros(B, 1, d, dtype=x.dtype)
    logs = set(log_steps)
    outer = torch.get_num_threads()
    with num_threads(threads):
        for t in range(steps + 1):
            q = torch.bmm(p, W.transpose(1, 2)).view(B, d)  # (W p)^T, row-vector GEMV
            s = torch.einsum("bntd,bd->bnt", x, q)
            if on_log is not None and t in logs:
                with num_threads(outer):
                    on_log(t, s, q)
            if t == steps:
                break
            a, f, _ = readout(s, v, y)
            g = torch.einsum("bnt,bntd->bd", score_grad(a, f, v, y), x).unsqueeze(1)  # dL/dq
            gp = torch.bmm(g, W)  # (W^T g)^T with the old W
            if train_w:
                W.baddbmm_(g.transpose(1, 2), p, alpha=-lr)  # W -= lr g p^T
            p = p - lr * gp
    return W, p.view(B, d)


def _stack(datas: Sequence[TokenData]):
    first = datas[0]
    for dt in datas[1:]:
        if (dt.n, dt.T, dt.d, dt.n_test, dt.x_train.dtype) != (
            first.n,
            first.T,
            first.d,
            first.n_test,
            first.x_train.dtype,
        ):
            raise ValueError("batched cells need equal n, T, d, n_test and dtype")
    mu = torch.tensor([dt.mu_norm for dt in datas], dtype=first.x_train.dtype)
    x = torch.stack([dt.x_train for dt in datas])  # (B, n, T, d)
    xt = torch.stack([dt.x_test for dt in datas])  # (B, N, T, d)
    return (
        x,
        torch.stack([dt.y_train for dt in datas]),
        token_values(x, mu.view(-1, 1, 1)),
        xt,
        torch.stack([dt.y_test for dt in datas]),
        token_values(xt, mu.view(-1, 1, 1)),
        torch.stack([~dt.noisy_mask for dt in datas]),
    )


def choose_method(n: int, T: int, d: int, method: Method = "auto") -> str:
    """``"gram"`` when ``m = n T <= d`` (cheaper: ``O(m^2)`` vs ``O(d^2)`` per step), else dense."""
    if method != "auto":
        return method
    return "gram" if n * T <= d else "dense"


def train_token_attention_batched(
    datas: Sequence[TokenData],
    *,
    steps: int = 1000,
    lr: float = 5e-3,
    w_init: WInit = "kaiming",
    train_w: bool = True,
    seeds: Sequence[int] | None = None,
    log_every: int | None = 10,
    log_steps: Sequence[int] | None = None,
    track: Sequence[int] | None = None,
    method: Method = "auto",
) -> list[TrainHistory]:
    """Train B cells (same n, T, d, n_test, dtype; each its own data, ``mu_norm`` and seed) at
    once with the fast path and return one :class:`TrainHistory` per cell.

    ``seeds[b]`` seeds cell b's ``W_0`` (default ``datas[b].seed``). ``method``: ``"gram"``
    (per step ``O((nT)^2)``), ``"dense"`` (``O(d^2 + n T d)``) or ``"auto"``. Test metrics at
    each logged step cost ``O(d n T + n_test T d)`` per cell. ``track``: training samples whose
    full attention is recorded (default all).
    """
    _check_w_init(w_init)
    datas = list(datas)
    if not datas:
        return []
    x, y, v, xt, yt, vt, clean = _stack(datas)
    B, n, T, d = x.shape
    seeds = [dt.seed for dt in datas] if seeds is None else list(seeds)
    schedule = log_schedule(steps, log_every, log_steps)
    rec = _Recorder(y, clean, _default_track(datas[0], track))
    method = choose_method(n, T, d, method)

    def log(t, a, f, loss, q):
        at, ft, lt = readout(torch.einsum("bntd,bd->bnt", xt, q), vt, yt)
        rec.log(t, a, f, loss, at, ft, lt, yt)

    w0s: list[torch.Tensor | None] = [None] * B
    if w_init == "kaiming":
        cache: dict[int, torch.Tensor] = {}
        for b, sd in enumerate(seeds):
            if sd not in cache:
                cache[sd] = init_w0(d, sd, x.dtype)
            w0s[b] = cache[sd]
    final_q: torch.Tensor | None = None
    if method == "gram":
        ops = gram_operators(x, w0s if w_init == "kaiming" else None)

        def on_log(st: GramStep):
            nonlocal final_q
            q = ops.query(st.c, st.r)
            final_q = q
            log(st.step, st.a, st.f, st.loss, q)

        gram_descent(
            ops.P, ops.G, v, y, steps=steps, lr=lr, train_w=train_w, log_steps=schedule,
            on_log=on_log,
        )  # fmt: skip
    elif method == "dense":
        eye = torch.eye(d, dtype=x.dtype)
        W = torch.stack([eye if w is None else w for w in w0s])  # (B, d, d)

        def on_log_dense(t, s, q):
            nonlocal final_q
            final_q = q
            a, f, loss = readout(s, v, y)
            log(t, a, f, loss, q)

        dense_descent(
            x, v, y, W, steps=steps, lr=lr, train_w=train_w, log_steps=schedule,
            on_log=on_log_dense,
        )  # fmt: skip
    else:
        raise ValueError(f"unknown method {method!r}: use 'auto', 'gram' or 'dense'")
    meta = [
        {"method": method, "w_init": w_init, "train_w": train_w, "lr": lr, "steps": steps,
         "seed": sd, "mu_norm": dt.mu_norm, "d": d, "n": n}
        for sd, dt in zip(seeds, datas)
    ]  # fmt: skip
    return rec.histories(final_q, meta)


def train_token_attention(data: TokenData, **kwargs) -> TrainHistory:
    """Train one cell with the fast path; keyword arguments as
    :func:`train_token_attention_batched` (``seed=`` sets the ``W_0`` seed)."""
    seed = kwargs.pop("seed", None)
    if seed is not None:
        kwargs["seeds"] = [seed]
    return train_token_attention_batched([data], **kwargs)[0]


# --------------------------------------------------------------------------------------------
# One-layer Transformer encoder variant
# --------------------------------------------------------------------------------------------


class TokenTransformer(nn.Module):
    """One-layer pre-LN Transformer encoder with a learnable CLS token and a linear head.

    x (N, T, d) -> prepend CLS (the analogue of ``p``, init ``randn``) -> (N, T+1, d) ->
    ``h = x + Attn(LN(x))`` (single head, fused qkv ``Linear(d, 3d, bias=False)``, scale
    ``d^-1/2``) -> ``h = h + FFN(h)`` with ``FFN = LN, Linear(d, d), GELU, Linear(d, d)`` ->
    final LN -> ``Linear(d, 1)`` on the CLS position -> f (N,). With ``skip=False``:
    ``h = FFN(Attn(LN(x)))`` (no residuals). Parameters are initialised from ``seed`` without
    touching the global RNG.
    """

    def __init__(
        self, d: int, *, skip: bool = True, seed: int = 0, dtype: torch.dtype = torch.float32
    ):
        super().__init__()
        self.d, self.skip, self.scale = d, skip, d**-0.5
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.cls = nn.Parameter(torch.randn(d))
            self.norm_attn = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d, bias=False)
            self.ffn = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
            self.norm_out = nn.LayerNorm(d)
            self.head = nn.Linear(d, 1)
        self.to(dtype)

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, T, d) -> (f (N,), full CLS-row attention (N, T+1); index 0 = CLS itself)."""
        N = x.shape[0]
        h = torch.cat([self.cls.expand(N, 1, self.d), x], dim=1)  # (N, T+1, d)
        qh, kh, vh = self.qkv(self.norm_attn(h)).chunk(3, dim=-1)
        att = torch.softmax(qh @ kh.transpose(1, 2) * self.scale, dim=-1)  # (N, T+1, T+1)
        out = att @ vh
        if self.skip:
            h = h + out
            h = h + self.ffn(h)
        else:
            h = self.ffn(out)
        f = self.head(self.norm_out(h[:, 0])).squeeze(-1)
        return f, att[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_attention(x)[0]

    def cls_attention(self, x: torch.Tensor, include_cls: bool = False) -> torch.Tensor:
        """CLS-query attention: (N, T) over the data tokens (the CLS->CLS mass excluded and *not*
        renormalised, so rows sum to ``1 - a_cls``), or (N, T+1) with the CLS entry first."""
        att = self.forward_with_attention(x)[1]
        return att if include_cls else att[:, 1:]


def train_transformer(
    data: TokenData,
    *,
    steps: int = 1000,
    lr: float = 5e-3,
    skip: bool = True,
    seed: int | None = None,
    log_every: int | None = 10,
    log_steps: Sequence[int] | None = None,
    track: Sequence[int] | None = None,
) -> TrainHistory:
    """Train :class:`TokenTransformer` (all parameters, SGD, full batch, logistic loss).

    Attention metrics use the CLS-to-data-token attention (N, T) (CLS entry excluded, not
    renormalised). Per step ``O(n T d^2)`` (plus ``O(n T^2 d)``).
    """
    dtype = data.x_train.dtype
    model = TokenTransformer(
        data.d, skip=skip, seed=data.seed if seed is None else seed, dtype=dtype
    )
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = data.x_train, data.y_train
    rec = _Recorder(y[None], ~data.noisy_mask[None], _default_track(data, track))
    schedule = set(log_schedule(steps, log_every, log_steps))
    for t in range(steps + 1):
        if t in schedule:
            with torch.no_grad():
                f, att = model.forward_with_attention(x)
                ft, att_t = model.forward_with_attention(data.x_test)
                rec.log(t, att[None, :, 1:], f[None], F.softplus(-y * f)[None],
                        att_t[None, :, 1:], ft[None], F.softplus(-data.y_test * ft)[None],
                        data.y_test[None])  # fmt: skip
        if t == steps:
            break
        opt.zero_grad()
        F.softplus(-y * model(x)).mean().backward()
        opt.step()
    meta = {"method": "transformer", "skip": skip, "lr": lr, "steps": steps}
    return rec.histories(None, [meta])[0]
