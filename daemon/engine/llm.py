"""The Qwen2 LLM as the NPU runs it: one graph per decoder layer, a post graph.

Shape groups (docs/npu-contract.md), read from the sessions, never assumed:

    group 0   decode:  K/V_cache [1, KV, kvd]  indices [1, 1]  input [1, 1, H]  mask [1, 1, KV+1]
    group 1   prefill: K/V_cache placeholder   indices [1, P]  input [1, P, H]  mask [1, P, P]
    group k   prefill: K/V_cache [1, P(k-1), kvd]              ...              mask [1, P, Pk]

The KV cache is allocated once and written by absolute position: in the NPU
runtime's own input buffers where the backend allows it (resident: a call
writes only its new rows), else in host arrays fed whole with every call.
Prefill chunks are aligned to multiples of P (group k's past is exactly
P(k-1) rows), which is what lets a window's shared prefix be kept: rows
before a chunk boundary never change when a different question follows.
Tokens after an unaligned position go through the decode graph one by one
(`feed`), which is exact at any position.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from daemon.engine.costs import exact_traffic, host_ms, modelled_ms, run_traffic
from daemon.engine.sessions import ResidentUnavailable, Session
from daemon.errors import Cancelled, ModelError, PromptTooLongError

log = logging.getLogger(__name__)

BLOCK = -65536.0  # additive mask value that blocks attention (0 attends)
KV_INPUTS = ("K_cache", "V_cache")  # the inputs that hold the cache, in every shape group
KV_MODES = ("auto", "resident", "copied")


@dataclass(frozen=True)
class Geometry:
    """Numbers read from the layer graphs' declared groups."""

    hidden: int
    kv_dim: int
    kv_len: int  # KV capacity in tokens (2559 on the video build)
    prefill_len: int  # P, tokens per prefill chunk (128)
    groups: int  # prefill groups 1..groups (17 on the video build)
    dtypes: dict[str, np.dtype]  # per input name: what the graphs take
    placeholder: tuple[int, ...]  # group 1's K/V_cache shape (ignored by the graph)

    @property
    def max_prompt(self) -> int:
        return self.prefill_len * self.groups

    def check_fits(self, n_tokens: int, what: str = "prompt") -> None:
        """PromptTooLongError unless `n_tokens` fit one prefill."""
        if n_tokens > self.max_prompt:
            raise PromptTooLongError(
                f"the {what} is {n_tokens} tokens but the model's largest prefill is"
                f" {self.max_prompt} tokens ({self.groups} chunks of {self.prefill_len});"
                " use fewer frames, a shorter question or a shorter system text"
            )

    @classmethod
    def read(cls, layer: Session) -> "Geometry":
        if layer.group_count < 2:
            raise ModelError(f"{layer.name}: a layer graph needs a decode group and prefill groups;"
                             f" it declares {layer.group_count} group(s)")
        decode = {p.name: p for p in layer.inputs(0)}
        first = {p.name: p for p in layer.inputs(1)}
        try:
            _, kv_len, kv_dim = decode["K_cache"].shape
            hidden = decode["input"].shape[-1]
            prefill_len = first["indices"].shape[1]
        except (KeyError, ValueError) as exc:
            raise ModelError(f"{layer.name}: unexpected layer graph inputs ({exc!r}):"
                             f" {[(p.name, p.shape) for p in layer.inputs(0)]}") from None
        geo = cls(hidden, kv_dim, kv_len, prefill_len, layer.group_count - 1,
                  {p.name: p.dtype for p in layer.inputs(0)}, first["K_cache"].shape)
        geo._check(layer)
        return geo

    def _check(self, layer: Session) -> None:
        for k in range(2, self.groups + 1):
            ports = {p.name: p.shape for p in layer.inputs(k)}
            want_mask = (1, self.prefill_len, self.prefill_len * k)
            if ports.get("mask") != want_mask:
                raise ModelError(f"{layer.name}: shape group {k} mask is {ports.get('mask')},"
                                 f" expected {want_mask} for prefill chunks of {self.prefill_len}")
        if self.max_prompt > self.kv_len:
            raise ModelError(f"{layer.name}: prefill groups cover {self.max_prompt} tokens but the"
                             f" KV cache holds only {self.kv_len}")


