"""Locating model files in every layout, and the errors a user sees when they are wrong."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from daemon.engine.bundle import locate, open_model
from daemon.errors import ModelError


def test_onnx_bundle_is_found_from_its_manifest(tiny_model):
    files = locate(tiny_model)
    assert files.kind == "onnx"
    assert files.layers and all(p.is_file() for p in files.layers)


def test_missing_directory(tmp_path):
    with pytest.raises(ModelError) as err:
        locate(tmp_path / "nope")
    assert str(err.value) == f"model directory {tmp_path / 'nope'} does not exist or is not a directory"


def test_empty_directory_lists_the_layouts(tmp_path):
    with pytest.raises(ModelError) as err:
        locate(tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"no model found in {tmp_path}: expected {tmp_path / 'manifest.json'}")
    assert "(board layout)" in msg and "(reference demo layout)" in msg
    assert msg.endswith(f"(reference demo layout); found {tmp_path}: empty")


def test_a_folder_in_no_layout_says_what_it_holds(tmp_path):
    """A download one level too deep or shallow: what is there, beside what was expected."""
    (tmp_path / "InternVL3-2B").mkdir()
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(ModelError) as err:
        locate(tmp_path)
    assert str(err.value).endswith(f"(reference demo layout); found {tmp_path}: InternVL3-2B/, README.md (1 byte)")


def test_every_missing_file_is_listed(tiny_model, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_model, bundle, ignore=shutil.ignore_patterns("hf"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    gone = [bundle / manifest["files"]["layers"][-1], bundle / manifest["files"]["post"]]
    for p in gone:
        p.unlink()
    with pytest.raises(ModelError) as err:
        locate(bundle)
    assert str(err.value) == (
        "model files are missing or unreadable:\n  " + "\n  ".join(str(p) for p in gone)
        + f"\nFound:\n  {bundle}: embeddings.npy (0.3 MB), layer_00.onnx (0.2 MB), manifest.json"
          f" ({(bundle / 'manifest.json').stat().st_size} bytes), tokenizer/, vit.onnx (0.2 MB)"
        + f"\n  {bundle}/tokenizer: " + ", ".join(f"{p.name} ({p.stat().st_size} bytes)"
                                                  for p in sorted((bundle / "tokenizer").iterdir()))
        + "\nCheck the model folder (model.dir, model.tokenizer, model.vit; or --model, --tokenizer, --vit),"
          " or copy the complete model folder.")


def test_board_layout_lists_missing_vit_tokenizer_and_layers(tmp_path):
    from boards import placeholder

    llm = tmp_path / "internvl3_2b_axmodel"
    llm.mkdir()
    placeholder(llm / "qwen2_p128_l0_together.axmodel")
    placeholder(llm / "qwen2_p128_l2_together.axmodel")  # l1 missing, and l3..l27 of InternVL3-2B's 28
    with pytest.raises(ModelError) as err:
        locate(tmp_path)
    lines = str(err.value).splitlines()
    assert lines[0] == ("model files are missing or unreadable (28 layer graphs expected: InternVL3-2B's; no"
                        " config.json states a count):")
    found = lines.index("Found:")
    assert lines[1:found] == [f"  {p}" for p in [
        llm / "qwen2_p128_l1_together.axmodel", *(llm / f"qwen2_p128_l{i}_together.axmodel" for i in range(3, 28)),
        llm / "qwen2_post.axmodel", llm / "model.embed_tokens.weight.bfloat16.bin",
        tmp_path / "vit_axmodel/internvl3_2b_vit_slim.axmodel", tmp_path / "internvl3_2b_tokenizer/tokenizer.json"]]
    assert lines[found + 1:-1] == [f"  {llm}: layer graphs l0, 2 (2)", f"  {tmp_path}/vit_axmodel: no such folder",
                                   f"  {tmp_path}/internvl3_2b_tokenizer: no such folder"]


def test_demo_layout_needs_a_tokenizer(tmp_path):
    (tmp_path / "qwen2_p128_l0_together.axmodel").touch()
    with pytest.raises(ModelError) as err:
        locate(tmp_path)
    assert str(err.value) == (
        f"{tmp_path} is in the reference demo layout, which has no tokenizer:"
        " give the InternVL3-2B tokenizer folder (model.tokenizer, or --tokenizer DIR)")


def test_unknown_backend(tiny_model):
    with pytest.raises(ModelError) as err:
        open_model(locate(tiny_model), backend="tensorrt")
    assert str(err.value) == "--backend: unknown backend 'tensorrt': choose one of auto, axengine, onnxruntime"


def test_backend_must_fit_the_files(tiny_model):
    with pytest.raises(ModelError) as err:
        open_model(locate(tiny_model), backend="axengine")
    assert str(err.value) == (f"--backend: the axengine backend runs .axmodel files but {tiny_model} holds an"
                              " ONNX bundle: set --backend to onnxruntime, or to auto (the default) to follow"
                              " the model folder")


def test_onnx_session_rejects_a_wrong_shape_like_the_npu(tiny_model):
    from daemon.errors import ShapeError

    model = open_model(locate(tiny_model))
    layer = model.layers[0]
    feeds = {p.name: np.zeros(p.shape, p.dtype) for p in layer.inputs(2)}
    feeds["indices"] = feeds["indices"].astype(np.int64)
    with pytest.raises(ShapeError) as err:
        layer.run(feeds, 2)
    shape = list(layer.inputs(2)[2].shape)
    assert str(err.value) == (f"layer_00.onnx (shape group 2): model inputs(indices) expect shape {shape}"
                              f" and dtype uint32, however gets input with shape {shape} and dtype int64")


RSS_SCRIPT = textwrap.dedent("""
    import sys, psutil
    sys.path.insert(0, sys.argv[2])
    import axengine
    from daemon.engine.bundle import load_tokenizer, locate, open_model
    from daemon.engine.engine import Engine
    load_tokenizer(sys.argv[3])  # library imports are not what we measure
    proc = psutil.Process()
    before = proc.memory_info().rss
    files = locate(sys.argv[1], tokenizer=sys.argv[3])
    model = open_model(files)
    # copied: resident KV would zero the fake's NPU buffers, which live in this process (on the
    # board they are the runtime's CMM memory, allocated by pyaxengine for either path)
    engine = Engine(model, kv="copied")
    engine.embed([1, 2, 3, 151673])
    print((proc.memory_info().rss - before) / 2**20)
