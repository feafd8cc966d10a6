"""The Qwen2 LLM as the NPU runs it: one graph per decoder layer, a post graph.

Shape groups (DESIGN section 3), read from the sessions, never assumed:

    group 0   decode:  K/V_cache [1, KV, kvd]  indices [1, 1]  input [1, 1, H]  mask [1, 1, KV+1]
    group 1   prefill: K/V_cache placeholder   indices [1, P]  input [1, P, H]  mask [1, P, P]
    group k   prefill: K/V_cache [1, P(k-1), kvd]              ...              mask [1, P, Pk]

The KV cache is allocated once and written by absolute position. Prefill
chunks are aligned to multiples of P (group k's past is exactly P(k-1) rows),
which is what lets a window's shared prefix be kept: rows before a chunk
boundary never change when a different question follows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daemon.engine.sessions import Session
from daemon.errors import Cancelled, ModelError, PromptTooLongError

BLOCK = -65536.0  # additive mask value that blocks attention (0 attends)


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
    """Runs embeddings through the layer graphs; owns the KV cache."""

    def __init__(self, layers: list[Session], post: Session):
        self.layers, self.post = layers, post
        self.geo = g = Geometry.read(layers[0])
        kv = g.dtypes["K_cache"]
        # KV cache: [1, KV, kvd] per layer, allocated once, written by position.
        self.k = [np.zeros((1, g.kv_len, g.kv_dim), kv) for _ in layers]
        self.v = [np.zeros((1, g.kv_len, g.kv_dim), kv) for _ in layers]
        self._placeholder = np.zeros(g.placeholder, kv)
        self._post_dtype = post.inputs(0)[0].dtype
        self._post_name = post.inputs(0)[0].name
        self._decode_mask = np.full((1, 1, g.kv_len + 1), BLOCK, g.dtypes["mask"])
        self._decode_mask[..., g.kv_len] = 0  # the new token always sees itself
        self._filled = 0  # cache rows 0.._filled-1 hold valid K/V for the current sequence

    def check_fits(self, n_tokens: int, what: str = "prompt") -> None:
        self.geo.check_fits(n_tokens, what)

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
        group = c0 // P + 1
        x = np.zeros((1, P, g.hidden), g.dtypes["input"])  # input: [1, P, H]
        x[0, :valid] = rows
        indices = np.arange(c0, c0 + P, dtype=g.dtypes["indices"]).reshape(1, P)  # [1, P] absolute
        mask = chunk_mask(c0, P, valid, g.dtypes["mask"])  # [1, P, c0 + P]
        for i, layer in enumerate(self.layers):
            past_k = self.k[i][:, :c0] if c0 else self._placeholder
            past_v = self.v[i][:, :c0] if c0 else self._placeholder
            k, v, x = layer.run({"K_cache": past_k, "V_cache": past_v, "indices": indices,
                                 "input": x, "mask": mask}, group)
            self.k[i][0, c0:c0 + valid] = k[0, :valid]
            self.v[i][0, c0:c0 + valid] = v[0, :valid]
        return x

    def decode(self, embed: np.ndarray, pos: int) -> np.ndarray:
        """Run one token at position `pos` through every layer; return its logits."""
        g = self.geo
        if pos >= g.kv_len:
            raise ValueError(f"position {pos} is past the KV capacity {g.kv_len}")
        mask = self._decode_mask
        mask[0, 0, :pos] = 0
        mask[0, 0, pos:g.kv_len] = BLOCK
        x = embed.reshape(1, 1, g.hidden).astype(g.dtypes["input"])  # input: [1, 1, H]
        indices = np.array([[pos]], g.dtypes["indices"])  # [1, 1]
        for i, layer in enumerate(self.layers):
            k, v, x = layer.run({"K_cache": self.k[i], "V_cache": self.v[i], "indices": indices,
                                 "input": x, "mask": mask}, 0)
            self.k[i][0, pos] = k[0, 0]
            self.v[i][0, pos] = v[0, 0]
        self._filled = pos + 1
        return self.logits(x)

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """hidden [1, 1, H] -> logits [vocab] float32."""
        out = self.post.run({self._post_name: hidden.astype(self._post_dtype)}, 0)[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)


def chunk_mask(c0: int, P: int, valid: int, dtype) -> np.ndarray:
    """Causal additive mask for the chunk at positions c0..c0+P-1 over c0 + P keys.

    Row i (position c0+i) sees keys 0..c0+i; padding rows (i >= valid) see nothing.
    """
    keys = np.arange(c0 + P)
    pos = c0 + np.arange(P)[:, None]
    allowed = (keys[None, :] <= pos) & (np.arange(P)[:, None] < valid)
    return np.where(allowed, 0.0, BLOCK).astype(dtype)[None]
