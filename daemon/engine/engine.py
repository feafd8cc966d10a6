"""The engine: frames and prompts in, answers out, on one NPU worker thread.

    prefix = engine.prefill(window.frames, prompts)    # ViT + the shared chunks, once per window
    for prompt in prompts:
        answer = engine.answer(prefix, prompt)         # only this prompt's suffix, then decode

The prefix (system text and every frame line) is explicit state: the caller
holds it and passes it to each answer. The KV cache holds one prefix at a
time; answering on a prefix that is no longer resident (another window came
in between) prefills its chunks again, so a stale prefix costs time, never a
wrong answer. The prefix's last, partial chunk (its tail) is prefilled once
per window too, together with the first prompt's suffix; later suffixes
start after it (see `_prefill_suffix`). Choice prompts are scored from the
logits of the first answer token: no decoding, no text parsing. Every prompt
is checked against the model's limits before any NPU time is spent on it; a
stop event ends work at the next step by raising `Cancelled`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from daemon.config.model import ModelSettings
from daemon.engine.bundle import Model, locate, open_model
from daemon.engine.prompt_fit import Budget, Limits, PromptFit
from daemon.engine.llm import LLM
from daemon.engine.prompt import DEFAULT_SYSTEM, PromptBuilder
from daemon.engine.vision import Vision
from daemon.errors import Cancelled
from daemon.types import Frame, Prompt, Timings

__all__ = ["Analysis", "Answer", "Budget", "Engine", "Limits", "Prefix", "Sampling", "open_engine"]

OnToken = Callable[[str, str], None]  # (prompt_id, text piece)
MIN_TEMPERATURE = 1e-4


@dataclass(frozen=True)
class Sampling:
    """Greedy by default: a watcher should say the same thing twice."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class Answer:
    prompt_id: str
    text: str
    tokens: tuple[int, ...]
    prompt_tokens: int
    stop_reason: str  # stop | length | choice
    choice: str | None = None
    probabilities: dict[str, float] | None = None
    timings: Timings = field(default_factory=Timings)


@dataclass(frozen=True, eq=False)
class Prefix:
    """A prompt prefix (system text and all frames) whose whole chunks were prefilled.

    Identity is the prefix's identity: the engine knows which one the KV cache
    holds, and whether it holds the tail (rows shared..tokens-1) yet."""

    frames: tuple[Frame, ...]
    embeds: np.ndarray = field(repr=False)  # [n, H] input rows of the whole prefix
    shared: int  # rows 0..shared-1 (whole prefill chunks) are computed once and kept in the cache
    timings: Timings  # ViT and the shared chunks' prefill

    @property
    def tokens(self) -> int:
        return self.embeds.shape[0]


@dataclass(frozen=True)
class Analysis:
    """Answers for one set of frames; `shared` is the ViT + shared-prefix work."""

    answers: list[Answer]
    shared: Timings
    prefix_tokens: int


