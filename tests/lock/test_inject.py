"""Target matching, MLP reading and injection of DLR-Nets."""

import pytest
import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.lock.inject import (
    LockConfig,
    find_targets,
    inject,
    locked_modules,
    matches,
    mlp_weights,
)


class LlamaMLP(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.gate_proj = nn.Linear(d, h, bias=False)
        self.up_proj = nn.Linear(d, h, bias=False)
        self.down_proj = nn.Linear(h, d, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, d, h, kind):
        super().__init__()
        self.attn = nn.Linear(d, d)
        self.mlp = LlamaMLP(d, h) if kind == "llama" else nn.Sequential(
            nn.Linear(d, h), nn.GELU(), nn.Linear(h, d))  # fmt: skip

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


def _model(kind="llama", layers=3, d=8, h=12):
    torch.manual_seed(0)
    return nn.Sequential(*[Layer(d, h, kind) for _ in range(layers)])


def test_matching_by_name_suffix_and_regex():
    assert matches("model.layers.0.mlp", ("mlp",))
    assert not matches("model.layers.0.mlp_norm", ("mlp",))
    assert matches("model.layers.0.mlp", r".*layers\.[0-9]+\.mlp")
    assert not matches("model.layers.0.mlp.up_proj", r".*layers\.[0-9]+\.mlp")
    assert find_targets(_model(), LockConfig(target_modules=r"[02]\.mlp")) == ["0.mlp", "2.mlp"]
    # outermost only: a list naming both an MLP and its inner layer keeps the MLP
    assert find_targets(_model(layers=1), LockConfig(target_modules=("mlp", "up_proj"))) == [
        "0.mlp"
    ]


def test_nothing_matched_or_not_an_mlp_is_one_clear_error():
    with pytest.raises(ConfigError, match="target_modules.*matched no module"):
        find_targets(_model(), LockConfig(target_modules=("ffn",)))
    with pytest.raises(ConfigError, match="0.attn.*not an MLP"):
        inject(_model(), LockConfig(target_modules=("attn",)))


@pytest.mark.parametrize("kind,block", [("llama", "swiglu"), ("gelu", "gelu")])
def test_inject_replaces_every_target_with_a_matched_dlr_net(kind, block):
    model = _model(kind, d=8, h=12)
    # a GELU MLP this small is off by more than 5% at any depth (L d output biases): explicit
    report = inject(model, LockConfig(rank=3, depth=4 if kind == "gelu" else None))
    assert list(report) == ["0.mlp", "1.mlp", "2.mlp"]
    assert set(locked_modules(model)) == {"0.mlp", "1.mlp", "2.mlp"}
    r = report["1.mlp"]
    assert (r["block"], r["d"], r["h"], r["rank"], r["depth"]) == (block, 8, 12, 3, 4)
    dlr = locked_modules(model)["1.mlp"].dlr
    assert sum(p.numel() for p in dlr.parameters()) == r["dlr_parameters"]
    x = torch.randn(2, 5, 8)
    out = model(x)  # random init: every DLR-Net outputs zero, only attention remains
    ref = x
    for layer in model:
        ref = ref + layer.attn(ref)
    assert torch.allclose(out, ref)


def test_split_init_keeps_the_mlp_weights_and_reads_them_back():
    model = _model("gelu", layers=1, d=6, h=8)
    w = mlp_weights(model[0].mlp)
    inject(model, LockConfig(rank=2, depth=4, init="split"))
    from genlab.lock import concatenate

    w_in, b_in, w_out, b_out = concatenate(locked_modules(model)["0.mlp"].dlr)
    assert torch.equal(w_in, w.w_in) and torch.equal(b_in, w.b_in)
    assert torch.equal(w_out, w.w_out) and torch.equal(b_out, w.b_out)


def _tiny_bert(act="gelu"):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, hidden_act=act)  # fmt: skip
    return BertModel(cfg).eval()


def test_encoder_mlps_are_fused_without_changing_a_bit():
    from genlab.lock.inject import EncoderMLP, fuse_encoder_mlps

    bert = _tiny_bert()
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        before = bert(ids).last_hidden_state
    fused = fuse_encoder_mlps(bert)
    assert fused == ["encoder.layer.0.intermediate", "encoder.layer.1.intermediate"]
    assert fuse_encoder_mlps(bert) == []  # idempotent
    assert isinstance(bert.encoder.layer[0].intermediate, EncoderMLP)
    assert isinstance(bert.encoder.layer[0].output.dense, nn.Identity)
    with torch.no_grad():
        assert torch.equal(bert(ids).last_hidden_state, before)  # same ops, same order
    # the fused module reads as a GELU MLP of d 16, h 32
    w = mlp_weights(bert.encoder.layer[0].intermediate)
    assert (w.block, w.d, w.h) == ("gelu", 16, 32)


def test_encoder_split_init_at_full_rank_is_the_original_bert():
    """split init with one block of r = h is the MLP itself: the locked encoder computes what
    the original did."""
    bert = _tiny_bert()
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        before = bert(ids).last_hidden_state
    report = inject(bert, LockConfig(target_modules=("intermediate",), rank=32, init="split"))
    assert set(report) == {"encoder.layer.0.intermediate", "encoder.layer.1.intermediate"}
    assert report["encoder.layer.0.intermediate"]["depth"] == 1
    with torch.no_grad():
        after = bert(ids).last_hidden_state
    # The block computes y with the MLP's own weights and kernels and returns (x + y) - x,
    # exact where |y| is small against |x| (Sterbenz; then the layer's x + ... is fl(x + y)
    # as before, and this machine gives equal bits); elsewhere one rounding at the scale of
    # the hidden state, through LayerNorm (gain about 1).
    eps = torch.finfo(torch.float32).eps
    scale = float(before.abs().max())
    torch.testing.assert_close(after, before, rtol=4 * eps, atol=4 * eps * scale)


def test_an_encoder_with_another_activation_is_refused():
    from genlab.lock.inject import fuse_encoder_mlps

    with pytest.raises(ConfigError, match="not GELU"):
        fuse_encoder_mlps(_tiny_bert(act="relu"))
