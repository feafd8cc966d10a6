"""Constrained decoding: answers that are JSON, and conform to a JSON schema, token by token.

    check_schema(schema, max_tokens)                       # QuestionError before any NPU time (no tokenizer)
    constraint = grammars_of(engine).start(schema)         # one per answer; the token tables once per model
    engine.answer(prefix, prompt, constrain=constraint)

At every decode step only tokens that keep the text a valid prefix of a JSON
value conforming to the schema (types, required keys, enums, number ranges,
string lengths) can be chosen; `<|im_end|>` only once the value is complete.
The grammar engine is llguidance (Rust, numpy logits, no torch; manylinux
wheels for x86_64 and aarch64): measured against outlines-core and xgrammar on
the real 151,674-token vocabulary in `benchmarks/bench_json_decoding.py`
(figures in docs/json.md).

An answer must end within its token budget (max_tokens, and the KV cache's
room). Strings without a `maxLength` and arrays without a `maxItems` get one
(`bounded`), and when the budget runs low the constraint prefers tokens that
close what is open (a quote, a brace, a bracket, a comma), so the value
closes in time instead of being cut off mid-string.
"""

from __future__ import annotations

import json
import weakref
from typing import Any, Mapping

import numpy as np

from daemon.errors import ModelError, QuestionError

ANY_OBJECT: Mapping[str, Any] = {"type": "object"}  # response_format json_object
DEFAULT_MAX_LENGTH = 400  # characters, for strings whose schema sets no maxLength
DEFAULT_MAX_ITEMS = 8  # for arrays whose schema sets no maxItems
# Added to a token's logit once the budget runs low, by the closing characters its text holds: inside a
# string a quote ends it (a brace there is only text); outside, a brace or bracket ends a value, a comma
# ends a number, a quote starts a key the schema still requires. Then one more per byte: of the tokens
# the grammar allows, the longest spell a forced key in the fewest steps.
IN_STRING_BONUS = {'"': 3e4}
OUTSIDE_BONUS = {"}": 3e4, "]": 3e4, ",": 2e4, '"': 1e4}
OPEN_MARGIN = 16  # tokens, on top of the smallest value, to close what is open when closing starts (`": ""}`)
SEPARATORS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _llguidance():
    try:
        import llguidance
    except ImportError:
        raise ModelError("JSON answers (response_format) need the llguidance package: pip install "
                         "'vlmwatch[http]' (or pip install llguidance)") from None
    return llguidance


def bounded(schema: Any) -> Any:
    """`schema` with a maxLength on every string and a maxItems on every array that have none: a stricter
    schema (whatever conforms to it conforms to the original) whose values end in a bounded number of tokens."""
    if isinstance(schema, list):
        return [bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded(v) for k, v in schema.items()}
    types = out.get("type")
    types = types if isinstance(types, list) else [types]
    if "string" in types and "maxLength" not in out and "enum" not in out and "const" not in out:
        out["maxLength"] = DEFAULT_MAX_LENGTH
    if "array" in types and "maxItems" not in out:
        out["maxItems"] = DEFAULT_MAX_ITEMS
    return out


def grammar(schema: Mapping[str, Any] | None) -> str:
    """The llguidance grammar for `schema` (None: any JSON object); QuestionError when it is not one
    llguidance can enforce."""
    llg = _llguidance()
    try:
        compiled = llg.LLMatcher.grammar_from_json_schema(bounded(dict(schema or ANY_OBJECT)),
                                                         defaults=SEPARATORS)
    except (ValueError, TypeError) as exc:
        raise QuestionError(f"the response_format's JSON schema cannot be enforced: {exc}") from None
    failed, messages = llg.LLMatcher.validate_grammar_with_warnings(compiled)
    if failed:
        raise QuestionError(f"the response_format's JSON schema cannot be enforced: {messages[0]}")
    return compiled


def check_schema(schema: Mapping[str, Any] | None, max_tokens: int) -> None:
    """QuestionError unless `schema` can be enforced within `max_tokens` (no tokenizer needed: cheap)."""
    grammar(schema)
    need = min_tokens(schema)
    if max_tokens < need:
        raise QuestionError(f"the answer may have {max_tokens} tokens, but the smallest JSON value of the "
                            f"response_format's schema needs up to {need}: raise max_tokens to {need} or more")


