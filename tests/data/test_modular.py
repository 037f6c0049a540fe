import pytest
import torch

from genlab.data.modular import ModularConfigError, make_modular_data


@pytest.mark.parametrize("op", ["+", "-", "*", "x", "/"])
def test_labels_and_split_cover_every_pair_once(op):
    p = 7
    d = make_modular_data(p=p, op=op, train_fraction=0.5, seed=3, encoding="index")
    pairs = torch.cat([d.pairs_train, d.pairs_test])
    y = torch.cat([d.y_train, d.y_test])
    expected_n = p * (p - 1) if op == "/" else p * p
    assert pairs.shape == (expected_n, 2)
    assert len({tuple(r) for r in pairs.tolist()}) == expected_n  # no pair twice
    for (a, b), label in zip(pairs.tolist(), y.tolist()):
        want = {
            "+": (a + b) % p,
            "-": (a - b) % p,
            "*": (a * b) % p,
            "x": (a * b) % p,
            "/": None,
        }[op]
        if op == "/":
            assert b != 0 and (label * b) % p == a  # label = a * b^-1
        else:
            assert label == want
    assert d.op == ("*" if op == "x" else op)
    assert d.num_classes == p and d.vocab_size == p + 1


def test_onehot_concat_encoding():
    p = 11
    d = make_modular_data(p=p, train_fraction=0.4, seed=0)
    assert d.x_train.dtype == torch.float32 and d.x_train.shape == (d.n_train, 2 * p)
    assert d.n_train == round(0.4 * p * p) and d.n_train + d.n_test == p * p
    assert torch.all(d.x_train.sum(1) == 2)
    a = d.x_train[:, :p].argmax(1)
    b = d.x_train[:, p:].argmax(1)
    assert torch.equal(torch.stack([a, b], 1), d.pairs_train)
    assert torch.equal(d.y_train, (a + b) % p)
    assert d.y_train.dtype == torch.long


def test_index_encoding_tokens():
    p = 13
    d = make_modular_data(p=p, train_fraction=0.3, seed=1, encoding="index")
    assert d.x_test.dtype == torch.long and d.x_test.shape == (d.n_test, 3)
    assert torch.equal(d.x_test[:, :2], d.pairs_test)
    assert torch.all(d.x_test[:, 2] == p)  # "=" token
    assert int(d.x_test.max()) == p and int(d.x_test.min()) == 0


def test_split_is_deterministic_and_seeded_and_encoding_independent():
    a = make_modular_data(p=17, seed=5)
    b = make_modular_data(p=17, seed=5, encoding="index")
    c = make_modular_data(p=17, seed=6)
    assert torch.equal(a.pairs_train, b.pairs_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.pairs_train, c.pairs_train)
    assert torch.equal(a.x_train, make_modular_data(p=17, seed=5).x_train)


def test_division_needs_a_prime():
    with pytest.raises(ValueError, match="^p: .*prime"):
        make_modular_data(p=12, op="/")
    make_modular_data(p=12, op="+")  # any modulus is fine for the other ops


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"train_fraction": 0.0}, "train_fraction"),
        ({"train_fraction": 1.0}, "train_fraction"),
        ({"train_fraction": 1.5}, "train_fraction"),
        ({"p": 1}, "p"),
        ({"op": "%"}, "op"),
        ({"encoding": "bits"}, "encoding"),
        ({"p": 3, "train_fraction": 0.01}, "train_fraction"),  # empty train split
    ],
)
def test_bad_options_name_the_field(kwargs, field):
    with pytest.raises(ModularConfigError) as err:
        make_modular_data(**kwargs)
    assert isinstance(err.value, ValueError)
    assert err.value.field == field and str(err.value).startswith(f"{field}: ")