class LLM:
    """Runs embeddings through the layer graphs; owns the KV cache.

    kv="auto" keeps the cache in the NPU runtime's own input buffers when the
    backend allows it ("resident": each call writes only the new rows), else
    in host arrays fed whole with every call ("copied"); "resident" and
    "copied" force one (a forced "resident" that is unavailable is an error).
    """

    def __init__(self, layers: list[Session], post: Session, kv: str = "auto"):
        self.layers, self.post = layers, post
        self.geo = g = Geometry.read(layers[0])
        cache = g.dtypes["K_cache"]
        self._resident = self._open_resident(kv)
        self.kv_path = "copied" if self._resident is None else "resident"
        if self._resident is None:  # KV cache: [1, KV, kvd] per layer, allocated once, written by position
            self.k = [np.zeros((1, g.kv_len, g.kv_dim), cache) for _ in layers]
            self.v = [np.zeros((1, g.kv_len, g.kv_dim), cache) for _ in layers]
        self._placeholder = np.zeros(g.placeholder, cache)
        self._post_dtype = post.inputs(0)[0].dtype
        self._post_name = post.inputs(0)[0].name
        self._decode_mask = np.full((1, 1, g.kv_len + 1), BLOCK, g.dtypes["mask"])
        self._decode_mask[..., g.kv_len] = 0  # the new token always sees itself
        self._filled = 0  # cache rows 0.._filled-1 hold valid K/V for the current sequence

    def _open_resident(self, kv: str):
        if kv not in KV_MODES:
            raise ModelError(f"unknown KV cache mode {kv!r}: choose one of {', '.join(KV_MODES)}")
        if kv == "copied":
            return None
        try:
            handles = [layer.resident(KV_INPUTS, pinned=kv == "auto") for layer in self.layers]
        except ResidentUnavailable as exc:
            if kv == "resident":
                raise ModelError(f"model.kv (--kv) is 'resident' but the KV cache cannot stay in the runtime's"
                                 f" buffers: {exc}. Use kv: auto (falls back to copying) or kv: copied") from None
            g = self.geo
            per_step = 2 * g.kv_len * g.kv_dim * g.dtypes["K_cache"].itemsize * len(self.layers)
            log.log(logging.DEBUG if exc.expected else logging.WARNING,
                    "KV cache: copied whole into the runtime with every call (%.1f MB per decode step): %s",
                    per_step / 1e6, exc)
            return None
        log.info("KV cache: resident in the NPU runtime's input buffers; each call writes only its new rows")
        return handles

    def check_fits(self, n_tokens: int, what: str = "prompt") -> None:
        self.geo.check_fits(n_tokens, what)

    # ------------------------------------------------------------------ prefill and decode

    def prefill(self, embeds: np.ndarray, start: int, stop=None) -> np.ndarray:
        """Prefill tokens at positions start..start+n-1; return the last token's hidden [1, 1, H].

        embeds: [n, H]. `start` must be a chunk boundary; rows before it must
        already be in the cache (a shared prefix).
        """
        P = self.geo.prefill_len
        n = embeds.shape[0]
        if start % P or start > self._filled:
            raise ValueError(f"prefill must start at a filled chunk boundary, got {start}")
        self.check_fits(start + n)
        hidden = None
        for c0 in range(start, start + n, P):
            valid = min(P, start + n - c0)
            hidden = self._prefill_chunk(embeds[c0 - start:c0 - start + valid], c0)
            if stop is not None and stop.is_set():
                raise Cancelled()
        self._filled = start + n
        return hidden[:, valid - 1:valid, :]

    def _prefill_chunk(self, rows: np.ndarray, c0: int) -> np.ndarray:
        g, P, valid = self.geo, self.geo.prefill_len, rows.shape[0]
        x = np.zeros((1, P, g.hidden), g.dtypes["input"])  # input: [1, P, H]
        x[0, :valid] = rows
        indices = np.arange(c0, c0 + P, dtype=g.dtypes["indices"]).reshape(1, P)  # [1, P] absolute
        mask = chunk_mask(c0, P, valid, g.dtypes["mask"])  # [1, P, c0 + P]
        for i in range(len(self.layers)):
            x = self._layer(i, c0 // P + 1, c0, valid, {"indices": indices, "input": x, "mask": mask})
        return x

    def feed(self, embeds: np.ndarray, start: int, stop=None) -> np.ndarray:
        """Run tokens at positions start..start+n-1 one by one through the decode graph; return the last hidden.

        Any start (no chunk boundary needed): rows before it must be in the cache.
        """
        if start > self._filled or start + embeds.shape[0] > self.geo.kv_len:
            raise ValueError(f"cannot feed {embeds.shape[0]} tokens at {start} ({self._filled} rows cached,"
                             f" capacity {self.geo.kv_len})")
        hidden = None
        for j, row in enumerate(embeds):
            hidden = self._step(row, start + j)
            if stop is not None and stop.is_set():
                raise Cancelled()
        return hidden

    def decode(self, embed: np.ndarray, pos: int) -> np.ndarray:
        """Run one token at position `pos` through every layer; return its logits."""
        return self.logits(self._step(embed, pos))

    def _step(self, embed: np.ndarray, pos: int) -> np.ndarray:
        g = self.geo
        if pos >= g.kv_len:
            raise ValueError(f"position {pos} is past the KV capacity {g.kv_len}")
        mask = self._decode_mask  # [1, 1, KV + 1]: cache rows 0..pos-1, then the token itself
        mask[0, 0, :pos] = 0
        mask[0, 0, pos:g.kv_len] = BLOCK
        x = embed.reshape(1, 1, g.hidden).astype(g.dtypes["input"])  # input: [1, 1, H]
        indices = np.array([[pos]], g.dtypes["indices"])  # [1, 1]
        for i in range(len(self.layers)):
            x = self._layer(i, 0, pos, 1, {"indices": indices, "input": x, "mask": mask})
        self._filled = pos + 1
        return x

    def _layer(self, i: int, group: int, row: int, valid: int, small: dict[str, np.ndarray]) -> np.ndarray:
        """Layer i on shape group `group`; its first `valid` new K/V rows become cache rows row.., hidden out."""
        if self._resident is not None:
            layer = self._resident[i]
            k, v, x = layer.run(small, group)  # K_cache, V_cache: already in the runtime's buffers
            layer.write("K_cache", row, k[0, :valid])
            layer.write("V_cache", row, v[0, :valid])
            return x
        past = self._past_rows(group)
        past_k = self._placeholder if past is None else self.k[i][:, :past]  # [1, past, kvd]
        past_v = self._placeholder if past is None else self.v[i][:, :past]
        k, v, x = self.layers[i].run({"K_cache": past_k, "V_cache": past_v, **small}, group)
        self.k[i][0, row:row + valid] = k[0, :valid]
        self.v[i][0, row:row + valid] = v[0, :valid]
        return x

    def _past_rows(self, group: int) -> int | None:
        """Cache rows group `group` takes: all for decode, P(k-1) for prefill group k, none (placeholder) for 1."""
        if group == 0:
            return self.geo.kv_len
        return None if group == 1 else self.geo.prefill_len * (group - 1)

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """hidden [1, 1, H] -> logits [vocab] float32."""
        out = self.post.run({self._post_name: hidden.astype(self._post_dtype)}, 0)[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)

    # ------------------------------------------------------------------ modelled cost (AX650N)

    def call_ms(self, group: int, rows: int) -> float:
        """Modelled cost of one layer call writing `rows` new K/V rows: NPU time plus host traffic (costs.py)."""
        g, layer = self.geo, self.layers[0]
        card = getattr(layer, "card", False)
        q, itemsize = (1 if group == 0 else g.prefill_len), g.dtypes["K_cache"].itemsize
        out = [q * g.kv_dim * itemsize] * 2 + [q * g.hidden * itemsize]  # new K, new V, hidden
        ports = layer.inputs(group)
        if self._resident is None:  # run(): every input fed, whole buffers flushed and invalidated
            groups = range(g.groups + 1)
            buffers = [max(layer.inputs(k)[i].nbytes for k in groups) for i in range(len(ports))]
            out_buffers = [g.prefill_len * g.kv_dim * itemsize] * 2 + [g.prefill_len * g.hidden * itemsize]
            traffic = run_traffic([p.nbytes for p in ports], buffers, out, out_buffers, card)
        else:  # resident: the small inputs, group 1's placeholder zeros and the new rows; outputs read exactly
            written = sum(p.nbytes for p in ports) if group == 1 else sum(
                p.nbytes for p in ports if p.name not in KV_INPUTS)
            traffic = exact_traffic(written + 2 * rows * g.kv_dim * itemsize, sum(out), card)
        return modelled_ms("layer", group) + host_ms(traffic)

    def prefill_cost(self, start: int, n: int) -> float:
        """Modelled ms of `prefill(n tokens, start)` through every layer (the post graph not included);
        infinite past the largest prefill."""
        P = self.geo.prefill_len
        if start + n > self.geo.max_prompt:
            return float("inf")
        return len(self.layers) * sum(self.call_ms(c0 // P + 1, min(P, start + n - c0))
                                      for c0 in range(start, start + n, P))

    def feed_cost(self, n: int) -> float:
        """Modelled ms of `feed(n tokens)` through every layer (the post graph not included)."""
        return len(self.layers) * n * self.call_ms(0, 1)


def chunk_mask(c0: int, P: int, valid: int, dtype) -> np.ndarray:
    """Causal additive mask for the chunk at positions c0..c0+P-1 over c0 + P keys.

    Row i (position c0+i) sees keys 0..c0+i; padding rows (i >= valid) see nothing.
    """
    keys = np.arange(c0 + P)
    pos = c0 + np.arange(P)[:, None]
    allowed = (keys[None, :] <= pos) & (np.arange(P)[:, None] < valid)
    return np.where(allowed, 0.0, BLOCK).astype(dtype)[None]
