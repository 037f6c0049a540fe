import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genlab.losses import LOSSES, cross_entropy, squared_error


def test_squared_error_is_summed_over_outputs_and_averaged_over_examples():
    logits = torch.tensor([[0.5, 2.0, -1.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([1, 0])
    by_hand = ((0.5**2 + 1.0**2 + 1.0**2) + (1.0**2 + 0 + 3.0**2)) / 2
    assert math.isclose(float(squared_error(logits, y)), by_hand, rel_tol=4 * 6e-8)


def loop_reference(logits: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """One member and one example at a time, in float64, by the textbook formulas."""
    out = torch.zeros(logits.shape[:-2], dtype=torch.float64)
    for idx in np.ndindex(*logits.shape[:-2]):
        total = 0.0
        for i, row in enumerate(logits[idx].double()):
            if kind == "ce":
                total += float(torch.logsumexp(row, 0) - row[y[i]])
            else:
                total += sum((float(row[k]) - (k == int(y[i]))) ** 2 for k in range(len(row)))
        out[idx] = total / logits.shape[-2]
    return out


@pytest.mark.parametrize("kind", ["ce", "mse_sum"])
@pytest.mark.parametrize("shape", [(7, 5), (3, 7, 5), (2, 3, 7, 5)])
def test_batched_losses_equal_the_loop_reference(kind, shape):
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(*shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, shape[-1], (shape[-2],), generator=g)
    got = LOSSES[kind](logits, y)
    ref = loop_reference(logits, y, kind)
    # float64 sums of N*K = 35 terms of size <= ~10: a few hundred eps relative
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=35 * 10 * 2.2e-16, atol=0)


def test_cross_entropy_in_float64_from_float32_logits_and_the_fused_2d_path():
    g = torch.Generator().manual_seed(1)
    logits = 20 * torch.randn(3, 50, 9, generator=g)  # float32, large logits
    y = torch.randint(0, 9, (50,), generator=g)
    wide = cross_entropy(logits, y, torch.float64)
    assert wide.dtype == torch.float64
    torch.testing.assert_close(wide, loop_reference(logits, y, "ce"), rtol=1e-13, atol=0)
    # 2-D float32 uses F.cross_entropy itself: the same bits as calling it directly
    assert torch.equal(cross_entropy(logits[0], y), F.cross_entropy(logits[0], y))


def test_similarity_matching_against_a_loop_reference():
    from genlab.losses import similarity_matching

    g = torch.Generator().manual_seed(0)
    h = torch.randn(7, 3, 2, 2, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0, 2, 2])

    def cos_centered(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))

    flat, onehot = h.flatten(1), F.one_hot(y, 3).double()
    total = 0.0
    for i in range(7):
        for j in range(7):
            total += (cos_centered(flat[i], flat[j]) - cos_centered(onehot[i], onehot[j])) ** 2
    got = float(similarity_matching(h, y, 3))
    assert got == pytest.approx(total / 49, rel=1e-12)
    # labels' own similarity structure is matched exactly
    assert float(similarity_matching(onehot * 3.0, y, 3)) == pytest.approx(0.0, abs=1e-12)


def test_supervised_contrastive_against_a_loop_reference():
    from genlab.losses import supervised_contrastive

    g = torch.Generator().manual_seed(1)
    h = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 1, 2])  # sample 5 has no positive: not an anchor
    t = 0.1
    z = [row / math.sqrt(float(row @ row)) for row in h]
    per_anchor = []
    for i in range(6):
        pos = [p for p in range(6) if p != i and y[p] == y[i]]
        if not pos:
            continue
        denom = sum(math.exp(float(z[i] @ z[a]) / t) for a in range(6) if a != i)
        per_anchor.append(
            -sum(math.log(math.exp(float(z[i] @ z[p]) / t) / denom) for p in pos) / len(pos)
        )
    got = float(supervised_contrastive(h, y, t))
    assert got == pytest.approx(sum(per_anchor) / len(per_anchor), rel=1e-12)
    # class-aligned embeddings score lower than random ones
    aligned = F.one_hot(y, 3).double() + 0.01 * h[:, :3]
    assert float(supervised_contrastive(aligned, y, t)) < got
