"""The grokking protocol: the batched MLP sweep or the transformer behind the shared loop, with
every measure logged by one callback (:class:`GrokkingMeter`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from genlab.data import MODULAR, cache_dir, load_data
from genlab.data.modular import make_modular_data
from genlab.ensemble import MLPEnsemble
from genlab.losses import cross_entropy, squared_error
from genlab.measures import (
    collapse_and_bound,
    mutual_information_compressed,
    normalized_gram,
    normalized_grams,
    trace_products,
)
from genlab.measures.mutual_information import pca
from genlab.models import weight_norm
from genlab.models.conv_autoencoder import encode, load_or_train_autoencoder
from genlab.models.modular_transformer import (
    ModularTransformer,
    ModularTransformerConfig,
)
from genlab.models.modular_transformer import loss_fn as transformer_loss
from genlab.models.modular_transformer import make_optimizer as transformer_optimizer
from genlab.runs import (
    MetricsLog,
    Run,
    atomic_write_json,
)
from genlab.studies.grokking.analysis import analyze
from genlab.studies.grokking.config import GrokkingConfig, Member, members_of
from genlab.train import (
    Callback,
    EndlessSampler,
    SupervisedStepper,
    TrainLoop,
    measurement_steps,
    train_in_run,
)


@dataclass
class TaskData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int


def load_task(cfg: GrokkingConfig) -> TaskData:
    data = cfg.data
    if data.name == MODULAR:
        encoding = "index" if cfg.model == "transformer" else "onehot-concat"
        d = make_modular_data(data.p, data.op, data.train_fraction, seed=0, encoding=encoding)
        return TaskData(d.x_train, d.y_train, d.x_test, d.y_test, d.num_classes)
    ds = load_data(data)
    flat = (ds.x_train.reshape(ds.n_train, -1), ds.x_test.reshape(ds.n_test, -1))
    return TaskData(flat[0], ds.y_train, flat[1], ds.y_test, ds.num_classes)


# --- steppers: the batched MLP sweep and the transformer, behind one interface ---------------


class EnsembleStepper:
    """Drives an :class:`MLPEnsemble` from the shared :class:`TrainLoop`."""

    def __init__(self, ensemble: MLPEnsemble):
        self.model = self.ensemble = ensemble

    def step(self) -> torch.Tensor:
        return self.ensemble.step()

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return self.ensemble.state_dict()

    def checkpoint_state(self) -> dict:
        return {}

    def restore(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        self.ensemble.load_state_dict(tensors)

    # What the meter needs, for all members at once.
    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features (M, N, d) and logits (M, N, K)."""
        return self.ensemble.features(x, chunk_size=1024)

    def heads(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-layer weight (M, K, d) and bias (M, K)."""
        return self.ensemble.weights[-1], self.ensemble.biases[-1]

    def weight_norms(self) -> torch.Tensor:
        return weight_norm(self.ensemble.params, stacked=True)


class TransformerStepper(SupervisedStepper):
    """Nanda's transformer, full batch; the same interface as :class:`EnsembleStepper`, M = 1."""

    @torch.no_grad()
    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.model.features(x)
        return feats[None], (feats @ self.model.W_U)[None]

    def heads(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.model.W_U.detach().t()  # (K, d); the unembedding has no bias
        return w[None], torch.zeros(1, w.shape[0])

    def weight_norms(self) -> torch.Tensor:
        return weight_norm(self.model.parameters())[None]


def make_stepper(cfg: GrokkingConfig, data: TaskData, members: list[Member]):
    if cfg.model == "transformer":
        tcfg = ModularTransformerConfig(**{**vars(cfg.transformer), "p": cfg.data.p})
        model = ModularTransformer(tcfg, seed=members[0].seed)
        o = cfg.optim
        optimizer, scheduler = transformer_optimizer(
            model, o.lr, members[0].weight_decay, o.betas, o.warmup_steps
        )
        sampler = EndlessSampler(data.x_train, data.y_train, data.y_train.shape[0], seed=0)
        return TransformerStepper(model, optimizer, sampler, transformer_loss, scheduler)
    sizes = [data.x_train.shape[1], *[cfg.width] * cfg.depth, data.num_classes]
    ensemble = MLPEnsemble(
        data.x_train,
        data.y_train,
        sizes=sizes,
        seeds=[m.seed for m in members],
        weight_decays=[m.weight_decay for m in members],
        init_scale=[m.alpha for m in members],
        lr=cfg.optim.lr,
        loss=cfg.loss,
        batch_size=cfg.batch_size or None,
        betas=cfg.optim.betas,
        eps=adamw_eps(cfg, data.y_train.shape[0]),
    )
    return EnsembleStepper(ensemble)


ADAMW_EPS = 1e-8  # torch.optim.AdamW's default, the authors' optimizer


def adamw_eps(cfg: GrokkingConfig, n_train: int) -> float:
    """AdamW's eps for the configured batch reduction. Scaling the loss by c scales Adam's
    moments to c m and c^2 v, so the step m / (sqrt(v) + eps) becomes m / (sqrt(v) + eps / c):
    a loss summed over a batch of B is the mean with eps / B, the same step exactly."""
    if cfg.batch_reduction == "mean":
        return ADAMW_EPS
    return ADAMW_EPS / (cfg.batch_size or n_train)


# --- measurement ---------------------------------------------------------------------------


def member_losses(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-member mean loss of logits (M, N, K); cross-entropy in float64 for the log."""
    if loss == "mse_sum":
        return squared_error(logits, y)
    return cross_entropy(logits, y, torch.float64)


def nc_fields(nc) -> dict:
    keys = (
        "within_class_variance",
        "between_class_variance",
        "nc1_trace",
        "rnc1",
        "nc1",
        "nc2_cond",
        "equinorm",
        "equiangularity",
        "nc3",
        "nc4",
    )
    return {k: getattr(nc, k) for k in keys}


MI_DIM = 4  # the authors' latent size for X and Z


def compress_inputs(cfg: GrokkingConfig, x: torch.Tensor) -> torch.Tensor:
    """X's codes for the compression MI: PCA-4, or the authors' convolutional autoencoder
    trained once on the task's whole (normalized) training split and cached."""
    if cfg.mi_x_compressor == "pca":
        return torch.from_numpy(pca(x.double().numpy(), MI_DIM, seed=0))
    whole = dataclasses.replace(cfg.data, train_size=None)  # the whole training split
    full = load_data(whole)
    side = math.isqrt(full.x_train[0].numel())
    name = f"autoencoder-{whole.name}-{whole.normalize}-d{MI_DIM}-e{cfg.mi_autoencoder_epochs}"
    path = cache_dir() / f"{name}.safetensors"
    model = load_or_train_autoencoder(
        path, full.x_train.reshape(-1, 1, side, side), latent_dim=MI_DIM,
        epochs=cfg.mi_autoencoder_epochs,
    )  # fmt: skip
    return encode(model, x.reshape(-1, 1, side, side)).double()


class GrokkingMeter:
    def __init__(
        self,
        run: Run,
        cfg: GrokkingConfig,
        data: TaskData,
        members: list[Member],
        mi_steps: set[int],
    ):
        self.run, self.cfg, self.data, self.members = run, cfg, data, members
        self.mi_steps = mi_steps
        self.loss = "ce" if cfg.model == "transformer" else cfg.loss
        n_h = min(cfg.nhsic_batches * 100, data.y_test.shape[0])
        n_batches = n_h // 100
        # nHSIC's kernel on X needs real-valued inputs: one-hot the transformer's tokens.
        x = data.x_test
        if x.dtype == torch.long:
            x = F.one_hot(x, int(x.max()) + 1).flatten(1)
        self.x_flat = x.float()
        # nHSIC's batches: random test samples (one fixed shuffle of the test split, as the
        # authors' shuffled test loader), not the first ones in file order.
        shuffle = torch.randperm(data.y_test.shape[0], generator=torch.Generator().manual_seed(0))
        self.hsic_idx = shuffle[: n_batches * 100]
        # Compression MI: X's 4-dimensional codes never change, so they are computed once.
        self.mi_idx = shuffle[: min(cfg.mi_samples, data.y_test.shape[0])]
        self.mi_x = compress_inputs(cfg, self.x_flat[self.mi_idx])
        # The X and Y sides of nHSIC never change: their normalized Gram matrices, one per
        # batch of 100, are computed once here (stacked (B, 100, 100)); each logged step only
        # builds the Z side, all batches in one batched solve.
        self.hsic_r_x = self.hsic_r_y = None
        if n_batches:
            self.hsic_r_x = normalized_grams(self.x_flat[self.hsic_idx].view(n_batches, 100, -1))
            y_batches = data.y_test[self.hsic_idx].view(n_batches, 100)
            self.hsic_r_y = torch.stack(
                [normalized_gram(yb, label_kernel=True, num_classes=data.num_classes)
                 for yb in y_batches]
            )  # fmt: skip

    def __call__(self, loop: TrainLoop) -> None:
        d, stepper, step = self.data, loop.stepper, loop.step
        f_tr, l_tr = stepper.outputs(d.x_train)
        f_te, l_te = stepper.outputs(d.x_test)
        w, b = stepper.heads()
        norms = stepper.weight_norms()
        loss_tr, loss_te = (
            member_losses(l_tr, d.y_train, self.loss),
            member_losses(l_te, d.y_test, self.loss),
        )
        acc_tr = (l_tr.argmax(-1) == d.y_train).double().mean(-1)
        acc_te = (l_te.argmax(-1) == d.y_test).double().mean(-1)
        nhsic_zx = nhsic_zy = None
        if self.hsic_r_x is not None:
            # nhsic(x, z) and nhsic(z, y, label_kernel=True) averaged over the batches, for every
            # member at once: one batched solve over (members x batches) Gram matrices.
            n_members, n_batches = f_te.shape[0], self.hsic_r_x.shape[0]
            z = f_te[:, self.hsic_idx].reshape(n_members * n_batches, 100, -1)
            r_z = normalized_grams(z)
            r_z = r_z.view(n_members, n_batches, 100, 100)
            nhsic_zx = trace_products(self.hsic_r_x, r_z).mean(-1).tolist()
            nhsic_zy = trace_products(r_z, self.hsic_r_y).mean(-1).tolist()
        for m, member in enumerate(self.members):
            tag = {
                "member": member.label,
                "alpha": member.alpha,
                "weight_decay": member.weight_decay,
                "seed": member.seed,
            }
            # Theorem 3.2 from training statistics (a prediction of the test error) and from
            # test statistics (>= the test error by construction); stated form and variant.
            nc_tr, bound_tr = collapse_and_bound(f_tr[m], d.y_train, w[m], b[m])
            nc_te, bound = collapse_and_bound(f_te[m], d.y_test, w[m], b[m])
            extra = {}
            if nhsic_zx is not None:
                extra.update(nhsic_zx=nhsic_zx[m], nhsic_zy=nhsic_zy[m])
            if step in self.mi_steps:
                try:
                    mi = mutual_information_compressed(
                        self.mi_x, f_te[m][self.mi_idx], d.y_test[self.mi_idx]
                    )
                    extra.update(mi_zx=mi.I_zx, mi_zy=mi.I_zy)
                except ValueError:
                    # e.g. dead ReLU features with a singular covariance: no estimate here.
                    extra.update(mi_zx=None, mi_zy=None)
            self.run.log(
                step,
                "train",
                **tag,
                loss=float(loss_tr[m]),
                acc=float(acc_tr[m]),
                weight_norm=float(norms[m]),
                bound_stated=bound_tr.bound_stated,
                bound_variant=bound_tr.bound,
                **nc_fields(nc_tr),
            )
            self.run.log(
                step,
                "test",
                **tag,
                loss=float(loss_te[m]),
                acc=float(acc_te[m]),
                bound_stated=bound.bound_stated,
                bound_variant=bound.bound,
                bound_error=bound.test_error,
                **nc_fields(nc_te),
                **extra,
            )
        loop.last_metrics = {"train_acc": float(acc_tr.mean()), "test_acc": float(acc_te.mean())}


def class01_margins(stepper, data: TaskData, members: list[Member], limit: int) -> dict:
    """Signed distance of class-0 and class-1 points to the 0-vs-1 decision boundary of each of
    the first ``limit`` members (one per group first), for training and unseen points."""
    chosen, seen = [], set()
    for i, m in enumerate(members):
        if m.group not in seen:
            seen.add(m.group)
            chosen.append(i)
    chosen = chosen[:limit]
    w, b = stepper.heads()
    out = {}
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        keep = (y == 0) | (y == 1)
        feats, _ = stepper.outputs(x[keep])
        for i in chosen:
            dw, db = w[i][0] - w[i][1], b[i][0] - b[i][1]
            margin = (feats[i] @ dw + db) / dw.norm()
            sign = torch.where(y[keep] == 0, 1.0, -1.0)  # positive: on the correct side
            out.setdefault(members[i].label, {})[split] = (margin * sign).tolist()
    return out


# --- the run -------------------------------------------------------------------------------


def schedule(cfg: GrokkingConfig) -> tuple[list[int], set[int]]:
    dense = ((30, 1), (150, 10)) if cfg.dense_start else ()
    # every step below 30, every 10th below 150, then log-spaced points from 150 on
    steps = measurement_steps(
        cfg.steps, log_points=cfg.log_points, dense_until=dense, log_from=150 if dense else 1
    )
    mi = set()
    if cfg.mi_points:
        targets = measurement_steps(cfg.steps, log_points=cfg.mi_points)
        arr = np.array(steps)
        mi = {int(arr[np.abs(arr - t).argmin()]) for t in targets} | {0}
    return steps, mi


def run(cfg: GrokkingConfig, run: Run) -> dict:
    data = load_task(cfg)
    members = members_of(cfg)
    atomic_write_json(run.paths.artifact("members.json"), [vars(m) for m in members])
    stepper = make_stepper(cfg, data, members)
    steps, mi_steps = schedule(cfg)
    meter = GrokkingMeter(run, cfg, data, members, mi_steps)
    loop = TrainLoop(stepper, cfg.steps, callbacks=[Callback(meter, steps)])
    with run.stage("train"):
        train_in_run(loop, run, cfg.checkpoint_every, label=f"grokking {cfg.data.name}/{cfg.model}")
    margins = class01_margins(stepper, data, members, cfg.margin_members)
    atomic_write_json(run.paths.artifact("margins.json"), margins)
    analysis = analyze(MetricsLog(run.paths.metrics).read())
    return {"groups": analysis["groups"], "weight_decay": analysis["weight_decay"]}
