import torch
from torch import nn

from genlab.models.cached_last_layer import ViTCached
from genlab.models.vit import ViT, reinit_linears_, reset_linear_
from genlab.studies.attention.real import Phase2Data, evaluate


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


def small_vit() -> ViT:
    torch.manual_seed(0)
    return ViT(d_model=32, depth=2, heads=2).eval()


def test_vit_shapes():
    vit = small_vit()
    x = torch.rand(3, 1, 28, 28)
    logits, maps = vit.forward_with_attention(x)
    assert logits.shape == (3, 10) and vit.num_tokens == 17
    assert [m.shape for m in maps] == [(3, 2, 17, 17)] * 2
    assert torch.allclose(maps[-1].sum(-1), torch.ones(3, 2, 17))
    assert vit.last_block_input(x).shape == (3, 17, 32)


def test_reinit_changes_only_qk_and_phase2_updates_only_qk():
    vit = small_vit()
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    vit.reinit_last_qk(torch.Generator().manual_seed(1))
    qk = {
        "blocks.1.query.weight",
        "blocks.1.query.bias",
        "blocks.1.key.weight",
        "blocks.1.key.bias",
    }
    after = vit.state_dict()
    for k in before:
        if k in qk:
            assert k.endswith("bias") or not torch.equal(before[k], after[k]), k
        else:
            assert torch.equal(before[k], after[k]), k
    assert {id(p) for p in vit.qk_parameters()} == {id(vit.get_parameter(k)) for k in qk}
    # One phase-2 step through the cached path, with everything else frozen.
    vit.requires_grad_(False)
    for p in vit.qk_parameters():
        p.requires_grad_(True)
    snapshot = {k: v.clone() for k, v in vit.state_dict().items()}
    opt = torch.optim.Adam(vit.qk_parameters(), lr=1e-2)
    h = vit.last_block_input(torch.rand(8, 1, 28, 28)).detach()
    logits, _ = vit.cls_logits_from_cache(h)
    torch.nn.functional.cross_entropy(logits, torch.arange(8) % 10).backward()
    opt.step()
    for k, v in vit.state_dict().items():
        assert torch.equal(v, snapshot[k]) != (k in qk), k


def test_vit_cached_path_matches_full_forward(rounding_atol):
    vit = small_vit()
    vit.reinit_last_qk(torch.Generator().manual_seed(0), std=0.5)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        full, maps = vit.forward_with_attention(x)
        h = vit.last_block_input(x)
        cached, attn = vit.cls_logits_from_cache(h)
    # The last block and the head: LayerNorms, q/k/v/out, MLP, norm and head over d = 32 (the
    # MLP's second layer over 2d), scores over d_head = 16, softmax and mixing over T = 17.
    n_terms = 8 * 32 + 2 * 32 + 16 + 2 * 17
    atol = rounding_atol(lambda hh: vit.cls_logits_from_cache(hh)[0], h, n_terms)
    assert torch.allclose(full, cached, rtol=0, atol=atol)
    atol = rounding_atol(lambda hh: vit.cls_logits_from_cache(hh)[1], h, n_terms)
    assert torch.allclose(maps[-1][:, :, 0], attn, rtol=0, atol=atol)
    stats = evaluate(ViTCached(vit), Phase2Data(vit.last_block_input(x).detach(), full.argmax(1)))
    assert stats["acc"] == 1.0 and 1 / 17 <= stats["max_attn"] <= 1