class Engine:
    """Owns the sessions and the KV cache. Not thread-safe: one NPU worker calls it."""

    def __init__(self, model: Model, system: str | None = None, sampling: Sampling = Sampling(),
                 max_new_tokens: int = 256, kv: str = "auto", reuse_tail: bool = True):
        """kv: where the KV cache lives (LLM); reuse_tail=False prefills the prefix's tail with every
        prompt, as vlmwatch did before (kept so that benchmarks can compare)."""
        self.model, self.sampling, self.max_new_tokens = model, sampling, max_new_tokens
        self.reuse_tail = reuse_tail
        self.llm = LLM(model.layers, model.post, kv)
        self.vision = Vision(model.vit) if model.vit is not None else None
        tokens = self.vision.tokens if self.vision else 0
        self.prompts = PromptBuilder(model.tokenizer, tokens, system or DEFAULT_SYSTEM)
        self.fit = PromptFit(self.prompts, self.llm.geo, self.vision is not None)  # the checks before NPU time
        self.rng = np.random.default_rng(sampling.seed)
        self._input_dtype = self.llm.geo.dtypes["input"]
        self._resident: Prefix | None = None  # the prefix whose shared chunks the KV cache holds
        self._tail_cached = False  # ... and whether it holds that prefix's tail rows too
        self._prefix_rows: dict[int, tuple[list[int], np.ndarray]] = {}  # prefix length -> (ids, token rows)

    # ------------------------------------------------------------------ limits

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def kv_path(self) -> str:
        """Where the KV cache lives: "resident" (the NPU runtime's buffers) or "copied" (fed with every call)."""
        return self.llm.kv_path

    @property
    def limits(self) -> Limits:
        return self.fit.limits

    def budget(self, n_frames: int) -> Budget:
        return self.fit.budget(n_frames)

    def prompt_tokens(self, n_frames: int, question: str) -> int:
        """Tokens of the whole prompt for `question` about `n_frames` frames."""
        return self.fit.prompt_tokens(n_frames, question)

    def check(self, n_frames: int, prompt: Prompt, what: str | None = None) -> None:
        """Raise a QuestionError unless `prompt` can be answered about `n_frames` frames."""
        self.fit.check(n_frames, prompt, what)

    def tokenize(self, text: str) -> list[int]:
        return self.prompts.encode(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.prompts.decode(ids)

    # ------------------------------------------------------------------ prefix

    def prefill(self, frames: Sequence[Frame], prompts: Sequence[Prompt] = (), stop=None) -> Prefix:
        """Run the ViT and prefill the prefix's whole chunks; `prompts` are checked first."""
        self.fit.check_frames(len(frames))
        for p in prompts:  # reject before spending NPU time on any of them
            self.check(len(frames), p)
        t0, m0 = time.perf_counter(), self.model.meter.ms
        embeds = self._embed_prefix(self.prompts.prefix(len(frames)), frames)
        t1 = time.perf_counter()
        P = self.llm.geo.prefill_len
        shared = (embeds.shape[0] // P) * P
        self._resident = None
        if shared:
            self.llm.prefill(embeds[:shared], 0, stop)
        timings = Timings(vit_ms=(t1 - t0) * 1e3, prefill_ms=(time.perf_counter() - t1) * 1e3,
                          modelled_npu_ms=self.model.meter.ms - m0)
        self._resident = Prefix(tuple(frames), embeds, shared, timings)
        self._tail_cached = shared == embeds.shape[0]
        return self._resident

    def _restore(self, prefix: Prefix, stop) -> None:
        """Make the KV cache hold `prefix`'s shared chunks again (another prefix came in between)."""
        if self._resident is prefix:
            return
        self._resident = None
        if prefix.shared:
            self.llm.prefill(prefix.embeds[:prefix.shared], 0, stop)
        self._resident = prefix
        self._tail_cached = prefix.shared == prefix.tokens

    def _embed_prefix(self, ids: list[int], frames: Sequence[Frame]) -> np.ndarray:
        """[n, H] input rows: token embeddings with each frame's features in its <IMG_CONTEXT> run.

        The token rows of a prefix depend only on the frame count: they are looked up once (2,144
        rows from the memory-mapped table, converted) and copied for each window after that."""
        template = self._prefix_rows.get(len(ids))
        if template is None or template[0] != ids:
            template = self._prefix_rows[len(ids)] = (ids, self.embed(ids))
        rows = template[1].copy()
        slots = np.flatnonzero(np.asarray(ids) == self.prompts.context)  # T per frame, in order
        T = self.prompts.image_tokens
        for i, frame in enumerate(frames):
            rows[slots[i * T:(i + 1) * T]] = self.vision.features(frame)
        return rows

    def embed(self, ids: Sequence[int]) -> np.ndarray:
        return np.asarray(self.model.embeddings[np.asarray(ids)], dtype=self._input_dtype)

    # ------------------------------------------------------------------ per prompt

    def answer(self, prefix: Prefix, p: Prompt, on_token: OnToken | None = None, stop=None,
               sampling: Sampling | None = None, stop_texts: Sequence[str] = (), constrain=None) -> Answer:
        """Answer one prompt about the prefix's frames. Raises Cancelled when `stop` is set.

        `sampling` overrides the engine's for this answer only (its own seeded generator, so the same
        request with the same seed gives the same text); generation also ends where the text first
        contains one of `stop_texts`, which is cut off (and never streamed). `constrain` (a
        `daemon.engine.constrain.JsonConstraint`) masks every step's logits to what its grammar allows."""
        self.check(len(prefix.frames), p)
        t0, m0 = time.perf_counter(), self.model.meter.ms
        self._restore(prefix, stop)
        suffix = self.embed(self.prompts.suffix(p.question))  # [n, H]
        n_prompt = prefix.tokens + suffix.shape[0]
        logits = self.llm.logits(self._prefill_suffix(prefix, suffix, stop))
        t1 = time.perf_counter()
        if p.choices:
            probs = self.choice_probabilities(logits, p.choices)
            best = max(probs, key=probs.get)
            timings = Timings(prefill_ms=(t1 - t0) * 1e3, modelled_npu_ms=self.model.meter.ms - m0)
            return Answer(p.id, best, (), n_prompt, "choice", best, probs, timings)
        stream = _Streamer(self.prompts, p.id, on_token, stop_texts)
        tokens, reason = self._generate(p, logits, n_prompt, stream, stop, sampling, constrain)
        timings = Timings(prefill_ms=(t1 - t0) * 1e3, decode_ms=(time.perf_counter() - t1) * 1e3,
                          generated=len(tokens), modelled_npu_ms=self.model.meter.ms - m0)
        return Answer(p.id, stream.finish(tokens), tuple(tokens), n_prompt, reason, timings=timings)

    def _prefill_suffix(self, prefix: Prefix, suffix: np.ndarray, stop) -> np.ndarray:
        """Prefill one prompt's suffix [n, H] after `prefix`; return its last hidden [1, 1, H].

        Until the prefix's tail (the rows after its whole chunks) is cached,
        the tail and the suffix go through one chunk prefill. After that a
        suffix starts where the prefix ends: through the decode graph token by
        token when that costs less than prefilling the tail's chunk again with
        it (the break-even, from the modelled group timings, is about 19 tokens
        at group 17 on InternVL3-2B), else by prefilling that chunk again. Both
        are exact: the tail's rows come out the same, rows past the prefix are
        overwritten, and the decode mask hides every row from the position on.
        """
        llm, tail = self.llm, prefix.embeds[prefix.shared:]
        if (self.reuse_tail and self._tail_cached
                and llm.feed_cost(len(suffix)) < llm.prefill_cost(prefix.shared, len(tail) + len(suffix))):
            return llm.feed(suffix, prefix.tokens, stop)
        self._tail_cached = False  # until the chunk is through: a cancelled prefill leaves it half-written
        hidden = llm.prefill(np.concatenate([tail, suffix]), prefix.shared, stop)
        self._tail_cached = True
        return hidden

    def ask(self, frames: Sequence[Frame], prompts: Sequence[Prompt], on_token: OnToken | None = None,
            stop=None) -> Analysis:
        """Every prompt about the same frames (empty: a text-only question): one prefix, then each answer."""
        prefix = self.prefill(frames, prompts, stop)
        answers = [self.answer(prefix, p, on_token, stop) for p in prompts]
        return Analysis(answers, prefix.timings, prefix.tokens)

    def _generate(self, p: Prompt, logits: np.ndarray, pos: int, stream: _Streamer, stop,
                  sampling: Sampling | None, constrain=None) -> tuple[list[int], str]:
        limit = p.max_new_tokens or self.max_new_tokens
        rng = self.rng if sampling is None else np.random.default_rng(sampling.seed)
        sampling = sampling or self.sampling
        tokens: list[int] = []
        while True:
            if constrain is not None:  # only what keeps the answer valid; closing first when room runs out
                logits = constrain.mask(logits, min(limit - len(tokens), self.llm.geo.kv_len - pos + 1))
            tok = sample(logits, sampling, rng)
            if constrain is not None:
                constrain.accept(tok)
            if tok in self.prompts.stop_ids:
                return tokens, "stop"
            tokens.append(tok)
            if stream.push(tokens):
                return tokens, "stop"  # the text reached a stop text
            if len(tokens) >= limit or pos >= self.llm.geo.kv_len:
                return tokens, "length"
            if stop is not None and stop.is_set():
                raise Cancelled()
            logits = self.llm.decode(self.embed([tok])[0], pos)  # [vocab]
            pos += 1

    def choice_probabilities(self, logits: np.ndarray, choices: Sequence[str]) -> dict[str, float]:
        """P(answer starts with choice c): softmax mass of c's first token (case variants summed)."""
        p = softmax(logits)
        firsts = self.choice_tokens(choices)
        return {c: float(sum(p[t] for t in firsts[c])) for c in choices}

    def choice_tokens(self, choices: Sequence[str]) -> dict[str, set[int]]:
        """First token ids of each choice as written, lower-case and capitalised; must not overlap."""
        return self.fit.choice_tokens(choices)


class _Streamer:
    """Emits new text as tokens arrive, holding back incomplete UTF-8 sequences.

    Decodes only the last few tokens per step (a settled prefix gives the
    context that byte-level and SentencePiece spacing need), so streaming a
    long answer costs O(1) per token, not O(n). With stop texts it decodes the
    whole answer each step instead (answers are short) and holds back any end
    of the text that may be the start of a stop text, so none is ever emitted.
    """

    def __init__(self, prompts: PromptBuilder, prompt_id: str, on_token: OnToken | None,
                 stop_texts: Sequence[str] = ()):
        self.prompts, self.id, self.on_token = prompts, prompt_id, on_token
        self.stop_texts = tuple(t for t in stop_texts if t)
        self.prefix = self.read = 0  # tokens[prefix:read] are already emitted context
        self.sent = 0  # with stop texts: characters of the text already emitted
        self.cut: int | None = None  # with stop texts: where the first one begins

    def push(self, tokens: list[int]) -> bool:
        """Emit the new text; True once the text contains a stop text."""
        if self.stop_texts:
            return self._push_until_stop(tokens)
        if self.on_token is None:
            return False
        seen = self.prompts.decode(tokens[self.prefix:self.read])
        text = self.prompts.decode(tokens[self.prefix:])
        if len(text) > len(seen) and not text.endswith("\ufffd"):
            self.on_token(self.id, text[len(seen):])
            self.prefix, self.read = self.read, len(tokens)
        return False

    def _push_until_stop(self, tokens: list[int]) -> bool:
        text = self.prompts.decode(tokens)
        hits = [i for i in (text.find(t) for t in self.stop_texts) if i >= 0]
        if hits:
            self.cut = min(hits)
            self._emit(text[self.sent:self.cut])
            return True
        held = max((k for t in self.stop_texts for k in range(1, len(t)) if text.endswith(t[:k])), default=0)
        self._emit(text[self.sent:min(len(text) - held, len(text.rstrip("\ufffd")))])
        return False

    def finish(self, tokens: list[int]) -> str:
        """The answer's text (cut at a stop text); emits whatever was still held back."""
        if self.cut is not None:
            return self.prompts.decode(tokens)[:self.cut]
        text = self.prompts.decode(tokens)
        if self.stop_texts:
            self._emit(text[self.sent:])
        elif self.on_token is not None:
            seen = self.prompts.decode(tokens[self.prefix:self.read])
            rest = self.prompts.decode(tokens[self.prefix:])
            if len(rest) > len(seen):
                self.on_token(self.id, rest[len(seen):])
        return text

    def _emit(self, piece: str) -> None:
        if piece and self.on_token is not None:
            self.on_token(self.id, piece)
        self.sent += len(piece)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max())
    return z / z.sum()


def sample(logits: np.ndarray, s: Sampling, rng: np.random.Generator) -> int:
    """Greedy at temperature 0; otherwise temperature, then top-k, then top-p (nucleus).

    Below MIN_TEMPERATURE the distribution is a point mass to float precision (and dividing by a
    near-zero temperature overflows), so that is greedy too."""
    if s.temperature < MIN_TEMPERATURE:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / s.temperature
    if 0 < s.top_k < z.size:
        z[z < np.partition(z, -s.top_k)[-s.top_k]] = -np.inf
    p = softmax(z)
    if s.top_p < 1.0:
        order = np.argsort(-p)
        keep = order[: int(np.searchsorted(np.cumsum(p[order]), s.top_p)) + 1]
        mask = np.zeros_like(p)
        mask[keep] = p[keep]
        p = mask / mask.sum()
    return int(rng.choice(p.size, p=p))


def open_engine(settings: ModelSettings, max_new_tokens: int = 256, backend_key: str = "model.backend") -> Engine:
    """The one way to build an engine from the `model:` settings (daemon, describe, summarize);
    `backend_key` names where the backend was chosen, for errors (describe: --backend)."""
    files = locate(settings.dir, settings.tokenizer, settings.vit)
    model = open_model(files, settings.backend, settings.device_id, backend_key=backend_key,
                       threads=settings.threads)
    return Engine(model, system=settings.system, sampling=Sampling(**settings.sampling.model_dump()),
                  max_new_tokens=max_new_tokens, kv=settings.kv)
