"""`vlmwatch bench`: runs on the ONNX tiny model (measured here) and on the fake board (modelled AX650N figures)."""

import json

import pytest

from boards import board_layout

from daemon.cli import main
from daemon.engine.costs import REFERENCE_TOK_S


def rows(capsys, argv) -> dict:
    assert main(["bench", *argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    return report, {r["name"]: r for r in report["rows"]}


def test_bench_times_every_graph_of_the_onnx_tiny_model_and_prints_its_table(tiny_model, capsys):
    assert main(["bench", "--model", str(tiny_model), "--reps", "1", "--steps", "2"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[1].startswith("  NPU alone: 2.686 ms x 28 layers + 11.455 ms post = 86.663 ms/token (used);"
                               " the README's table says 86.969 ms/token")
    assert ("model vlmwatch-tiny-internvl-numpy-seed0 on onnxruntime; resident KV: no (ONNX Runtime takes every input"
            " with each call)") in lines
    assert [line.split(" (")[0] for line in lines if line.startswith("prefill g")] == [
        f"prefill g{k}" for k in range(1, 17)]
    assert "bench: layer group 16" in err  # progress on stderr

    report, by_name = rows(capsys, ["--model", str(tiny_model), "--reps", "1", "--steps", "2"])
    decode = by_name["decode end to end (2 steps)"]
    assert decode["copied"] > 0 and decode["resident"] is None and decode["published"] > 11.5
    assert all(r["copied"] > 0 for r in report["rows"])


def test_bench_on_the_fake_board_prints_modelled_board_figures(axengine, tiny_model, tmp_path, capsys):
    board = board_layout(tmp_path / "board", tiny_model / "tokenizer")
    report, by_name = rows(capsys, ["--model", str(board), "--reps", "1", "--steps", "2"])
    assert report["resident"] == "yes"
    decode = by_name["decode end to end (2 steps)"]
    assert round(decode["model_copied"], 2) == round(REFERENCE_TOK_S, 2)  # the calibration, reproduced
    assert 11.4 < decode["model_resident"] < 1000 / 86.663
    window = by_name["window: 8 frames, 17 chunks, 64 tokens"]
    assert window["model_resident"] < window["model_copied"]
    assert window["published"] == pytest.approx((8 * 364.870 + 28 * 496.176 + 11.455) / 1000 + 64 * 0.086663)
    layer = by_name["decode (per layer)"]
    assert layer["published"] == 2.686 and layer["model_resident"] < layer["model_copied"]
