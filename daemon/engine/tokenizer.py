"""The tokenizer through the `tokenizers` library alone.

transformers would import torch (about 350 MiB resident) just to tokenise.
`FastTokenizer` reads the folder's tokenizer.json with `tokenizers` and its
tokenizer_config.json / special_tokens_map.json for the special tokens, and
offers the part of transformers' tokenizer API that the engine uses, with the
same results (tests/test_bundle.py compares them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from daemon.errors import ModelError

# transformers' clean_up_tokenization (WordPiece-era), which it skips for BPE models.
_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


class FastTokenizer:
    """convert_tokens_to_ids, encode, decode, eos_token_id, unk_token_id, as transformers' fast tokenizer."""

    def __init__(self, tokenizer, eos_token: str | None = None, unk_token: str | None = None,
                 clean_up_spaces: bool = False):
        self._tok = tokenizer
        self.eos_token, self.unk_token = eos_token, unk_token
        # transformers applies the clean-up only to non-BPE models ("destructive for BPE")
        self._clean_up = clean_up_spaces and type(tokenizer.model).__name__ != "BPE"

    @classmethod
    def from_dir(cls, path: Path) -> "FastTokenizer":
        from tokenizers import Tokenizer

        path = Path(path)
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        config = {**_read(path / "special_tokens_map.json"), **_read(path / "tokenizer_config.json")}
        for token_id, spec in (config.get("added_tokens_decoder") or {}).items():
            _check_added(tokenizer, int(token_id), spec, path)
        return cls(tokenizer, _content(config.get("eos_token")), _content(config.get("unk_token")),
                   bool(config.get("clean_up_tokenization_spaces", False)))

    @property
    def eos_token_id(self) -> int | None:
        return None if self.eos_token is None else self._tok.token_to_id(self.eos_token)

    @property
    def unk_token_id(self) -> int | None:
        return None if self.unk_token is None else self._tok.token_to_id(self.unk_token)

    def convert_tokens_to_ids(self, token: str) -> int | None:
        tid = self._tok.token_to_id(token)
        return self.unk_token_id if tid is None else tid

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        text = self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)
        if self._clean_up:
            for a, b in _CLEANUP:
                text = text.replace(a, b)
        return text

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)


def _read(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None


def _content(token) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or {"content": ...}."""
    return token.get("content") if isinstance(token, dict) else token


def _check_added(tokenizer, token_id: int, spec: dict, path: Path) -> None:
    """A token that tokenizer_config.json adds must sit at its id in tokenizer.json (or be added there)."""
    from tokenizers import AddedToken

    content = spec.get("content")
    if content is None:
        return
    found = tokenizer.token_to_id(content)
    if found is None:
        options = {k: spec[k] for k in ("single_word", "lstrip", "rstrip", "normalized", "special") if k in spec}
        add = tokenizer.add_special_tokens if spec.get("special") else tokenizer.add_tokens
        add([AddedToken(content, **options)])
        found = tokenizer.token_to_id(content)
    if found != token_id:
        raise ModelError(f"{path}: tokenizer_config.json gives {content!r} the id {token_id} but tokenizer.json"
                         f" has it at {found}; the two files belong to different tokenizers")
