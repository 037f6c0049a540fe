from types import SimpleNamespace

import torch

from genlab.config import DataConfig
from genlab.data import load_data
from genlab.losses import cross_entropy
from genlab.models import build_model
from genlab.studies.classify import ClassificationMeter


class Recorder:
    def __init__(self):
        self.records = []

    def log(self, step, split, **values):
        self.records.append((step, split, values))


def test_meter_scores_the_flipped_examples_against_both_labels():
    ds = load_data(DataConfig(name="digits", train_size=300, label_noise=0.2, noise_kind="flip"))
    torch.manual_seed(0)
    model = build_model("mlp", ds.input_shape, ds.num_classes, depth=1, width=16)
    run = Recorder()
    loop = SimpleNamespace(model=model, step=7)
    ClassificationMeter(run, ds, cross_entropy)(loop)
    logged = {split: values for _, split, values in run.records}
    assert {s for _, s, _ in run.records} == {"train", "test", "noisy"}
    idx = ds.noisy_idx
    with torch.no_grad():
        pred = model(ds.x_train[idx]).argmax(1)
    # memorized: predicts the flipped (observed) label; clean: predicts the true label
    k = len(idx)
    assert logged["noisy"]["acc"] == int((pred == ds.y_train[idx]).sum()) / k
    assert logged["noisy"]["clean_acc"] == int((pred == ds.clean_y_train[idx]).sum()) / k
    with torch.no_grad():
        correct = int((model(ds.x_test).argmax(1) == ds.y_test).sum())
    assert logged["test"]["acc"] == correct / ds.n_test
    assert loop.last_metrics == {
        "train_acc": logged["train"]["acc"],
        "test_acc": logged["test"]["acc"],
    }
