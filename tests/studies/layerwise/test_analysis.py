"""Claim checks of the layerwise study on synthetic series where each claim holds and fails."""

from __future__ import annotations

import numpy as np

from genlab.studies.layerwise.analysis import (
    analyze,
    e2e_bottleneck_shape,
    e2e_keeps_more_input_information,
    e2e_more_accurate,
    early_layers,
    layerwise_layers_move_alike,
    planes,
)


def test_early_layers_are_the_first_half_rounded_up():
    assert [early_layers(n) for n in (1, 4, 5, 7)] == [1, 2, 3, 4]


def test_input_information_claim_needs_every_seed():
    e2e = np.array([[30.0, 28.0, 20.0, 10.0], [31.0, 27.0, 21.0, 9.0]])
    holds = np.array([[25.0, 24.0, 20.0, 18.0], [26.0, 25.0, 21.0, 19.0]])
    assert e2e_keeps_more_input_information(e2e, holds)["held"]
    one_seed_fails = holds.copy()
    one_seed_fails[1, :2] = 40.0
    assert not e2e_keeps_more_input_information(e2e, one_seed_fails)["held"]
    # only the early blocks count: late layer-wise blocks above E2E do not matter
    late = holds.copy()
    late[:, 2:] = 99.0
    assert e2e_keeps_more_input_information(e2e, late)["held"]


def test_move_alike_compares_the_spread_over_blocks():
    e2e = np.array([[30.0, 20.0, 10.0, 5.0]])
    alike = np.array([[20.0, 19.0, 18.0, 17.0]])
    differentiated = np.array([[40.0, 20.0, 5.0, 1.0]])
    assert layerwise_layers_move_alike(e2e, alike)["held"]
    assert not layerwise_layers_move_alike(e2e, differentiated)["held"]


def test_bottleneck_shape_needs_less_input_and_the_most_label_information_last():
    x = np.array([[30.0, 35.0, 20.0]])
    assert e2e_bottleneck_shape(x, np.array([[5.0, 7.0, 8.9]]))["held"]
    assert e2e_bottleneck_shape(x, np.array([[5.0, 9.0, 8.9]]))["held"]  # within 2%
    assert not e2e_bottleneck_shape(x, np.array([[5.0, 9.5, 8.9]]))["held"]  # label info lost
    assert not e2e_bottleneck_shape(np.array([[20.0, 25.0, 30.0]]), np.array([[5.0, 7.0, 9.0]]))[
        "held"
    ]  # input information grows to the end: no compression


def test_accuracy_claim_is_paired_by_seed():
    assert e2e_more_accurate([0.99, 0.98], [0.97, 0.975])["held"]
    assert not e2e_more_accurate([0.99, 0.97], [0.97, 0.975])["held"]


def _records(mode, seed, x_by_layer, y_by_layer, acc):
    out = []
    for step in (0, 10):
        for layer, (x, y) in enumerate(zip(x_by_layer, y_by_layer)):
            vals = {m: 0.0 for m in ("cka_lin_x", "cka_lin_y", "cka_rbf_x", "cka_rbf_y")}
            scale = 0.5 if step == 0 else 1.0
            out.append({"step": step, "split": "plane", "mode": mode, "seed": seed, "layer": layer,
                        "nhsic_x": scale * x, "nhsic_y": scale * y, **vals})  # fmt: skip
        out.append({"step": step, "split": "test", "mode": mode, "seed": seed, "acc": acc})
    return out


def test_analyze_reads_the_final_step_and_drops_the_logits_layer():
    # layer 3 is the logits: huge values there must not change any verdict
    recs = _records("e2e", 0, [30, 35, 20, 500], [5, 7, 8.9, 500], 0.99)
    recs += _records("layerwise", 0, [25, 24, 23, 0], [5, 6, 7, 0], 0.98)
    a = analyze(recs)
    assert a["final"]["e2e"]["nhsic_x"].tolist() == [[30, 35, 20, 500]]
    checks = a["claims"]
    assert checks["input_information"]["held"]  # (30 + 35) / 2 > (25 + 24) / 2
    assert checks["bottleneck"]["held"] and checks["accuracy"]["held"]
    assert checks["move_alike"]["held"]  # std 0.82 (layer-wise) < 6.2 (E2E)
    assert a["claims_by_mode"] == {"layerwise": checks}  # every layer-wise mode, same checks


def test_a_step_measured_twice_keeps_its_later_record():
    recs = _records("layerwise-sequential", 0, [1, 2], [1, 2], 0.5)
    recs += [dict(r, nhsic_x=r["nhsic_x"] + 100) for r in recs
             if r["step"] == 10 and r["split"] == "plane"]  # fmt: skip
    series = planes(recs)["layerwise-sequential"][0][0]
    assert series["step"] == [0, 10] and series["nhsic_x"] == [0.5, 101.0]
