"""The `model:` section of the configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from daemon.config.base import Section


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
    devices: list[Annotated[int, Field(ge=0)] | None] | None = Field(
        None, min_length=1,
        description="Several NPUs, one worker and one engine each: axengine takes M.2 card numbers and null "
        "for the board's own NPU (e.g. [null, 0, 1]); onnxruntime runs one engine per entry, all null. "
        "Unset: one NPU (device_id).")
    tokenizer: Path | None = Field(None, description="Tokenizer folder (reference demo layout only).")
    vit: Path | None = Field(None, description="ViT graph file (reference demo layout only).")
    system: str | None = Field(None, description="System text; unset: InternVL's own. Shorter buys question room.")
    kv: Literal["auto", "resident", "copied"] = Field(
        "auto", description="Where the KV cache lives on the axengine backend: auto keeps it in the NPU runtime's"
        " buffers (only new rows are written) when the pyaxengine version and its internals match, else copies"
        " whole caches with every call and logs why; resident requires it; copied never tries.")
    threads: int = Field(
        1, ge=0, description="onnxruntime backend: CPU threads each graph runs on (0: one per core, ONNX "
        "Runtime's own choice). Idle threads never spin. 1 takes the least CPU for the same answers; more "
        "answers sooner on an idle many-core machine. The NPU runtime ignores it.")
    sampling: SamplingSettings = Field(default_factory=SamplingSettings, description="Decoding.")

    @field_validator("backend", mode="before")
    @classmethod
    def _unset_is_auto(cls, v):
        return "auto" if v is None else v  # `backend:` left empty, or no --backend on the command line

    @model_validator(mode="after")
    def _one_way_to_name_devices(self) -> "ModelSettings":
        if self.devices is not None and self.device_id is not None:
            raise ValueError("give either device_id (one M.2 card) or devices (a list of NPUs), not both")
        cards = [d for d in self.devices or () if d is not None]
        if len(set(cards)) < len(cards):
            raise ValueError(f"devices {self.devices}: each M.2 card may be listed once")
        return self

    @property
    def device_list(self) -> list[int | None]:
        """One entry per NPU worker: a device id (M.2 card), or None (the board's NPU; ONNX Runtime)."""
        return list(self.devices) if self.devices is not None else [self.device_id]

    def for_npu(self, index: int) -> "ModelSettings":
        """The settings of one NPU: entry `index` of `devices` as the only device (itself with one NPU)."""
        if self.devices is None:
            return self
        return self.model_copy(update={"device_id": self.devices[index], "devices": None})

    def device_problem(self, kind: str) -> str | None:
        """Why `devices` does not suit a bundle of `kind` ("axmodel" | "onnx"), or None."""
        backend = self.backend if self.backend != "auto" else ("onnxruntime" if kind == "onnx" else "axengine")
        devices = self.device_list
        if backend == "onnxruntime" and self.devices is not None and any(d is not None for d in devices):
            nulls = ", ".join(["null"] * len(devices))
            return (f"devices {devices}: ONNX Runtime has no device ids; it runs one engine per entry on the CPU,"
                    f" so write devices: [{nulls}]")
        if backend == "axengine" and len(devices) > 1 and devices.count(None) > 1:
            return f"devices {devices}: the board has one NPU of its own; list null at most once"
        return None
