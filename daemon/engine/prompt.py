"""The official InternVL video prompt, split into a shared prefix and a suffix.

    <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n
    Frame1: <img><IMG_CONTEXT> x T</img>\n ... FrameN: ...\n        <- shared prefix
    {question}<|im_end|>\n<|im_start|>assistant\n                   <- per prompt

Prefix and suffix are always tokenised separately, so a prompt's ids are the
same whether its prefix was shared or computed from scratch.
"""

from __future__ import annotations

from daemon.errors import ModelError

# InternVL's own system message (full-width punctuation, as upstream).
DEFAULT_SYSTEM = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"


class PromptBuilder:
    """Token ids for prompts; special tokens are looked up, never hard-coded."""

    def __init__(self, tokenizer, image_tokens: int, system: str = DEFAULT_SYSTEM):
        self.tok, self.image_tokens, self.system = tokenizer, image_tokens, system
        self.img, self.img_end, self.context, self.im_end = (
            self.special(t) for t in ("<img>", "</img>", "<IMG_CONTEXT>", "<|im_end|>"))
        self.stop_ids = frozenset(i for i in (self.im_end, tokenizer.eos_token_id) if i is not None)

    def special(self, token: str) -> int:
        tid = self.tok.convert_tokens_to_ids(token)
        if tid is None or tid == self.tok.unk_token_id:
            raise ModelError(f"the tokenizer has no {token} token; it is not an InternVL tokenizer")
        return int(tid)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def prefix(self, n_frames: int) -> list[int]:
        ids = self.encode(f"<|im_start|>system\n{self.system}<|im_end|>\n<|im_start|>user\n")
        for i in range(1, n_frames + 1):
            ids += self.encode(f"Frame{i}: ") + [self.img] + [self.context] * self.image_tokens
            ids += [self.img_end] + self.encode("\n")
        return ids

    def suffix(self, question: str) -> list[int]:
        return self.encode(f"{question}<|im_end|>\n<|im_start|>assistant\n")

    def decode(self, ids) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)
