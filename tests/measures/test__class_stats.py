import torch

from genlab.measures._class_stats import class_statistics


def test_class_statistics_equal_explicit_loops_in_any_chunk_size():
    g = torch.Generator().manual_seed(0)
    n, d, k = 37, 5, 4
    h = torch.randn(n, d, generator=g)
    y = torch.randint(0, k - 1, (n,), generator=g)  # class 3 absent
    w = torch.randn(k, d, generator=g)
    hd, wd = h.double(), w.double()
    means = torch.zeros(k, d, dtype=torch.float64)
    for c in range(k):
        rows = [hd[i] for i in range(n) if int(y[i]) == c]
        if rows:
            means[c] = sum(rows) / len(rows)
    residual_sq = torch.tensor([float(((hd[i] - means[y[i]]) ** 2).sum()) for i in range(n)])
    present = [c for c in range(k) if int((y == c).sum())]
    nearest = torch.tensor(
        [min(present, key=lambda c: float(((hd[i] - means[c]) ** 2).sum())) for i in range(n)]
    )
    for chunk in (1, 7, 1000):  # the chunked passes give the same statistics
        s = class_statistics(h, y, k, w, chunk_size=chunk)
        assert s.counts.tolist() == [int((y == c).sum()) for c in range(k)]
        torch.testing.assert_close(s.means, means)
        torch.testing.assert_close(s.residual_sq.double(), residual_sq.double())
        assert abs(s.max_norm - float(hd.norm(dim=1).max())) < 1e-12
        assert abs(s.norm_sum - float(hd.norm(dim=1).sum())) < 1e-12 * n
        torch.testing.assert_close(s.logits.double(), hd @ wd.T)
        assert torch.equal(s.nearest.long(), nearest)
