"""`vlmwatch check-model`: what a model folder holds and can take, or exactly what is missing."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from daemon.cli import main

FAKE = Path(__file__).parent / "fake_axengine"


@pytest.fixture
def axengine(monkeypatch):
    """The fake vendor runtime: it declares the InternVL3-2B 2048 video build (17 groups of 128, KV 2559)."""
    monkeypatch.syspath_prepend(str(FAKE))
    monkeypatch.delitem(sys.modules, "axengine", raising=False)
    import axengine

    axengine.sessions.clear()
    yield axengine
    sys.modules.pop("axengine", None)


def board_layout(root: Path, tokenizer: Path, layers: int = 28) -> Path:
    """The AXERA-TECH/InternVL3-2B folder names, with sparse placeholder graphs and a sparse full-size bf16 table."""
    from boards import placeholder

    llm = root / "internvl3_2b_axmodel"
    llm.mkdir(parents=True)
    for i in range(layers):
        placeholder(llm / f"qwen2_p128_l{i}_together.axmodel")
    placeholder(llm / "qwen2_post.axmodel")
    placeholder(llm / "model.embed_tokens.weight.bfloat16.bin", 151674 * 1536 * 2)
    (root / "vit_axmodel").mkdir()
    placeholder(root / "vit_axmodel" / "internvl3_2b_vit_slim.axmodel")
    shutil.copytree(tokenizer, root / "internvl3_2b_tokenizer")
    return root


def test_onnx_bundle_limits_and_fit(tiny_model, capsys):
    assert main(["check-model", str(tiny_model), "--system", "You watch a camera."]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "layout    ONNX bundle (vlmwatch-tiny-internvl-numpy-seed0: manifest.json, 2 layer graphs)"
    assert out[3] == "graphs    read from manifest.json: decode + 16 prefill groups of 16 tokens"
    assert out[4].startswith("limits    largest prompt 256 tokens, KV cache 320 tokens")
    assert out[5] == "embedding 1012 tokens x 64 (float32)"
    assert out[7].startswith("frames    16 image tokens per frame; 8 frames with system text 'You watch a camera.'")
    assert out[-1].startswith("OK: ") and out[-1].endswith(" tokens left for each question")


def test_a_window_that_does_not_fit_exits_1(tiny_model, capsys):
    """InternVL's long default system text in byte-level tokens of the tiny vocabulary: 8 frames overflow 256."""
    assert main(["check-model", str(tiny_model)]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith(
        "DOES NOT FIT: 8 frames leave no room for a question")
    assert main(["check-model", str(tiny_model), "--frames", "2"]) == 0


def test_config_gives_the_folder_the_system_text_and_frames(tiny_model, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  dir: {tiny_model}\n  system: Hi.\ncameras:\n  - name: yard\n"
                      f"    source: {tmp_path}\n    frames: 4\n")
    assert main(["check-model", "-c", str(config)]) == 0
    assert "4 frames with system text 'Hi.'" in capsys.readouterr().out


def test_board_layout_read_with_axengine(axengine, tiny_model, tmp_path, capsys):
    root = board_layout(tmp_path / "InternVL3-2B", tiny_model / "tokenizer")
    assert main(["check-model", str(root), "--system", "You watch a camera."]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "layout    board (internvl3_2b_axmodel/, vit_axmodel/, internvl3_2b_tokenizer/)"
    assert out[3] == "graphs    read from axengine (first layer graph): decode + 17 prefill groups of 128 tokens"
    assert out[4] == ("limits    largest prompt 2176 tokens, KV cache 2559 tokens (prompt and answer),"
                      " hidden size 1536")
    assert out[5] == "embedding 151674 tokens x 1536 (bfloat16)"
    assert "256 image tokens per frame; 8 frames" in out[7]
    assert out[-1].startswith("OK: ")
    assert sorted(s.name for s in axengine.sessions) == ["internvl3_2b_vit_slim.axmodel",
                                                         "qwen2_p128_l0_together.axmodel"]  # not all 30


def test_board_layout_without_axengine_says_what_it_could_not_check(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "axengine", None)
    root = board_layout(tmp_path / "InternVL3-2B", tiny_model / "tokenizer")
    assert main(["check-model", str(root)]) == 0
    out = capsys.readouterr().out
    assert "graphs    not read: the axengine backend needs the vendor NPU runtime" in out
    assert out.splitlines()[-1].startswith("NOT CHECKED: prefill length, KV capacity and image tokens")


def test_missing_files_are_listed_exactly(tiny_model, tmp_path, capsys):
    """The layer count is the model's (InternVL3-2B: 28), not the files': l27 missing is missing."""
    root = board_layout(tmp_path / "InternVL3-2B", tiny_model / "tokenizer", layers=27)
    (root / "vit_axmodel" / "internvl3_2b_vit_slim.axmodel").unlink()
    assert main(["check-model", str(root)]) == 2
    err = capsys.readouterr().err.splitlines()
    llm = root / "internvl3_2b_axmodel"
    assert err[:3] == [
        "vlmwatch: error: model files are missing or unreadable (28 layer graphs expected: InternVL3-2B's; no"
        " config.json states a count):",
        f"  {llm}/qwen2_p128_l27_together.axmodel",
        f"  {root}/vit_axmodel/internvl3_2b_vit_slim.axmodel"]
    assert err[3:6] == [
        "Found:",
        f"  {llm}: layer graphs l0-26 (27), model.embed_tokens.weight.bfloat16.bin (0.47 GB), qwen2_post.axmodel"
        " (50.3 MB)",
        f"  {root}/vit_axmodel: empty"]
    (llm / "qwen2_p128_l5_together.axmodel").unlink()
    assert main(["check-model", str(root)]) == 2
    assert f"{llm}: layer graphs l0-4, 6-26 (26)," in capsys.readouterr().err


def test_the_layer_count_comes_from_the_models_config(tiny_model, tmp_path, capsys):
    """InternVL's config.json in the tokenizer folder says 28; l26 and l27 of a partial download are missing."""
    root = board_layout(tmp_path / "InternVL3-2B", tiny_model / "tokenizer", layers=26)
    config = root / "internvl3_2b_tokenizer" / "config.json"
    config.write_text(json.dumps({"llm_config": {"num_hidden_layers": 28}}))
    assert main(["check-model", str(root)]) == 2
    err = capsys.readouterr().err.splitlines()
    llm = root / "internvl3_2b_axmodel"
    assert err[:3] == [f"vlmwatch: error: model files are missing or unreadable (28 layer graphs expected:"
                       f" llm_config.num_hidden_layers in {config}):",
                       f"  {llm}/qwen2_p128_l26_together.axmodel", f"  {llm}/qwen2_p128_l27_together.axmodel"]


@pytest.mark.parametrize("content, problem", [
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 51234567\n",
     "a git-lfs pointer (133 bytes), not the file: the download fetched the pointers only; run `git lfs pull` in"
     " that clone, or download with `hf download`"),
    (b"ok", "2 bytes, too small for a compiled axmodel file (at least 64 kB); the download is incomplete: fetch it"
            " again"),
])
def test_pointer_and_placeholder_graphs_are_named(tiny_model, tmp_path, capsys, content, problem):
    root = board_layout(tmp_path / "InternVL3-2B", tiny_model / "tokenizer")
    layer = root / "internvl3_2b_axmodel" / "qwen2_p128_l3_together.axmodel"
    layer.write_bytes(content)
    assert main(["check-model", str(root)]) == 2
    assert capsys.readouterr().err.splitlines()[1] == f"  {layer}: {problem}"


def test_a_cut_off_layer_graph_is_named(tiny_model, tmp_path, capsys):
    from boards import GRAPH_BYTES, placeholder

    root = board_layout(tmp_path / "InternVL3-2B", tiny_model / "tokenizer")
    layer = root / "internvl3_2b_axmodel" / "qwen2_p128_l9_together.axmodel"
    placeholder(layer, 10 << 20)
    assert main(["check-model", str(root)]) == 2
    assert capsys.readouterr().err.splitlines()[1] == (
        f"  {layer}: {10 << 20:,} bytes, under half the other layer graphs' {GRAPH_BYTES:,}: a cut-off download;"
        " fetch it again")


def test_the_board_layout_expects_its_bfloat16_table(tiny_model, tmp_path, capsys):
    root = board_layout(tmp_path / "InternVL3-2B", tiny_model / "tokenizer")
    (root / "internvl3_2b_axmodel" / "model.embed_tokens.weight.bfloat16.bin").unlink()
    assert main(["check-model", str(root)]) == 2
    assert capsys.readouterr().err.splitlines()[1] == (
        f"  {root}/internvl3_2b_axmodel/model.embed_tokens.weight.bfloat16.bin")


def test_broken_onnx_bundles(tiny_model, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_model, bundle, ignore=shutil.ignore_patterns("hf"))
    (bundle / "layer_01.onnx").unlink()
    assert main(["check-model", str(bundle)]) == 2
    assert f"model files are missing or unreadable:\n  {bundle}/layer_01.onnx" in capsys.readouterr().err

    shutil.copy(tiny_model / "layer_01.onnx", bundle / "layer_01.onnx")
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "layer_groups": "nope"}))
    assert main(["check-model", str(bundle)]) == 2
    assert "ONNX manifest declares bad shape groups" in capsys.readouterr().err

    (bundle / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(bundle / "tokenizer")
    assert main(["check-model", str(bundle)]) == 2
    assert f"{bundle}/tokenizer/tokenizer.json" in capsys.readouterr().err


def test_no_folder_and_no_config_is_a_usage_error(capsys):
    assert main(["check-model"]) == 2
    assert "check-model needs a model folder (DIR) or a config (-c config.yaml)" in capsys.readouterr().err
