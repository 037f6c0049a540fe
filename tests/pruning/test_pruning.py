"""Global pruning by criterion, masks held through training, rewinding."""

import pytest
import torch
from torch import nn

from genlab.pruning import (
    apply_mask_,
    density,
    enforce_mask,
    full_mask,
    prunable_weights,
    prune,
    rewind,
)
from genlab.train import SAM


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 20), nn.ReLU(), nn.Linear(20, 3))  # fmt: skip


def test_prunable_weights_are_conv_and_linear_weights_without_the_output_layer():
    net = _net()
    assert prunable_weights(net) == ["0.weight", "4.weight"]
    assert prunable_weights(net, prune_output=True) == ["0.weight", "4.weight", "6.weight"]
    assert prunable_weights(net, exclude=["0.weight"]) == ["4.weight"]


@pytest.mark.parametrize("criterion", ["magnitude", "reverse"])
def test_global_pruning_removes_the_right_weights_by_explicit_ranking(criterion):
    net = _net()
    names = prunable_weights(net)
    params = dict(net.named_parameters())
    mask = full_mask(net, names)
    mask["0.weight"].view(-1)[:5] = 0  # already pruned: never counted or chosen again
    new = prune({k: params[k] for k in names}, mask, 0.2, criterion)
    # reference: a Python sort of (|w|, position) over surviving entries of all layers
    entries = [(abs(float(params[k].view(-1)[i])), j, k, i)
               for j, k in enumerate(names) for i in range(params[k].numel())
               if mask[k].view(-1)[i] == 1]  # fmt: skip
    n_prune = round(0.2 * len(entries))
    entries.sort(key=lambda e: e[0] if criterion == "magnitude" else -e[0])
    gone = {(k, i) for _, _, k, i in entries[:n_prune]}
    for k in names:
        for i in range(params[k].numel()):
            expected = 0.0 if (k, i) in gone or mask[k].view(-1)[i] == 0 else 1.0
            assert float(new[k].view(-1)[i]) == expected
    assert sum(int((m == 0).sum()) for m in new.values()) == 5 + n_prune


def test_levels_follow_the_density_schedule_and_random_pruning_is_seeded():
    net = _net()
    names = prunable_weights(net)
    w = dict(net.named_parameters())
    mask = full_mask(net, names)
    total = sum(m.numel() for m in mask.values())
    remaining = total
    for _ in range(5):
        mask = prune(w, mask, 0.2)
        remaining -= int(0.2 * remaining + 0.5)
        assert density(mask) == remaining / total
    a = prune(w, full_mask(net, names), 0.5, "random", torch.Generator().manual_seed(3))
    b = prune(w, full_mask(net, names), 0.5, "random", torch.Generator().manual_seed(3))
    c = prune(w, full_mask(net, names), 0.5, "random", torch.Generator().manual_seed(4))
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("opt", ["sgd-momentum-wd", "adamw", "sam"])
def test_pruned_weights_stay_exactly_zero_through_training(opt):
    net = _net()
    names = prunable_weights(net)
    w = dict(net.named_parameters())
    mask = prune(w, full_mask(net, names), 0.6)
    if opt == "sgd-momentum-wd":
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    elif opt == "adamw":
        optimizer = torch.optim.AdamW(net.parameters(), lr=0.01, weight_decay=0.1)
    else:
        base = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        optimizer = SAM(net.parameters(), base, rho=0.05)
    enforce_mask(net, mask, optimizer)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
    start = {k: w[k].detach().clone() for k in names}
    for _ in range(5):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        if opt == "sam":
            optimizer.step(lambda: nn.functional.cross_entropy(net(x), y).backward())
        else:
            optimizer.step()
    for k in names:
        assert torch.all(w[k][mask[k] == 0] == 0), k
        assert not torch.equal(w[k][mask[k] == 1], start[k][mask[k] == 1])  # others trained


def test_rewind_loads_the_state_and_applies_the_mask():
    net = _net()
    init = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    mask = prune(dict(net.named_parameters()), full_mask(net, prunable_weights(net)), 0.5)
    rewind(net, init, mask)
    for k, v in net.state_dict().items():
        expected = init[k] * mask[k] if k in mask else init[k]
        assert torch.equal(v, expected)
    apply_mask_(net, mask)  # idempotent
    assert torch.equal(net.state_dict()["0.weight"], init["0.weight"] * mask["0.weight"])


def test_kept_weights_follow_the_same_path_with_or_without_gradient_masking():
    """Per-coordinate optimizers need no gradient mask: the kept weights are equal bit for bit
    (what lets enforce_mask skip it for them)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
    finals = []
    for masked_grads in (False, True):
        net = _net()
        mask = prune(dict(net.named_parameters()), full_mask(net, prunable_weights(net)), 0.6)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        enforce_mask(net, mask, opt, mask_gradients=masked_grads)
        for _ in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        finals.append({k: v.clone() for k, v in net.state_dict().items()})
    for k in finals[0]:
        assert torch.equal(finals[0][k], finals[1][k]), k
