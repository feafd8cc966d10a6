"""daemon/engine/bundle.py load_tokenizer: tokenizer.json through the `tokenizers` library behaves as transformers.

The folder is built like InternVL3-2B's (Qwen2's NFC normaliser, its split
regex before byte-level BPE, the Qwen2 / InternVL special tokens,
tokenizer_config.json naming Qwen2Tokenizer with eos <|im_end|> and no unk),
and every call the engine makes must give what transformers' AutoTokenizer
gives on the same folder, including the Chinese default system text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.engine.bundle import JsonTokenizer, load_tokenizer
from daemon.engine.export.tiny import CORPUS, SPECIAL_TOKENS
from daemon.engine.prompt import DEFAULT_SYSTEM, PromptBuilder
from daemon.errors import ModelError

ROOT = Path(__file__).resolve().parent.parent
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
TEXTS = [
    "Describe what happens in the video.",
    "Is the door open? Answer yes or no.<|im_end|>\n<|im_start|>assistant\n",
    "Café  naïve  e\u0301 ﬁne 12345 don't  I'm   x\r\n\ttabs",
    "😀 emoji and 中文，标点。",
]


@pytest.fixture(scope="module")
def qwen_style(tmp_path_factory) -> Path:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(CORPUS.split("\n\n") + [DEFAULT_SYSTEM], trainer=trainer)
    bpe.add_special_tokens(list(SPECIAL_TOKENS))
    folder = tmp_path_factory.mktemp("qwen_style")
    bpe.save(str(folder / "tokenizer.json"))
    added = {str(bpe.token_to_id(t)): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                                        "normalized": False, "single_word": False} for t in SPECIAL_TOKENS}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "unk_token": None, "pad_token": "<|endoftext|>",
        "eos_token": {"__type": "AddedToken", "content": "<|im_end|>", "lstrip": False, "rstrip": False,
                      "normalized": False, "single_word": False, "special": True}, "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": added}))
    return folder


@pytest.fixture(scope="module")
def vocab_and_merges(qwen_style, tmp_path_factory) -> Path:
    """The same tokenizer as InternVL3-2B ships it: vocab.json, merges.txt, added tokens, no tokenizer.json."""
    model = json.loads((qwen_style / "tokenizer.json").read_text())["model"]
    folder = tmp_path_factory.mktemp("vocab_and_merges")
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = json.loads((qwen_style / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    added = {d["content"]: int(i) for i, d in config["added_tokens_decoder"].items()}
    (folder / "added_tokens.json").write_text(json.dumps(added))
    return folder


@pytest.mark.torch
@pytest.mark.parametrize("folder", ["qwen_style", "vocab_and_merges"])
def test_same_ids_text_and_special_tokens_as_transformers(folder, request):
    from transformers import AutoTokenizer

    folder = request.getfixturevalue(folder)
    ours, ref = load_tokenizer(folder), AutoTokenizer.from_pretrained(str(folder))
    assert isinstance(ours, JsonTokenizer)
    assert (ours.eos_token_id, ours.unk_token_id) == (ref.eos_token_id, ref.unk_token_id) == (
        ref.convert_tokens_to_ids("<|im_end|>"), None)
    for token in (*SPECIAL_TOKENS, "not-a-token"):
        assert ours.convert_tokens_to_ids(token) == ref.convert_tokens_to_ids(token), token
    for text in TEXTS:
        ids = ours.encode(text, add_special_tokens=False)
        assert ids == ref.encode(text, add_special_tokens=False), text
        assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True), text
    mine, theirs = PromptBuilder(ours, 4), PromptBuilder(ref, 4)  # the engine's prompts, default system text
    assert mine.prefix(8) + mine.suffix("What is there?") == theirs.prefix(8) + theirs.suffix("What is there?")
    assert mine.stop_ids == theirs.stop_ids


@pytest.mark.parametrize("folder", ["qwen_style", "vocab_and_merges"])
def test_loading_a_tokenizer_imports_neither_torch_nor_transformers(folder, request):
    folder = request.getfixturevalue(folder)
    script = ("import sys\nfrom daemon.engine.bundle import load_tokenizer\n"
              f"t = load_tokenizer({str(folder)!r})\nprint(t.encode('hello', add_special_tokens=False),"
              " sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("[]")


def test_added_tokens_that_do_not_follow_the_vocabulary_are_refused(vocab_and_merges, tmp_path):
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_text((vocab_and_merges / name).read_text())
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<img>": 999999}))
    with pytest.raises(ModelError, match="added token '<img>' should have id 999999 but gets"):
        load_tokenizer(tmp_path)


def test_a_folder_without_tokenizer_files_says_what_to_copy(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # not installed
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ModelError, match="holds neither tokenizer.json nor vocab.json and merges.txt"):
        load_tokenizer(tmp_path)


def test_a_broken_tokenizer_json_is_a_model_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelError, match=f"cannot load the tokenizer from {tmp_path}"):
        load_tokenizer(tmp_path)
