"""Map-reduce planning of a summary within the model's limits, and running the plan.

    plan = plan_summary(timeline, request, TokenBudget(engine))   # pure: no model call
    text = yield from run_steps(plan, engine_asker(lambda: engine, stop), budget)  # pauses after each call

One `direct` step when the timeline fits; else `map` steps into partials, `merge` steps, one
`final`. Prompts are counted with the engine's own builder, so counts are exact (docs/design.md).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Generator, Sequence

from daemon.errors import PromptTooLongError
from daemon.types import Prompt
from daemon.summaries.timeline import (
    Entry,
    Period,
    Request,
    Timeline,
    entry_line,
    nothing_seen,
)

MAP_INSTRUCTION = "Summarise this part of the log in two or three sentences: what was seen, when, and any alerts."
MERGE_INSTRUCTION = "Combine these summaries into one, keeping the times and any alerts."
SLACK = 2  # tokens allowed for joining pieces that were counted apart
MIN_PARTIAL = 8  # fewest tokens a partial summary may have before map-reduce is pointless


class TokenBudget:
    """Exact prompt sizes from the engine's own tokenizer and template, and the model's limits
    (the engine's public `limits`, `prompt_tokens`, `tokenize` and `detokenize`)."""

    def __init__(self, engine):
        self.engine = engine
        self.max_prompt, self.kv_len = engine.limits.max_prompt, engine.limits.kv_len

    def count(self, question: str) -> int:
        """Tokens of a text-only prompt: system turn + question + chat template."""
        return self.engine.prompt_tokens(0, question)

    def piece(self, text: str) -> int:
        return len(self.engine.tokenize(text))

    def limit(self, new_tokens: int) -> int:
        """Largest prompt that still leaves `new_tokens` of answer room in the KV cache."""
        return min(self.max_prompt, self.kv_len - new_tokens)

    def clip(self, text: str, tokens: int) -> str:
        ids = self.engine.tokenize(text)
        return text if len(ids) <= tokens else self.engine.detokenize(ids[:max(0, tokens - 1)]).rstrip() + "…"


@dataclass(frozen=True)
class Step:
    kind: str  # direct (whole timeline) | map (one chunk) | merge (partials -> fewer) | final (partials -> summary)
    prompt: str  # the question text; for merge/final a template until the partial summaries exist
    tokens: int  # prompt tokens including system turn and template; an upper bound when not exact
    max_new_tokens: int
    exact: bool = True
    start: float | None = None  # a map step's span: its first and last entries' times
    end: float | None = None


@dataclass(frozen=True)
class Plan:
    timeline: Timeline
    request: Request
    steps: tuple[Step, ...]  # empty: nothing was seen, no model call
    max_prompt: int
    kv_len: int
    partial_tokens: int = 0  # answer length of map and merge steps

    @property
    def map_steps(self) -> int:
        return sum(s.kind == "map" for s in self.steps)


@dataclass(frozen=True)
class Partial:
    start: float
    end: float
    text: str


def plan_summary(timeline: Timeline, request: Request, budget: TokenBudget) -> Plan:
    """The steps that summarise `timeline` within the model's limits (map steps exact, reduce bounded)."""
    plan = Plan(timeline, request, (), budget.max_prompt, budget.kv_len)
    if not timeline.entries:
        return plan
    final_new = request.max_new_tokens
    lines = [entry_line(e, timeline.period) for e in timeline.entries]
    direct = log_prompt(timeline, lines, request.prompt)
    tokens = budget.count(direct)
    if tokens <= budget.limit(final_new):
        return Plan(timeline, request, (Step("direct", direct, tokens, final_new),), budget.max_prompt, budget.kv_len)
    b = partial_tokens(timeline, request, budget)
    steps = pack_entries(timeline, lines, budget, b)
    steps += reduce_steps(timeline, request, budget, len(steps), b)
    return Plan(timeline, request, tuple(steps), budget.max_prompt, budget.kv_len, b)


def log_prompt(timeline: Timeline, lines: Sequence[str], instruction: str) -> str:
    head = f"Camera log of {', '.join(timeline.cameras)} from {timeline.period.label()}:"
    return "\n".join([head, *lines, instruction])


def chunk_prompt(timeline: Timeline, entries: Sequence[Entry], lines: Sequence[str]) -> str:
    p = timeline.period
    span = f"{p.clock(entries[0].start)} to {p.clock(entries[-1].end)}" if entries else p.label()
    return "\n".join([f"Part of the camera log of {', '.join(timeline.cameras)}, {span}:", *lines, MAP_INSTRUCTION])


def partials_prompt(timeline: Timeline, parts: Sequence[Partial], instruction: str, final: bool) -> str:
    p = timeline.period
    if final:
        head = f"Summaries of consecutive parts of the camera log of {', '.join(timeline.cameras)} from {p.label()}:"
    else:
        span = f"{p.clock(parts[0].start)} to {p.clock(parts[-1].end)}" if parts else p.label()
        head = f"Summaries of consecutive parts of the camera log, {span}:"
    return "\n".join([head, *(partial_line(part, p) for part in parts), instruction])


def partial_line(part: Partial, period: Period) -> str:
    return f"{period.clock(part.start)} to {period.clock(part.end)}: {part.text}"


def partial_tokens(timeline: Timeline, request: Request, budget: TokenBudget) -> int:
    """Answer length of map/merge steps: short enough that three partials fit a final prompt."""
    fixed = budget.count(partials_prompt(timeline, [], request.prompt, final=True))
    room = budget.limit(request.max_new_tokens) - fixed
    b = min(request.max_new_tokens, room // 3 - _slot(timeline, budget))
    if b < MIN_PARTIAL:
        raise too_small(request, budget)
    return b


def too_small(request: Request, budget: TokenBudget) -> PromptTooLongError:
    return PromptTooLongError(
        f"summary {request.job!r}: with answers of up to {request.max_new_tokens} tokens, a prompt may take"
        f" {max(0, budget.limit(request.max_new_tokens))} tokens (the model's largest prefill is {budget.max_prompt}, its KV"
        f" cache {budget.kv_len}), too few to summarise the timeline in parts; lower max_new_tokens, or shorten"
        " the prompt or the system text")


def _slot(timeline: Timeline, budget: TokenBudget) -> int:
    """Tokens a partial summary costs besides its own text: its time span and line break."""
    p = timeline.period
    return budget.piece(f"\n{p.clock(p.start)} to {p.clock(p.end)}: ") + SLACK


def pack_entries(timeline: Timeline, lines: list[str], budget: TokenBudget, b: int) -> list[Step]:
    """Map steps: consecutive timeline lines, as many as fit each prompt; a line too long alone is clipped."""
    entries, limit = timeline.entries, budget.limit(b)
    base = budget.count(chunk_prompt(timeline, [], []))
    room = limit - base - 4 * SLACK  # the empty prompt's header is a stand-in for a chunk's own span
    lines = [budget.clip(line, room) for line in lines]
    def render(i: int, j: int) -> str:
        return chunk_prompt(timeline, entries[i:j], lines[i:j])

    groups = pack([budget.piece(line + "\n") for line in lines], base, lambda i, j: budget.count(render(i, j)), limit)
    return [Step("map", render(i, j), budget.count(render(i, j)), b, start=entries[i].start,
                 end=max(e.end for e in entries[i:j])) for i, j in groups]


def pack(costs: Sequence[int], base: int, exact: Callable[[int, int], int], limit: int) -> list[tuple[int, int]]:
    """Split items 0..n-1 into consecutive [i, j) groups whose exact size fits `limit`.

    Sizes are first estimated (base + item costs), then checked with `exact`,
    dropping items from the end of a group until it fits.
    """
    groups, i = [], 0
    while i < len(costs):
        j, size = i + 1, base + costs[i]
        while j < len(costs) and size + costs[j] <= limit:
            size += costs[j]
            j += 1
        while j - i > 1 and exact(i, j) > limit:
            j -= 1
        if exact(i, j) > limit:
            raise PromptTooLongError(f"one timeline line needs {exact(i, j)} tokens, more than the {limit} a step may take;"
                             " shorten the system text")
        groups.append((i, j))
        i = j
    return groups


def reduce_steps(timeline: Timeline, request: Request, budget: TokenBudget, n: int, b: int) -> list[Step]:
    """Merge levels until the partials fit one final prompt; sizes are bounds (partials are at most b tokens)."""
    slot = b + _slot(timeline, budget)
    final_fixed = budget.count(partials_prompt(timeline, [], request.prompt, final=True))
    merge_fixed = budget.count(partials_prompt(timeline, [], MERGE_INSTRUCTION, final=False)) + 4 * SLACK
    fan_in = (budget.limit(b) - merge_fixed) // slot
    steps = []
    while final_fixed + n * slot > budget.limit(request.max_new_tokens):
        if fan_in < 2:
            raise PromptTooLongError(f"summary {request.job!r}: partial summaries of {b} tokens do not fit two to a prompt"
                             f" of {budget.limit(b)} tokens; shorten the system text")
        groups = [min(fan_in, n - k) for k in range(0, n, fan_in)]
        template = partials_prompt(timeline, [], MERGE_INSTRUCTION, final=False)
        steps += [Step("merge", _template(template, g, b), merge_fixed + g * slot, b, exact=False) for g in groups]
        n = len(groups)
    template = partials_prompt(timeline, [], request.prompt, final=True)
    steps.append(Step("final", _template(template, n, b), final_fixed + n * slot, request.max_new_tokens,
                      exact=False))
    return steps


def _template(prompt: str, parts: int, b: int) -> str:
    head, instruction = prompt.split("\n", 1)
    return f"{head}\n<{parts} partial summaries, each at most {b} tokens, one per line>\n{instruction}"


# --------------------------------------------------------------------------- running


Ask = Callable[[str, int], str]  # (question, max_new_tokens) -> answer text


def run_steps(plan: Plan, ask: Ask, budget: TokenBudget) -> Generator[None, None, str]:
    """The plan's model calls, pausing after each (so the NPU worker can take windows in between); returns the text.

    Merge and final prompts are built from the real partial summaries and packed exactly."""
    timeline, request = plan.timeline, plan.request
    if not plan.steps:
        return nothing_seen(timeline)
    if plan.steps[0].kind == "direct":
        return _text(ask(plan.steps[0].prompt, request.max_new_tokens))
    b = plan.partial_tokens
    parts = []
    for step in (s for s in plan.steps if s.kind == "map"):
        parts.append(Partial(step.start, step.end, budget.clip(_text(ask(step.prompt, b)), b)))
        yield
    while True:
        final = partials_prompt(timeline, parts, request.prompt, final=True)
        if budget.count(final) <= budget.limit(request.max_new_tokens):
            return _text(ask(final, request.max_new_tokens))
        parts = yield from merge_partials(plan, parts, ask, budget)


def merge_partials(plan: Plan, parts: list[Partial], ask: Ask, budget: TokenBudget) -> Generator[None, None, list]:
    """One merge level: consecutive partials packed into prompts that fit, each answered with one partial."""
    timeline, b = plan.timeline, plan.partial_tokens

    def render(i: int, j: int) -> str:
        return partials_prompt(timeline, parts[i:j], MERGE_INSTRUCTION, final=False)

    costs = [budget.piece(partial_line(p, timeline.period) + "\n") for p in parts]
    groups = pack(costs, budget.count(render(0, 0)), lambda i, j: budget.count(render(i, j)), budget.limit(b))
    if len(groups) >= len(parts):
        raise PromptTooLongError(f"summary {plan.request.job!r}: partial summaries do not fit two to a prompt of"
                         f" {budget.limit(b)} tokens; shorten the system text or the prompt")
    merged = []
    for i, j in groups:
        merged.append(Partial(parts[i].start, parts[j - 1].end, budget.clip(_text(ask(render(i, j), b)), b)))
        yield
    return merged


def _text(answer: str) -> str:
    return answer.strip() or "(the model returned no text)"


def engine_asker(engine_for: Callable[[], object], stop: threading.Event | None = None,
                 on_step: Callable[[str, int], None] | None = None) -> Ask:
    """Text-only questions to `engine_for()` (asked per call: each step may run on another NPU); the engine
    raises Cancelled when `stop` ends a step."""

    def ask(question: str, max_new_tokens: int) -> str:
        prompt = Prompt("summary", question, max_new_tokens=max_new_tokens)
        answer = engine_for().ask([], [prompt], stop=stop).answers[0]
        if on_step is not None:
            on_step(question, answer.prompt_tokens)
        return answer.text

    return ask
