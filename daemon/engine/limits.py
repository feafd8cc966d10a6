"""What a model can take, without loading it: the graphs' declared groups and the tokenizer.

    limits = open_limits(settings)           # no session for an ONNX bundle; one layer graph for axmodels
    limits.limits, limits.budget(8)          # the same numbers Engine gives, from the same code
    limits.prompt_tokens(0, question)        # exact prompt sizes with the engine's template

`summarize --dry-run` plans with it (no model call, so no model load) and
`check-model` reports it. An ONNX bundle declares every group in its manifest;
an .axmodel declares them only to the runtime, so the first layer graph is
opened with axengine (one session instead of 30).
"""

from __future__ import annotations

from typing import Sequence

from daemon.engine.bundle import BundleFiles, load_tokenizer, manifest_ports
from daemon.engine.engine import Budget, Limits
from daemon.engine.llm import Geometry
from daemon.engine.prompt import DEFAULT_SYSTEM, PromptBuilder
from daemon.engine.sessions import AxEngineSession, OnnxSession, Port
from daemon.engine.settings import ModelSettings
from daemon.errors import ModelError


class DeclaredGraph:
    """A graph known by its declared inputs only (from a manifest): enough for Geometry, never run."""

    def __init__(self, name: str, groups: list[list[Port]]):
        self.name, self._groups, self.group_count = name, groups, len(groups)

    def inputs(self, group: int = 0) -> list[Port]:
        return self._groups[group]

    def outputs(self, group: int = 0) -> list[Port]:
        raise ModelError(f"{self.name}: outputs are not declared in the manifest")

    def run(self, feeds, group: int = 0):
        raise ModelError(f"{self.name}: a declared graph cannot run; open the model to run it")


def declared_layer(files: BundleFiles, device_id: int | None = None):
    """The first layer graph's declared groups: from the manifest, or one axengine session."""
    if files.kind == "onnx":
        return DeclaredGraph(files.layers[0].name, manifest_ports(files)["layer"])
    return AxEngineSession(files.layers[0], device_id)


def image_tokens(files: BundleFiles, device_id: int | None = None) -> int:
    """Tokens per frame the ViT graph gives (0 without a ViT): declared in newer manifests, else read
    from the graph's declared output."""
    if files.vit is None:
        return 0
    declared = (files.manifest or {}).get("vit_outputs")
    if declared:
        return int(declared[0]["shape"][1])
    if files.kind == "onnx":
        session = OnnxSession(files.vit, manifest_ports(files)["vit"])
    else:
        session = AxEngineSession(files.vit, device_id)
    shape = session.outputs(0)[0].shape
    if len(shape) != 3:
        raise ModelError(f"{files.vit.name}: ViT output shape {shape} is not [1, tokens, hidden]")
    return int(shape[1])


class PromptLimits:
    """The engine's prompt arithmetic (limits, budget, prompt_tokens, tokenize, detokenize) without sessions."""

    def __init__(self, tokenizer, geometry: Geometry, tokens_per_frame: int, system: str | None = None):
        self.geo = geometry
        self.prompts = PromptBuilder(tokenizer, tokens_per_frame, system or DEFAULT_SYSTEM)

    @property
    def limits(self) -> Limits:
        g = self.geo
        return Limits(g.max_prompt, g.kv_len, g.prefill_len)

    def budget(self, n_frames: int) -> Budget:
        return Budget(len(self.prompts.prefix(n_frames)), self.geo.max_prompt)

    def prompt_tokens(self, n_frames: int, question: str) -> int:
        return len(self.prompts.prefix(n_frames)) + len(self.prompts.suffix(question))

    def tokenize(self, text: str) -> list[int]:
        return self.prompts.encode(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.prompts.decode(ids)


def open_limits(files: BundleFiles, settings: ModelSettings, frames: bool = True) -> PromptLimits:
    """PromptLimits of the model in `files`; `frames=False` skips the ViT (text-only planning)."""
    geometry = Geometry.read(declared_layer(files, settings.device_id))
    tokens = image_tokens(files, settings.device_id) if frames else 0
    return PromptLimits(load_tokenizer(files.tokenizer), geometry, tokens, settings.system)
