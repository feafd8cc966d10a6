"""The `model:` section of the configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from daemon.settings import Section


class SamplingSettings(Section):
    temperature: float = Field(0.0, ge=0, description="0 is greedy (reproducible); above 0 samples.")
    top_k: int = Field(0, ge=0, description="Sample among the k likeliest tokens (0: all).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (1: off).")
    seed: int | None = Field(None, description="Seed for sampling; unset: different each start.")


class ModelSettings(Section):
    dir: Path = Field(description="Model folder: board layout, reference demo layout or ONNX bundle.")
    backend: Literal["auto", "axengine", "onnxruntime"] = Field(
        "auto", description="Runtime; auto: axengine for .axmodel files, onnxruntime for an ONNX bundle.")
    device_id: int | None = Field(None, ge=0, description="M.2 card number (AXCLRT); unset on the board itself.")
    tokenizer: Path | None = Field(None, description="Tokenizer folder (reference demo layout only).")
    vit: Path | None = Field(None, description="ViT graph file (reference demo layout only).")
    system: str | None = Field(None, description="System text; unset: InternVL's own. Shorter buys question room.")
    kv: Literal["auto", "resident", "copied"] = Field(
        "auto", description="Where the KV cache lives on the axengine backend: auto keeps it in the NPU runtime's"
        " buffers (only new rows are written) when the pyaxengine version and its internals match, else copies"
        " whole caches with every call and logs why; resident requires it; copied never tries.")
    sampling: SamplingSettings = Field(default_factory=SamplingSettings, description="Decoding.")

    @field_validator("backend", mode="before")
    @classmethod
    def _unset_is_auto(cls, v):
        return "auto" if v is None else v  # `backend:` left empty, or no --backend on the command line
