"""`vlmwatch bench`: every graph of the model timed on this machine, beside the cost model and the published figures.

What it times (wall clock, best of `reps` after one warm-up, on the first
layer graph: all layers have the same shapes):

    vit            one frame through the ViT
    prefill gK     one call of prefill group K (K = 1..groups), per layer
    decode         one call of the decode group, per layer
    post           the head graph
    decode tok/s   `steps` whole decode steps (every layer + post) from the
                   longest prompt's end, as the engine runs them
    window s       one 8-frame window composed from the figures above: 8 ViT
                   calls, the prefix's prefill chunks x layers, 64 tokens

each for the copied path (whole caches fed through run()) and the resident
path (only new rows written), next to what the cost model (costs.py) prices
the same calls at on an AX650N and the published figures. On a board its
"here" columns are the truth the cost model is a guess of.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from daemon.engine.costs import DECODE_LAYER_MS, DECODE_TOKEN_MS, POST_MS, PREFILL_LAYER_MS, REFERENCE_TOK_S, VIT_MS
from daemon.engine.llm import KV_INPUTS, LLM
from daemon.engine.sessions import ResidentUnavailable
from daemon.errors import VlmwatchError

WINDOW_FRAMES, WINDOW_TOKENS = 8, 64


@dataclass(frozen=True)
class Row:
    """One figure: measured here and modelled for the AX650N, per KV path, and the published one."""

    name: str
    unit: str
    copied: float | None
    resident: float | None
    model_copied: float | None
    model_resident: float | None
    published: float | None


@dataclass(frozen=True)
class Report:
    model: str
    backend: str
    resident: str  # "yes", or why not
    rows: tuple[Row, ...]

    def to_json(self) -> dict:
        return {"model": self.model, "backend": self.backend, "resident": self.resident,
                "rows": [asdict(r) for r in self.rows]}


def _zeros(ports) -> dict[str, np.ndarray]:
    return {p.name: np.zeros(p.shape, p.dtype) for p in ports}


def _best(call: Callable[[], object], meter, reps: int) -> tuple[float, float]:
    """(best wall ms, modelled ms of one call) after one warm-up call."""
    call()
    best, modelled = float("inf"), 0.0
    for _ in range(reps):
        m0, t0 = meter.ms, time.perf_counter()
        call()
        best = min(best, (time.perf_counter() - t0) * 1000)
        modelled = meter.ms - m0
    return best, modelled


class Bench:
    """Times one opened model (bundle.Model) on its backend; `progress(line)` reports each step."""

    def __init__(self, model, backend: str, reps: int = 3, steps: int = 8, progress=lambda line: None):
        self.model, self.backend, self.reps, self.steps, self.progress = model, backend, reps, steps, progress
        self.meter = model.meter
        self.copied = LLM(model.layers, model.post, "copied")
        self.geo = self.copied.geo
        self.resident, self.why = LLM(model.layers, model.post, "auto"), "yes"  # last: takes the buffers over
        if self.resident.kv_path != "resident":
            self.resident = None
            try:
                model.layers[0].resident(KV_INPUTS)
            except ResidentUnavailable as exc:
                self.why = f"no ({exc})"

    def run(self) -> Report:
        rows = [self._vit()] if self.model.vit is not None else []
        rows += [self._layer(k) for k in range(1, self.geo.groups + 1)]
        rows += [self._layer(0), self._post(), self._tok_s()]
        rows.append(self._window(rows))
        return Report(self.model.name, self.backend, self.why, tuple(rows))

    def _vit(self) -> Row:
        self.progress("ViT")
        vit = self.model.vit
        ms, modelled = _best(lambda: vit.run(_zeros(vit.inputs(0)), 0), self.meter, self.reps)
        return Row("vit (per frame)", "ms", ms, ms, modelled, modelled, VIT_MS)

    def _layer(self, group: int) -> Row:
        self.progress(f"layer group {group}")
        layer, g = self.model.layers[0], self.geo
        q = 1 if group == 0 else g.prefill_len
        copied = _best(lambda: layer.run(_zeros(layer.inputs(group)), group), self.meter, self.reps)
        resident = (None, None)
        if self.resident is not None:
            handle = self.resident._resident[0]
            small = _zeros(p for p in layer.inputs(group) if p.name not in KV_INPUTS)
            rows = np.zeros((q, g.kv_dim), g.dtypes["K_cache"])

            def call():
                handle.run(small, group)
                handle.write("K_cache", 0, rows)
                handle.write("V_cache", 0, rows)
            resident = _best(call, self.meter, self.reps)
        published = DECODE_LAYER_MS if group == 0 else (
            PREFILL_LAYER_MS[group - 1] if group <= len(PREFILL_LAYER_MS) else None)
        name = "decode (per layer)" if group == 0 else f"prefill g{group} (per layer)"
        return Row(name, "ms", copied[0], resident[0], copied[1], resident[1], published)

    def _post(self) -> Row:
        self.progress("post graph")
        post = self.model.post
        ms, modelled = _best(lambda: post.run(_zeros(post.inputs(0)), 0), self.meter, self.reps)
        return Row("post", "ms", ms, ms, modelled, modelled, POST_MS)

    def _decode_rate(self, llm: LLM | None) -> tuple[float | None, float | None]:
        if llm is None:
            return None, None
        start = self.geo.max_prompt  # decode after the longest prompt, as a window's description does
        embed = np.zeros(self.geo.hidden, self.geo.dtypes["input"])
        m0, t0 = self.meter.ms, time.perf_counter()
        for pos in range(start, min(start + self.steps, self.geo.kv_len)):
            llm.decode(embed, pos)
        n = min(self.steps, self.geo.kv_len - start)
        return n / (time.perf_counter() - t0), n * 1000 / (self.meter.ms - m0)

    def _tok_s(self) -> Row:
        self.progress(f"{self.steps} decode steps, copied and resident")
        here_c, model_c = self._decode_rate(self.copied)
        here_r, model_r = self._decode_rate(self.resident)
        return Row(f"decode end to end ({self.steps} steps)", "tok/s", here_c, here_r, model_c, model_r,
                   1000 / DECODE_TOKEN_MS)

    def _window(self, rows: list[Row]) -> Row:
        """8 frames + the prefix's chunks through every layer + the post graph + 64 tokens at the measured rate."""
        layers, P = len(self.model.layers), self.geo.prefill_len
        chunks = min(self.geo.groups, -(-self._prefix_tokens() // P))
        by_name = {r.name: r for r in rows}

        def total(field: str, tok_s_field: str) -> float | None:
            vit = by_name.get("vit (per frame)")
            prefill = [getattr(by_name[f"prefill g{k} (per layer)"], field) for k in range(1, chunks + 1)]
            post, rate = getattr(by_name["post"], field), getattr(rows[-1], tok_s_field)
            if None in prefill or rate is None:
                return None
            frames = WINDOW_FRAMES * getattr(vit, field) if vit else 0.0
            return (frames + layers * sum(prefill) + post) / 1000 + WINDOW_TOKENS / rate

        published = (WINDOW_FRAMES * VIT_MS + 28 * sum(PREFILL_LAYER_MS[:chunks]) + POST_MS) / 1000 \
            + WINDOW_TOKENS * DECODE_TOKEN_MS / 1000
        return Row(f"window: {WINDOW_FRAMES} frames, {chunks} chunks, {WINDOW_TOKENS} tokens", "s",
                   total("copied", "copied"), total("resident", "resident"),
                   total("model_copied", "model_copied"), total("model_resident", "model_resident"), published)

    def _prefix_tokens(self) -> int:
        from daemon.engine.engine import Engine

        try:
            return Engine(self.model, kv="copied").budget(WINDOW_FRAMES).prefix_tokens
        except VlmwatchError:  # no ViT, or 8 frames do not fit: a full prefill
            return self.geo.max_prompt


def table(report: Report) -> str:
    """The report as the text table `vlmwatch bench` prints."""
    head = (f"{'':40}{'here':>20}{'modelled AX650N':>22}{'published':>11}\n"
            f"{'':40}{'copied':>10}{'resident':>10}{'copied':>11}{'resident':>11}{'AX650N':>11}")
    lines = [f"model {report.model} on {report.backend}; resident KV: {report.resident}", head]
    for r in report.rows:
        cells = "".join(f"{'-' if v is None else f'{v:.3f}' if v < 10 else f'{v:.1f}':>{w}}"
                        for v, w in zip((r.copied, r.resident, r.model_copied, r.model_resident, r.published),
                                        (10, 10, 11, 11, 11)))
        lines.append(f"{r.name + ' (' + r.unit + ')':40}{cells}")
    lines.append(f"published: the InternVL3-2B.axera README (NPU alone); the reference demo's own decode on the"
                 f" 2048 build logs {REFERENCE_TOK_S:.2f} tok/s with whole caches fed")
    return "\n".join(lines)
