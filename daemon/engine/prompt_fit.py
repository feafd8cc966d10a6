"""Whether prompts fit the model, decided from its tokenizer and the limits its graphs declare.

    fit = probe(settings)       # the tokenizer and the graphs that declare the limits; no decoder stack
    fit.check(8, Prompt("description", "Describe what happens."), "description of camera porch")

The engine holds a `PromptFit` made from its open graphs and checks every
prompt with it before spending NPU time. `probe` makes the same object for
`vlmwatch check-config`, so that a config it calls OK cannot fail on its first
window: it loads the tokenizer and reads the limits from the graphs that
declare them, the first decoder layer (prefill chunk, number of groups, KV
capacity) and the ViT (tokens per frame). An ONNX bundle's manifest declares
the layer groups, so only its ViT graph is opened; on the board axengine loads
those two graphs (seconds, where the whole model takes about a minute).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from daemon.config.model import ModelSettings
from daemon.engine.bundle import BundleFiles, choose_backend, layer_ports, load_tokenizer, locate, opener
from daemon.engine.llm import Geometry
from daemon.engine.prompt import DEFAULT_SYSTEM, PromptBuilder
from daemon.engine.sessions import Port
from daemon.engine.vision import Vision
from daemon.errors import ChoiceError, ModelError
from daemon.types import Prompt

NO_VIT = ("this model has no ViT graph, so it cannot look at frames:"
          " give it the ViT graph, internvl3_2b_vit_slim.axmodel (model.vit, or --vit FILE),"
          " or ask a text-only question")


@dataclass(frozen=True)
class Budget:
    prefix_tokens: int
    max_tokens: int

    @property
    def question_room(self) -> int:
        return self.max_tokens - self.prefix_tokens


@dataclass(frozen=True)
class Limits:
    """What the model can take, read from its graphs."""

    max_prompt: int  # tokens one prefill can hold
    kv_len: int  # tokens the KV cache holds, prompt and answer together
    prefill_len: int  # tokens per prefill chunk


class PromptFit:
    """Token counts and limits: every check the engine makes before it runs a prompt."""

    def __init__(self, prompts: PromptBuilder, geo: Geometry, vision: bool):
        self.prompts, self.geo, self.vision = prompts, geo, vision

    @property
    def limits(self) -> Limits:
        return Limits(self.geo.max_prompt, self.geo.kv_len, self.geo.prefill_len)

    def budget(self, n_frames: int) -> Budget:
        return Budget(len(self.prompts.prefix(n_frames)), self.geo.max_prompt)

    def prompt_tokens(self, n_frames: int, question: str) -> int:
        """Tokens of the whole prompt for `question` about `n_frames` frames."""
        return len(self.prompts.prefix(n_frames)) + len(self.prompts.suffix(question))

    def tokenize(self, text: str) -> list[int]:
        return self.prompts.encode(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.prompts.decode(ids)

    def check_frames(self, n_frames: int) -> None:
        """ModelError when frames are given to a model without a ViT."""
        if n_frames and not self.vision:
            raise ModelError(NO_VIT)

    def check_prefix(self, n_frames: int, what: str) -> None:
        """PromptTooLongError unless the system text and `n_frames` frames leave room for a question."""
        self.check_frames(n_frames)
        self.geo.check_fits(len(self.prompts.prefix(n_frames)) + len(self.prompts.suffix("")), what)

    def check(self, n_frames: int, prompt: Prompt, what: str | None = None) -> None:
        """A QuestionError unless `prompt` can be answered about `n_frames` frames."""
        self.geo.check_fits(self.prompt_tokens(n_frames, prompt.question), what or f"prompt {prompt.id!r}")
        if prompt.choices:
            self.choice_tokens(prompt.choices)

    def choice_tokens(self, choices: Sequence[str]) -> dict[str, set[int]]:
        """First token ids of each choice as written, lower-case and capitalised; must not overlap."""
        out: dict[str, set[int]] = {}
        owner: dict[int, str] = {}
        for c in choices:
            ids = set()
            for variant in {c, c.lower(), c.capitalize()}:
                enc = self.prompts.encode(variant)
                if enc:
                    ids.add(enc[0])
            if not ids:
                raise ChoiceError(f"choice {c!r} is empty after tokenisation; give a word")
            for t in ids:
                if t in owner and owner[t] != c:
                    raise ChoiceError(f"choices {owner[t]!r} and {c!r} start with the same token"
                                      f" ({self.prompts.decode([t])!r}), so they cannot be told apart"
                                      " from one step; reword one of them")
                owner[t] = c
            out[c] = ids
        return out


def probe(settings: ModelSettings, backend_key: str = "model.backend", frames: bool = True) -> PromptFit:
    """The `PromptFit` of the model `settings` name, without loading the decoder stack; `frames=False`
    skips the ViT too (text-only planning, e.g. `summarize --dry-run`).

    ModelError (missing files, wrong backend, a tokenizer or graph that does not load), as
    `open_engine` would raise it."""
    files = locate(settings.dir, settings.tokenizer, settings.vit)
    backend = choose_backend(files, settings.backend, backend_key)
    tokenizer = load_tokenizer(files.tokenizer)
    geo = Geometry.read(declared_layer(files, backend, settings.device_id))
    tokens = image_tokens(files, backend, settings.device_id) if frames else 0
    prompts = PromptBuilder(tokenizer, tokens, settings.system or DEFAULT_SYSTEM)
    return PromptFit(prompts, geo, files.vit is not None)


def declared_layer(files: BundleFiles, backend: str, device_id: int | None = None):
    """The first decoder layer's declared groups: an ONNX manifest declares them (no graph is loaded);
    an .axmodel declares them only to the runtime, so that one graph is opened (not all 30)."""
    if files.kind == "onnx":
        return _DeclaredLayer(files)
    return opener(files, backend, device_id)(files.layers[0], "layer")


def image_tokens(files: BundleFiles, backend: str, device_id: int | None = None) -> int:
    """Tokens per frame the ViT gives (0 without one): declared in newer manifests, else read from the
    ViT graph's declared output."""
    if files.vit is None:
        return 0
    declared = (files.manifest or {}).get("vit_outputs")
    if declared:
        return int(declared[0]["shape"][1])
    return Vision(opener(files, backend, device_id)(files.vit, "vit")).tokens


class _DeclaredLayer:
    """A decoder layer as an ONNX manifest declares it: the groups, without loading the graph
    (ONNX Runtime sessions take their groups from the same manifest)."""

    def __init__(self, files: BundleFiles):
        self.name = files.layers[0].name
        self._groups: list[list[Port]] = layer_ports(files)
        self.group_count = len(self._groups)

    def inputs(self, group: int = 0) -> list[Port]:
        return self._groups[group]
