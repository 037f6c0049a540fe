import torch
from torch import nn

from genlab.models.vit import reinit_linears_, reset_linear_


def test_reset_linear_draws_what_nn_linear_draws():
    torch.manual_seed(0)
    ref = nn.Linear(400, 300)  # torch's own reset_parameters: kaiming_uniform(a=sqrt(5))
    ours = nn.Linear(400, 300)
    reset_linear_(ours, torch.Generator().manual_seed(1))
    bound = 1 / 400**0.5
    for t in (ours.weight, ref.weight, ours.bias, ref.bias):
        assert t.abs().max() <= bound
        # uniform on (-bound, bound) has variance bound^2 / 3; the sample variance of n draws
        # has sd bound^2 / 3 * sqrt(0.8 / n) (excess kurtosis -1.2)
        tol = 5 * bound**2 / 3 * (0.8 / t.numel()) ** 0.5
        assert abs(t.var().item() - bound**2 / 3) < tol
    normal = nn.Linear(400, 300)
    reinit_linears_([normal], torch.Generator().manual_seed(1), std=0.02, kind="normal")
    assert torch.all(normal.bias == 0) and abs(normal.weight.std().item() - 0.02) < 1e-3