""")


def test_full_size_embedding_table_is_memory_mapped(tmp_path, tiny_model):
    """A 151674 x 1536 float32 table (0.93 GB) must not be read into memory."""
    from boards import placeholder

    vocab, hidden = 151674, 1536
    demo = tmp_path / "demo"
    demo.mkdir()
    for i in range(28):
        placeholder(demo / f"qwen2_p128_l{i}_together.axmodel")
    placeholder(demo / "qwen2_post.axmodel")
    table = np.lib.format.open_memmap(demo / "model.embed_tokens.weight.npy", "w+", np.float32, (vocab, hidden))
    table[:: vocab // 7] = 1.0  # real data in a few rows; the rest stays sparse
    table.flush()
    del table
    fake = Path(__file__).parent / "fake_axengine"
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(demo), str(fake), str(tiny_model / "tokenizer")],
                         capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=300)
    assert out.returncode == 0, out.stderr
    grown_mb = float(out.stdout.strip().splitlines()[-1])
    # The table alone is 889 MiB; 28 KV caches of 2559 x 256 bf16 add 70 MiB by design.
    assert grown_mb < 100, f"RSS grew by {grown_mb:.0f} MiB"


def test_the_board_load_time_is_promised_only_for_axengine(tiny_model, caplog):
    with caplog.at_level("INFO", logger="daemon.engine.bundle"):
        open_model(locate(tiny_model))
    loading = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loading ")]
    assert loading == ["loading 4 graphs with onnxruntime"]


TEXTS = [
    "Describe what happens in the video.",
    "A man in a blue jacket leaves a parcel on the step; the cat crosses the lawn!",
    "  leading spaces,\ttabs\nand\n\nblank lines  ",
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室开发的多模态大语言模型。",
    "café — naïve 🐼 done. Ünïcödé and numbers 1234567890 3.14",
    "<|im_start|>user\nFrame1: <img><IMG_CONTEXT><IMG_CONTEXT></img>\nIs it day?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|> between <quad> specials </quad> and <ref>text</ref>",
    "",
]


@pytest.mark.torch
def test_the_tokenizer_matches_transformers_without_importing_it(tiny_model):
    from transformers import AutoTokenizer

    from daemon.engine.bundle import load_tokenizer
    from daemon.engine.bundle import JsonTokenizer

    ours, theirs = load_tokenizer(tiny_model / "tokenizer"), AutoTokenizer.from_pretrained(tiny_model / "tokenizer")
    assert isinstance(ours, JsonTokenizer)
    assert (ours.eos_token_id, ours.unk_token_id) == (theirs.eos_token_id, theirs.unk_token_id)
    for token in ["<img>", "</img>", "<IMG_CONTEXT>", "<|im_end|>", "<|im_start|>", "the", "no-such-token"]:
        assert ours.convert_tokens_to_ids(token) == theirs.convert_tokens_to_ids(token), token
    for text in TEXTS:
        ids = ours.encode(text, add_special_tokens=False)
        assert ids == theirs.encode(text, add_special_tokens=False), text
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip), text
    mixed = list(range(0, len(theirs), 37))  # any ids, specials among them
    assert ours.decode(mixed, skip_special_tokens=True) == theirs.decode(mixed, skip_special_tokens=True)


def test_loading_the_tokenizer_imports_neither_transformers_nor_torch(tiny_model):
    script = ("import sys; from daemon.engine.bundle import load_tokenizer; t = load_tokenizer(sys.argv[1]);"
              " assert t.encode('hello', add_special_tokens=False);"
              " print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script, str(tiny_model / "tokenizer")], capture_output=True,
                         text=True, cwd=Path(__file__).parent.parent, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
