"""experiments.two_layer_net: lesson 001's net in every gradient mode."""

import json

import numpy as np
import pytest
from absl.testing import flagsaver

from experiments import two_layer_net

MODES = ("manual", "fused", "ops", "autodiff")


@pytest.fixture(scope="module")
def runs():
    return {g: two_layer_net.run(grad=g, steps=200) for g in MODES}


def test_every_mode_same_trajectory(runs):
    want = np.array(runs["autodiff"]["losses"])
    for g in MODES:
        np.testing.assert_allclose(runs[g]["losses"], want, rtol=1e-4, err_msg=g)


def test_loss_falls_like_the_lesson(runs):
    losses = runs["manual"]["losses"]
    assert losses[0] > 1e4 and losses[199] < 50  # the lesson: ~500 at 99, ~5 at 199


def test_adam_with_bias_trains():
    result = two_layer_net.run(optimizer="adam", bias=True, steps=100)
    assert result["settings"]["learning_rate"] == 1e-4
    assert result["settings"]["init"] == "torch_default"
    assert result["losses"][-1] < result["losses"][0] / 5


def test_printed_steps():
    assert two_layer_net.printed_steps(500, 100) == [99, 199, 299, 399, 499]
    assert two_layer_net.printed_steps(150, 100) == [99, 149]
    assert two_layer_net.printed_steps(3, 100) == [2]


def test_main_prints_lesson_lines_and_writes_results(tmp_path, capsys):
    with flagsaver.flagsaver(steps=200, grad="fused", output_dir=str(tmp_path)):
        two_layer_net.main([])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:2]] == ["99", "199"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"]["grad"] == "fused" and len(results["losses"]) == 200
    assert float(lines[1].split()[1]) == pytest.approx(results["losses"][199])
