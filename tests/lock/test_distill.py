"""Calibration capture and module-wise distillation."""

import pytest
import torch
from torch import nn

from genlab.lock import DLRNet
from genlab.lock.distill import capture_mlp_io, distill, relative_error


class Toy(nn.Module):
    """Embedding -> x + mlp(x) -> logits, called with input_ids (and attention_mask)."""

    def __init__(self, vocab=20, d=6, h=16):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.mlp = nn.Sequential(nn.Linear(d, h), nn.GELU(), nn.Linear(h, d))
        self.out = nn.Linear(d, vocab)

    def forward(self, input_ids, attention_mask=None):
        x = self.emb(input_ids)
        return self.out(x + self.mlp(x))


def test_capture_keeps_exactly_the_unpadded_tokens_in_order():
    torch.manual_seed(0)
    model = Toy()
    ids = torch.randint(0, 20, (2, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    got = capture_mlp_io(model, ["mlp"], [{"input_ids": ids, "attention_mask": mask},
                                          {"input_ids": ids[:1]}])  # fmt: skip
    x, y = got["mlp"]
    emb = model.emb(ids).detach()
    expected_x = torch.cat([emb[0, :3], emb[1], emb[0]])  # 3 + 5 unpadded, then 5 unmasked
    assert torch.equal(x, expected_x)
    assert torch.allclose(y, model.mlp(expected_x).detach())


def test_relative_error_by_hand_and_distillation_fits_an_mlp():
    torch.manual_seed(0)
    d, h = 6, 16
    mlp = nn.Sequential(nn.Linear(d, h), nn.GELU(), nn.Linear(h, d))
    x = torch.randn(2000, d)
    y = mlp(x).detach()
    net = DLRNet(d, 4, 4)
    assert relative_error(net, x, y) == pytest.approx(1.0)  # zero output at init
    # net(x) = x / 2 against targets x: ||x/2 - x||^2 / ||x||^2 = 1/4
    assert relative_error(lambda t: t * 0.5, y, y) == pytest.approx(0.25)
    history = distill(net, x, y, steps=250, lr=2e-2, batch=512)
    assert history[0] > 0.9 and relative_error(net, x, y) < 0.05


def test_end_to_end_pass_lowers_the_kl_and_trains_only_dlr_parameters():
    from genlab.lock import LockConfig, inject
    from genlab.lock.distill import distill_end_to_end
    from genlab.measures.capability import next_token_agreement

    torch.manual_seed(0)
    teacher = Toy().double().eval()
    student = Toy().double()
    student.load_state_dict(teacher.state_dict())
    inject(student, LockConfig(target_modules=("mlp",), rank=4, depth=4), seed=0)  # zero output
    before = {k: v.clone() for k, v in student.state_dict().items()}
    batches = [{"input_ids": torch.randint(0, 20, (4, 10), generator=torch.Generator().manual_seed(i))}
               for i in range(4)]  # fmt: skip
    kl0 = next_token_agreement(teacher, student, batches)["kl"]
    history = distill_end_to_end(student, teacher, batches, steps=150, lr=1e-2, seed=0)
    assert len(history) == 150
    kl1 = next_token_agreement(teacher, student, batches)["kl"]
    assert kl1 < 0.5 * kl0
    for k, v in student.state_dict().items():
        assert torch.equal(v, before[k]) == (".dlr." not in k), k
    assert all(p.requires_grad for p in student.parameters())  # flags restored


def test_a_diverging_fit_is_an_error_not_a_lock():
    from genlab.lock.dlr import DLRNet

    torch.manual_seed(0)
    net = DLRNet(8, 2, 3)
    x, y = torch.randn(64, 8), torch.randn(64, 8)
    with pytest.raises(FloatingPointError, match="diverged at step"):
        distill(net, x, y, steps=5, lr=float("inf"))
