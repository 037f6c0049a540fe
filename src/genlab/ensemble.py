"""A sweep of small MLPs (weight decay x seed) trained as ONE batched program on stacked tensors.

Why: the grokking study trains 30 MLPs (784-200-200-10, batch 100) for 100k steps. Run one by
one, each step is a handful of small matmuls plus optimizer bookkeeping, and per-op overhead
dominates on a CPU. Stacking the members' parameters along a leading member axis M turns every
layer into one ``torch.baddbmm`` / ``torch.bmm`` over (M, ...) stacks, the backward pass is
written out by hand (no autograd graph), and AdamW updates the six stacked tensors in one pass.

Everything a member sees is exactly what the sequential reference (``train_mlp_reference`` in
the tests)
(``nn.Sequential`` + ``torch.optim.AdamW``) sees for the same seed:

- **Init**: :func:`genlab.models.mlp.build_mlp` under ``torch.manual_seed(seed)`` -- default ``nn.Linear`` init in
  float32 (layer by layer, weight then bias), every parameter then multiplied by ``init_scale``
  (alpha), then cast to ``dtype``. This equals ``genlab.models.build_model("mlp", ...,
  init_scale=alpha, seed=seed)`` for the same layer sizes (same draws in the same order).
- **Batches** (:class:`BatchSampler`): full batch when ``batch_size`` is None (all training
  examples, in order, every step; no randomness). Otherwise each member owns a
  ``torch.Generator`` seeded by its seed; an epoch is ``torch.randperm(n, generator=g)`` and the
  batches are its consecutive slices of ``batch_size``. A partial last slice is DROPPED (when
  ``n % batch_size != 0`` the last ``n % batch_size`` indices of each permutation are never used)
  and a new permutation is drawn. The first permutation is drawn at the first step.
- **Loss**: ``"mse_sum"`` = mean over the batch of sum over outputs of (f - onehot(y))^2;
  ``"ce"`` = mean cross-entropy.
- **Optimizer**: AdamW with per-member weight decay (and optionally per-member lr), decoupled
  decay ``p *= 1 - lr * wd`` then the bias-corrected Adam step. ``adamw="fused"`` (default, one
  pass over memory) is bitwise the update of ``torch.optim.AdamW(..., fused=True)``;
  ``adamw="single_tensor"`` replays, op by op, the default CPU path of ``torch.optim.AdamW``
  (``foreach=False``) and is bitwise that update.

Only rounding in the matmuls (batched vs unbatched kernels, hand-written vs autograd backward)
separates a member from its sequential run (see tests/test_ensemble.py for the tolerances).

Layout: weight ``l`` is (M, out, in) (``nn.Linear``'s layout with a member axis), bias ``l`` is
(M, out). Features: the last hidden layer's post-ReLU activations (the penultimate layer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from genlab.errors import CheckpointError, ConfigError
from genlab.losses import LOSSES, cross_entropy, squared_error
from genlab.models.mlp import build_mlp, check_sizes
from genlab.train import BatchSampler

__all__ = [
    "ADAMW_IMPLS",
    "MLPEnsemble",
    "adamw_step_",
    "count_params",
    "matmul_flops_per_step",
    "train_ensemble",
]

ADAMW_IMPLS = ("fused", "single_tensor")


# --------------------------------------------------------------------------------------------
# Shared definitions: the MLP, the batch protocol, the loss


def _one_hot(y: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, k).to(dtype)


# --------------------------------------------------------------------------------------------
# AdamW on stacked tensors


def adamw_step_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    step: int,
    lrs: Sequence[float],
    weight_decays: Sequence[float],
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    impl: str = "fused",
) -> None:
    """One AdamW update, in place, of tensors stacked over a leading member axis M.

    ``step`` is the step number after this update (1 for the first); ``lrs`` and
    ``weight_decays`` have one entry per member. Member m's slice gets exactly (bitwise) the
    update ``torch.optim.AdamW(lr=lrs[m], weight_decay=weight_decays[m], betas, eps,
    fused=(impl == "fused"))`` would give it (``foreach=False`` for ``"single_tensor"``).
    """
    if impl not in ADAMW_IMPLS:
        raise ConfigError("adamw", f"unknown AdamW implementation {impl!r}; {list(ADAMW_IMPLS)}")
    beta1, beta2 = betas
    n_members = params[0].shape[0]
    same_lr = all(lr == lrs[0] for lr in lrs)

    def per_member(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
        # Python doubles cast to the param dtype: the same rounding as a Python scalar operand.
        t = torch.tensor(list(values), dtype=torch.float64).to(like.dtype)
        return t.view(n_members, *([1] * (like.dim() - 1)))

    if impl == "fused":
        # One kernel call per run of consecutive members sharing (lr, wd), on slices of the
        # stacks: decay and the Adam step in one pass over memory. torch.optim's fused path
        # keeps a float32 step tensor, incremented before the kernel; so do we.
        step_t = torch.tensor(float(step), dtype=torch.float32)
        hyper = list(zip(lrs, weight_decays))
        start = 0
        for end in range(1, n_members + 1):
            if end < n_members and hyper[end] == hyper[start]:
                continue
            run = slice(start, end)
            torch._fused_adamw_(
                [p[run] for p in params],
                [g[run] for g in grads],
                [a[run] for a in exp_avgs],
                [v[run] for v in exp_avg_sqs],
                [],
                [step_t] * len(params),
                lr=float(lrs[start]),
                beta1=beta1,
                beta2=beta2,
                weight_decay=float(weight_decays[start]),
                eps=eps,
                amsgrad=False,
                maximize=False,
            )
            start = end
        return

    # "single_tensor": decoupled weight decay (skipped, as torch does, where wd == 0) ...
    decay = [1.0 - lr * wd for lr, wd in zip(lrs, weight_decays)]
    decay_on = [wd != 0 for wd in weight_decays]
    for p in params:
        if all(decay_on):
            p.mul_(per_member(decay, p))
        elif any(decay_on):
            for m in range(n_members):
                if decay_on[m]:
                    p[m].mul_(decay[m])

    # ... then torch.optim.adam._single_tensor_adam, op by op, on the stacks.
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    bias_correction2_sqrt = bias_correction2**0.5
    for p, g, exp_avg, exp_avg_sq in zip(params, grads, exp_avgs, exp_avg_sqs):
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        if same_lr:
            p.addcdiv_(exp_avg, denom, value=-(lrs[0] / bias_correction1))
        else:  # addcdiv_(t1, t2, value=v) computes p + (v * t1) / t2
            neg_step = per_member([-(lr / bias_correction1) for lr in lrs], p)
            p.add_((neg_step * exp_avg) / denom)


# --------------------------------------------------------------------------------------------
# The batched ensemble


class MLPEnsemble:
    """M ReLU MLPs with layer sizes ``sizes`` trained in lockstep on one training set.

    Args:
        x_train: (n, *input_shape), flattened to (n, sizes[0]); y_train: (n,) int64 in [0, K).
        sizes: layer widths, e.g. [784, 200, 200, 10] (K = sizes[-1]).
        seeds: one per member: its init (``build_mlp``) and its batch order (``BatchSampler``).
        weight_decays: one per member (or one for all). lr: one float or one per member.
        init_scale: alpha, one for all or one per member (``build_mlp``'s ``init_scale``).
        batch_size: None for full batch, else the minibatch size (partial batches dropped).

    Drive it with :meth:`step` or :func:`train_ensemble`; checkpoint with :meth:`state_dict`.
    """

    def __init__(
        self,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        *,
        sizes: Sequence[int],
        seeds: Sequence[int],
        weight_decays: float | Sequence[float],
        lr: float | Sequence[float] = 1e-3,
        init_scale: float | Sequence[float] = 1.0,
        loss: str = "mse_sum",
        batch_size: int | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        dtype: torch.dtype = torch.float32,
        adamw: str = "fused",
    ):
        check_sizes(sizes)
        self.sizes = [int(s) for s in sizes]
        self.seeds = [int(s) for s in seeds]
        m = len(self.seeds)
        if m < 1:
            raise ConfigError("seeds", "need at least one member")
        self.weight_decays = _per_member("weight_decays", weight_decays, m)
        self.lrs = _per_member("lr", lr, m)
        if loss not in LOSSES:
            raise ConfigError("loss", f"unknown loss {loss!r}; choose from {list(LOSSES)}")
        if adamw not in ADAMW_IMPLS:
            raise ConfigError("adamw", f"unknown {adamw!r}; choose from {list(ADAMW_IMPLS)}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ConfigError("betas", f"must be in [0, 1), got {betas}")
        self.loss, self.adamw, self.betas, self.eps = loss, adamw, tuple(betas), float(eps)
        self.init_scales, self.dtype = _per_member("init_scale", init_scale, m), dtype

        n = int(y_train.shape[0])
        self.x_train = x_train.reshape(n, -1).to(dtype).contiguous()  # (n, d0)
        if self.x_train.shape[1] != self.sizes[0]:
            raise ConfigError("sizes", f"sizes[0]={sizes[0]} but inputs have {x_train.shape[1]}")
        self.y_train = y_train.to(torch.long)
        self.target_train = _one_hot(self.y_train, self.sizes[-1], dtype)  # (n, K)
        self.batch_size = None if batch_size is None or batch_size == n else int(batch_size)
        self.sampler = (
            None if self.batch_size is None else BatchSampler(n, self.batch_size, self.seeds)
        )

        # Parameters: weights[l] (M, out, in), biases[l] (M, out); Adam moments alike.
        nets = [
            build_mlp(self.sizes, seed=s, init_scale=a, dtype=dtype)
            for s, a in zip(self.seeds, self.init_scales)
        ]
        linears = [[mod for mod in net if isinstance(mod, nn.Linear)] for net in nets]
        self.weights = [
            torch.stack([lin[l].weight.detach() for lin in linears]) for l in range(self.n_layers)
        ]
        self.biases = [
            torch.stack([lin[l].bias.detach() for lin in linears]) for l in range(self.n_layers)
        ]
        self.params = [*self.weights, *self.biases]
        self.grads = [torch.zeros_like(p) for p in self.params]
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        self.step_count = 0

    # ---- shapes -------------------------------------------------------------------------------

    @property
    def n_members(self) -> int:
        return len(self.seeds)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def num_classes(self) -> int:
        return self.sizes[-1]

    # ---- forward --------------------------------------------------------------------------------

    def _linear(self, l: int, h: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Layer l on h: (M, B, in) per-member inputs, or (B, in) shared by all members; written
        into ``out`` when given ((B, M*out) for shared inputs, else (M, B, out))."""
        w, b = self.weights[l], self.biases[l]  # (M, out, in), (M, out)
        m, d_out, d_in = w.shape
        if h.dim() == 2:  # shared input: one (B, in) @ (in, M*out) matmul
            z = torch.addmm(b.reshape(1, m * d_out), h, w.reshape(m * d_out, d_in).t(), out=out)
            return z.view(-1, m, d_out).transpose(0, 1)  # (M, B, out)
        return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2), out=out)  # (M, B, out)

    def _forward(self, x: torch.Tensor, buffers: dict | None = None) -> list[torch.Tensor]:
        """[x, h_1, ..., h_{L-1}, logits]: inputs, post-ReLU hidden activations, logits.

        With ``buffers`` (a dict kept across calls on chunks of at most the first chunk's
        size), each layer's output goes into a buffer allocated once: fresh multi-MB tensors
        per chunk cost page faults that showed up as a tenth of the forward pass's time."""
        acts = [x]
        h = x
        for l in range(self.n_layers):
            out = None
            if buffers is not None:
                rows, width = x.shape[-2], self.sizes[l + 1]
                shared = h.dim() == 2  # _linear's output layouts: (B, M*out) or (M, B, out)
                if l not in buffers:
                    shape = (
                        (rows, self.n_members * width) if shared else (self.n_members, rows, width)
                    )
                    buffers[l] = torch.empty(shape, dtype=self.dtype, device=x.device)
                out = buffers[l][:rows] if shared else buffers[l][:, :rows]
            h = self._linear(l, h, out)
            if l < self.n_layers - 1:
                h = h.relu_()
            acts.append(h)
        return acts

    def _prepare_x(self, x: torch.Tensor, per_member: bool) -> torch.Tensor:
        if per_member:  # (M, N, *input_shape): member m sees x[m]
            if x.shape[0] != self.n_members:
                raise ValueError(f"per-member inputs need {self.n_members} rows, got {x.shape[0]}")
            return x.reshape(x.shape[0], x.shape[1], -1).to(self.dtype)
        return x.reshape(x.shape[0], -1).to(self.dtype)  # (N, *input_shape) shared

    @torch.no_grad()
    def forward(self, x: torch.Tensor, per_member: bool = False) -> torch.Tensor:
        """Logits (M, N, K) of every member for x (N, *input_shape) shared by all members, or
        for x (M, N, *input_shape) with ``per_member=True``."""
        return self._forward(self._prepare_x(x, per_member))[-1]

    @torch.no_grad()
    def features(
        self, x: torch.Tensor, chunk_size: int | None = None, per_member: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features (M, N, sizes[-2]) and logits (M, N, K) of every member for x.

        x is (N, *input_shape) shared by all members (or (M, N, *input_shape) with
        ``per_member=True``); ``chunk_size`` bounds the examples per forward pass (the outputs
        are the same up to matmul rounding)."""
        x = self._prepare_x(x, per_member)
        n = x.shape[-2]
        feats = torch.empty(self.n_members, n, self.sizes[-2], dtype=self.dtype)
        logits = torch.empty(self.n_members, n, self.sizes[-1], dtype=self.dtype)
        step = n if chunk_size is None else max(1, int(chunk_size))
        buffers: dict = {}  # per-layer outputs, reused by every chunk
        for i in range(0, n, step):
            acts = self._forward(x[..., i : i + step, :], buffers)
            feats[:, i : i + step] = acts[-2]
            logits[:, i : i + step] = acts[-1]
        return feats, logits

    @torch.no_grad()
    def evaluate(
        self, x: torch.Tensor, y: torch.Tensor, chunk_size: int | None = 4096
    ) -> dict[str, torch.Tensor]:
        """Per-member ``loss`` (the training loss) and ``accuracy`` (M,) on (x, y)."""
        _, logits = self.features(x, chunk_size)
        y = y.to(torch.long)
        acc = (logits.argmax(-1) == y).to(torch.float64).mean(-1)
        return {"loss": self._loss_values(logits, y), "accuracy": acc}

    def _loss_values(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss == "mse_sum":
            return squared_error(logits, y)
        return cross_entropy(logits, y)

    # ---- one training step ---------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """One AdamW step of every member on its next batch; returns the batch losses (M,)
        (before the update)."""
        if self.sampler is None:
            x, target = self.x_train, self.target_train  # (n, d0) shared, (n, K)
        else:
            idx = self.sampler.next().reshape(-1)  # (M*B,)
            mb = (self.n_members, self.batch_size)
            x = self.x_train.index_select(0, idx).view(*mb, -1)  # (M, B, d0)
            target = self.target_train.index_select(0, idx).view(*mb, -1)  # (M, B, K)
        acts = self._forward(x)
        logits = acts[-1]  # (M, B, K)
        batch = logits.shape[-2]

        # dLoss/dlogits and the loss value
        if self.loss == "mse_sum":
            diff = logits - target
            losses = diff.pow(2).sum(-1).mean(-1)
            g = diff.mul_(2.0 / batch)
        else:
            logp = logits.log_softmax(-1)
            losses = -(logp * target).sum(-1).mean(-1)
            g = logp.exp_().sub_(target).div_(batch)

        # Backward, layer by layer: g is dLoss/d(pre-activation output of layer l), (M, B, out)
        n_layers = self.n_layers
        for l in reversed(range(n_layers)):
            h = acts[l]  # input of layer l
            gw, gb = self.grads[l], self.grads[n_layers + l]
            torch.sum(g, dim=-2, out=gb)
            if h.dim() == 2:  # shared input: one (M*out, B) @ (B, in) matmul
                m, d_out, d_in = gw.shape
                g_t = g.transpose(1, 2).reshape(m * d_out, -1)
                torch.mm(g_t, h, out=gw.view(m * d_out, d_in))
            else:
                torch.bmm(g.transpose(1, 2), h, out=gw)
            if l > 0:
                g = torch.bmm(g, self.weights[l])  # (M, B, in)
                g = torch.ops.aten.threshold_backward(g, h, 0)  # ReLU'
        self.step_count += 1
        adamw_step_(
            self.params,
            self.grads,
            self.exp_avgs,
            self.exp_avg_sqs,
            self.step_count,
            self.lrs,
            self.weight_decays,
            betas=self.betas,
            eps=self.eps,
            impl=self.adamw,
        )
        return losses

    # ---- members as plain modules -----------------------------------------------------------

    def member_state_dict(self, m: int) -> dict[str, torch.Tensor]:
        """Member m's parameters under :func:`build_mlp`'s keys ("0.weight", "0.bias", ...)."""
        out = {}
        for l in range(self.n_layers):
            out[f"{2 * l}.weight"] = self.weights[l][m].clone()
            out[f"{2 * l}.bias"] = self.biases[l][m].clone()
        return out

    def member_module(self, m: int) -> nn.Sequential:
        """Member m as an ``nn.Sequential`` (a copy)."""
        net = build_mlp(self.sizes, seed=0, dtype=self.dtype)
        net.load_state_dict(self.member_state_dict(m))
        return net

    # ---- checkpointing ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything needed to resume exactly, as contiguous tensors only (safetensors- and
        ``torch.load(weights_only=True)``-friendly): parameters, Adam moments, the step, each
        member's generator state and permutation, the position in it, and the hyperparameters
        (checked on load)."""
        state: dict[str, torch.Tensor] = {}
        for l in range(self.n_layers):
            for kind, stack in (("weight", self.weights[l]), ("bias", self.biases[l])):
                i = l if kind == "weight" else self.n_layers + l
                state[f"{kind}.{l}"] = stack.clone()
                state[f"exp_avg.{kind}.{l}"] = self.exp_avgs[i].clone()
                state[f"exp_avg_sq.{kind}.{l}"] = self.exp_avg_sqs[i].clone()
        state["step"] = torch.tensor(self.step_count, dtype=torch.long)
        state["seeds"] = torch.tensor(self.seeds, dtype=torch.long)
        state["weight_decays"] = torch.tensor(self.weight_decays, dtype=torch.float64)
        state["lrs"] = torch.tensor(self.lrs, dtype=torch.float64)
        if self.sampler is not None:
            state.update(self.sampler.state_dict())
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a :meth:`state_dict` into an ensemble built with the same configuration."""
        expected = set(self.state_dict())
        missing, extra = expected - set(state), set(state) - expected
        if missing or extra:
            raise CheckpointError(
                f"ensemble checkpoint keys differ: missing {sorted(missing)}, "
                f"unexpected {sorted(extra)}"
            )
        for key, mine in (
            ("seeds", self.seeds),
            ("weight_decays", self.weight_decays),
            ("lrs", self.lrs),
        ):
            if state[key].tolist() != mine:
                raise CheckpointError(f"checkpoint {key} {state[key].tolist()} != {mine}")
        for l in range(self.n_layers):
            for kind in ("weight", "bias"):
                i = l if kind == "weight" else self.n_layers + l
                for prefix, stack in (
                    ("", self.params[i]),
                    ("exp_avg.", self.exp_avgs[i]),
                    ("exp_avg_sq.", self.exp_avg_sqs[i]),
                ):
                    src = state[f"{prefix}{kind}.{l}"]
                    if src.shape != stack.shape:
                        raise CheckpointError(
                            f"{prefix}{kind}.{l}: shape {tuple(src.shape)} != {tuple(stack.shape)}"
                        )
                    stack.copy_(src)
        self.step_count = int(state["step"])
        if self.sampler is not None:
            self.sampler.load_state_dict(state)


def _per_member(field: str, value: float | Sequence[float], m: int) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * m
    values = [float(v) for v in value]
    if len(values) != m:
        raise ConfigError(field, f"needs one value per member ({m}), got {len(values)}")
    return values


def _check_callback_steps(callback_steps: Sequence[int]) -> list[int]:
    steps = [int(s) for s in callback_steps]
    if any(b <= a for a, b in zip(steps, steps[1:])) or any(s < 0 for s in steps):
        raise ConfigError("callback_steps", "must be strictly increasing non-negative integers")
    return steps


def train_ensemble(
    ensemble: MLPEnsemble,
    steps: int,
    *,
    callback: Callable[[MLPEnsemble], object] | None = None,
    callback_steps: Sequence[int] = (),
) -> MLPEnsemble:
    """Step ``ensemble`` until ``ensemble.step_count == steps`` (an absolute step count, so a
    resumed ensemble continues where it stopped).

    ``callback(ensemble)`` runs whenever ``step_count`` reaches a value in ``callback_steps``
    (sorted): after the update that reaches it, or before training for a listed 0 (and, on
    resume, for the listed step the ensemble was saved at only if it is 0 -- a checkpoint is
    taken after that step's callback). A callback returning True stops training early.
    """
    targets = _check_callback_steps(callback_steps)
    pending = [s for s in targets if s > ensemble.step_count or s == ensemble.step_count == 0]
    i = 0
    if callback is not None and pending and pending[0] == ensemble.step_count:
        i = 1
        if callback(ensemble) is True:
            return ensemble
    while ensemble.step_count < steps:
        ensemble.step()
        while i < len(pending) and pending[i] < ensemble.step_count:
            i += 1
        if i < len(pending) and pending[i] == ensemble.step_count:
            i += 1
            if callback is not None and callback(ensemble) is True:
                break
    return ensemble


# --------------------------------------------------------------------------------------------
# Sizes


def count_params(sizes: Sequence[int]) -> int:
    """Parameters (weights and biases) of an MLP with layer widths ``sizes``."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def matmul_flops_per_step(sizes: Sequence[int], batch: int) -> float:
    """Matmul FLOPs one member's training step actually executes: forward 2*B*W, weight
    gradients 2*B*W, input gradients 2*B*(W - W_1) -- the first layer's input gradient is never
    computed (W = all weights, W_1 = the first layer's). The rule of thumb 6 * B * params
    overcounts by that last term (and the biases)."""
    w = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2.0 * batch * (3 * sum(w) - w[0])