class JsonGrammars:
    """Compiles schemas for one tokenizer. The tokenizer's token table is built on first use (about 2 s
    for the real vocabulary), then kept."""

    def __init__(self, tokenizer, vocab_size: int, end_id: int):
        self.tokenizer, self.vocab_size, self.end_id = tokenizer, vocab_size, end_id
        self._ll = None
        self._closers: tuple[np.ndarray, np.ndarray] | None = None  # [vocab] float32 bonuses: in, out of a string

    def grammar(self, schema: Mapping[str, Any] | None) -> str:
        return grammar(schema)

    def check(self, schema: Mapping[str, Any] | None, max_tokens: int) -> None:
        check_schema(schema, max_tokens)

    def prepare(self) -> None:
        """Build the token tables now (seconds, once), e.g. on the HTTP side, not on the NPU's thread."""
        self._closing_tokens()

    def start(self, schema: Mapping[str, Any] | None) -> JsonConstraint:
        """A fresh constraint for one answer."""
        llg = _llguidance()
        matcher = llg.LLMatcher(self._tokenizer(), self.grammar(schema))
        if matcher.is_error():
            raise QuestionError(f"the response_format's JSON schema cannot be enforced: {matcher.get_error()}")
        return JsonConstraint(matcher, self.vocab_size, self._closing_tokens(), min_tokens(schema) + OPEN_MARGIN,
                              self._tokenizer())

    def _tokenizer(self):
        if self._ll is None:
            llg = _llguidance()
            backend = getattr(self.tokenizer, "backend", None) or getattr(self.tokenizer, "backend_tokenizer")
            self._ll = llg.LLTokenizer(backend.to_str(), n_vocab=self.vocab_size, eos_token=self.end_id)
        return self._ll

    def _closing_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        if self._closers is None:
            ll = self._tokenizer()
            texts = [ll.decode_bytes([t]) for t in range(self.vocab_size)]
            self._closers = tuple(
                np.fromiter((max((v for c, v in bonus.items() if c.encode() in b), default=0) + len(b)
                             for b in texts), np.float32, self.vocab_size)
                for bonus in (IN_STRING_BONUS, OUTSIDE_BONUS))
        return self._closers


_GRAMMARS: dict[int, tuple[weakref.ref, JsonGrammars]] = {}  # id(model) -> (the model, its grammars)


def grammars_of(engine) -> JsonGrammars:
    """The JSON grammars of `engine`'s model, built once per model (an engine per NPU: one each)."""
    model = engine.model
    held = _GRAMMARS.get(id(model))
    if held is None or held[0]() is not model:  # (a model freed and another at its address: rebuilt)
        held = (weakref.ref(model), JsonGrammars(model.tokenizer, model.embeddings.shape[0], engine.prompts.im_end))
        _GRAMMARS[id(model)] = held
    return held[1]


def json_constraint(engine, prompt) -> JsonConstraint | None:
    """A fresh constraint for `prompt`'s schema (`Prompt.schema`, JSON text), None for a prompt without one."""
    return None if prompt.schema is None else grammars_of(engine).start(json.loads(prompt.schema))


def min_tokens(schema: Mapping[str, Any] | None) -> int:
    """Tokens an answer needs at least: the bytes of the smallest value that conforms (every token is at
    least one byte), plus the end token. With OPEN_MARGIN, the reserve: from that many tokens left, the
    answer closes."""
    return len(json.dumps(skeleton(schema or ANY_OBJECT), ensure_ascii=False).encode()) + 1


def skeleton(schema: Any) -> Any:
    """The smallest value of `schema`'s shape: required keys only, empty strings and arrays, least numbers."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return min(schema["enum"], key=lambda v: len(json.dumps(v)))
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return skeleton(schema[key][0])
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if kind == "object":
        props = schema.get("properties", {})
        return {k: skeleton(props.get(k, {})) for k in schema.get("required", [])}
    if kind == "array":
        return [skeleton(schema.get("items", {}))] * int(schema.get("minItems", 0))
    if kind == "string":
        return "x" * int(schema.get("minLength", 0))
    if kind in ("number", "integer"):
        return schema.get("minimum", schema.get("exclusiveMinimum", 0))
    return False if kind == "boolean" else None


class JsonConstraint:
    """One answer's grammar state: `mask` the logits before sampling, `accept` the sampled token."""

    def __init__(self, matcher, vocab_size: int, closers: tuple[np.ndarray, np.ndarray], reserve_tokens: int,
                 tokenizer):
        self.matcher, self.vocab_size, self.closers, self.reserve = matcher, vocab_size, closers, reserve_tokens
        self.tokenizer = tokenizer
        self._bits = np.zeros((vocab_size + 31) // 32, np.int32)
        self._in_string = self._escaped = False  # where the text so far ends: inside a JSON string or not

    def allowed(self) -> np.ndarray:
        """[vocab] bool: the tokens the grammar allows next."""
        self.matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        return np.unpackbits(self._bits.view(np.uint8), bitorder="little")[:self.vocab_size].view(bool)

    def mask(self, logits: np.ndarray, tokens_left: int) -> np.ndarray:
        """[vocab] logits with every token the grammar forbids at -inf; when no more than the reserve are
        left, closing tokens first."""
        allowed = self.allowed()
        out = np.where(allowed, logits[:self.vocab_size].astype(np.float32), np.float32(-np.inf))
        if tokens_left <= self.reserve:
            out += np.where(allowed, self.closers[0 if self._in_string else 1], np.float32(0))
        return out

    def accept(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"the JSON grammar refused token {token} it allowed: {self.matcher.get_error()}")
        for byte in self.tokenizer.decode_bytes([token]):
            if self._escaped:
                self._escaped = False
            elif self._in_string and byte == 0x5C:  # backslash
                self._escaped = True
            elif byte == 0x22:  # quote
                self._in_string = not self._in_string

    @property
    def complete(self) -> bool:
        """The text so far is a whole value conforming to the schema."""
        return self.matcher.is_accepting()
