"""Find and open a model bundle: one `--model DIR` in any of three layouts.

1. Board layout (published Axera model repo)::

     DIR/internvl3_2b_axmodel/qwen2_p128_l{i}_together.axmodel, qwen2_post.axmodel,
         model.embed_tokens.weight.bfloat16.bin (or .npy)
     DIR/vit_axmodel/internvl3_2b_vit_slim.axmodel
     DIR/internvl3_2b_tokenizer/

2. Reference demo layout: DIR holds the layer graphs, qwen2_post.axmodel and
   model.embed_tokens.weight.npy; `tokenizer` and `vit` are given explicitly.

3. ONNX bundle written by `vlmwatch export`: DIR/manifest.json names the files
   and declares the shape groups.

Geometry (prefill length, KV capacity, number of groups) is never read from
here: the engine reads it from the sessions.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from daemon.engine.sessions import (
    BACKENDS,
    DEFAULT_ORT_THREADS,
    AxEngineSession,
    Meter,
    OnnxSession,
    Port,
    ProfileSession,
    Session,
)
from daemon.engine.modelfiles import found, layer_count, require
from daemon.errors import ModelError

log = logging.getLogger(__name__)


LAYER_RE = re.compile(r"qwen2_p\d+_l(\d+)_together\.axmodel")  # always fullmatch
BOARD_LLM = "internvl3_2b_axmodel"
BOARD_VIT = "vit_axmodel/internvl3_2b_vit_slim.axmodel"
BOARD_TOKENIZER = "internvl3_2b_tokenizer"
POST_AXMODEL = "qwen2_post.axmodel"
EMBED_BF16 = "model.embed_tokens.weight.bfloat16.bin"
EMBED_NPY = "model.embed_tokens.weight.npy"


@dataclass(frozen=True)
class BundleFiles:
    """Where every part of a model is. `vit` is None for a text-only model."""

    kind: str  # "axmodel" | "onnx"
    layers: tuple[Path, ...]
    post: Path
    embeddings: Path
    tokenizer: Path
    vit: Path | None
    manifest: dict | None = None
    root: Path = Path(".")  # the model folder as given
    layers_from: str = ""  # where the layer count was read (axmodel layouts)

    @property
    def name(self) -> str:
        if self.manifest:
            return self.manifest.get("name", "onnx-bundle")
        return "InternVL3-2B (axmodel)"


@dataclass
class Model:
    """Open sessions plus the tokenizer and the memory-mapped embedding table."""

    name: str
    layers: list[Session]
    post: Session
    vit: Session | None
    embeddings: np.ndarray  # [vocab, hidden], memory-mapped
    tokenizer: object
    meter: Meter
    note: str = ""


def locate(model_dir: Path, tokenizer: Path | None = None, vit: Path | None = None) -> BundleFiles:
    """Resolve every file of the bundle or raise one error that lists all missing paths."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"model directory {model_dir} does not exist or is not a directory")
    if (model_dir / "manifest.json").is_file():
        files = _locate_onnx(model_dir)
    elif (model_dir / BOARD_LLM).is_dir():
        llm = model_dir / BOARD_LLM
        files = _locate_axmodel(llm, tokenizer or model_dir / BOARD_TOKENIZER, vit or model_dir / BOARD_VIT,
                                EMBED_BF16)
    elif any(LAYER_RE.fullmatch(p.name) for p in model_dir.iterdir()):
        if tokenizer is None:
            raise ModelError(
                f"{model_dir} is in the reference demo layout, which has no tokenizer:"
                " give the InternVL3-2B tokenizer folder (model.tokenizer, or --tokenizer DIR)"
            )
        files = _locate_axmodel(model_dir, tokenizer, vit, EMBED_NPY)  # no --vit: text-only questions
    else:
        raise ModelError(
            f"no model found in {model_dir}: expected {model_dir / 'manifest.json'} (ONNX bundle from"
            f" 'vlmwatch export'), {model_dir / BOARD_LLM}/ (board layout) or"
            f" {model_dir}/qwen2_p128_l0_together.axmodel (reference demo layout); found {found(model_dir)}"
        )
    require(files)
    return replace(files, root=model_dir)


def _locate_axmodel(llm: Path, tokenizer: Path, vit: Path | None, embed: str) -> BundleFiles:
    """`embed`: the table's name in this layout when neither form is there (the board ships bfloat16)."""
    found = {int(m.group(1)): p for p in llm.iterdir() if (m := LAYER_RE.fullmatch(p.name))}
    count, source = layer_count([Path(tokenizer), llm, llm.parent])  # the model's own number, not the files'
    layers = tuple(found.get(i, llm / f"qwen2_p128_l{i}_together.axmodel") for i in range(count))
    present = [llm / name for name in (EMBED_BF16, EMBED_NPY) if (llm / name).exists()]
    embeddings = present[0] if present else llm / embed
    return BundleFiles("axmodel", layers, llm / POST_AXMODEL, embeddings, Path(tokenizer),
                       Path(vit) if vit else None, layers_from=source)


def _locate_onnx(model_dir: Path) -> BundleFiles:
    path = model_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
        f = manifest["files"]
        layers = tuple(model_dir / name for name in f["layers"])
        vit = model_dir / f["vit"] if f.get("vit") else None
        return BundleFiles(
            "onnx", layers, model_dir / f["post"], model_dir / f["embeddings"],
            model_dir / f["tokenizer"], vit, manifest,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(
            f"{path} is not a valid vlmwatch ONNX manifest ({exc!r}); re-run 'vlmwatch export'"
        ) from None


def choose_backend(files: BundleFiles, backend: str | None, key: str = "model.backend") -> str:
    """The runtime for a bundle: by default (None or "auto") the one that runs the files it holds.

    An explicit backend must match the files; `key` is where the user chose it, for the message
    (`model.backend` in the config, `--backend` on the command line)."""
    default = "onnxruntime" if files.kind == "onnx" else "axengine"
    if backend in (None, "auto"):
        return default
    if backend not in BACKENDS:
        raise ModelError(f"{key}: unknown backend {backend!r}: choose one of auto, {', '.join(BACKENDS)}")
    wanted = "onnx" if backend == "onnxruntime" else "axmodel"
    if files.kind != wanted:
        holds = "an ONNX bundle" if files.kind == "onnx" else ".axmodel files"
        runs = "ONNX bundles" if wanted == "onnx" else ".axmodel files"
        raise ModelError(f"{key}: the {backend} backend runs {runs} but {files.root} holds {holds}:"
                         f" set {key} to {default}, or to auto (the default) to follow the model folder")
    return backend


def opener(files: BundleFiles, backend: str, device_id: int | None = None, threads: int = DEFAULT_ORT_THREADS):
    """`open(path, role) -> Session` for the bundle's graphs on `backend` (see choose_backend)."""
    if backend == "onnxruntime":
        return _onnx_opener(files, threads)
    return lambda path, role: AxEngineSession(path, device_id)


def open_model(
    files: BundleFiles,
    backend: str | None = None,
    device_id: int | None = None,
    meter: Meter | None = None,
    sleep: bool = False,
    backend_key: str = "--backend",
    threads: int = DEFAULT_ORT_THREADS,
) -> Model:
    """Create every session once, wrapped in a profile meter, and map the embeddings. `threads`: intra-op
    threads of each ONNX Runtime session (0: ONNX Runtime's choice); the NPU runtime ignores it."""
    backend = choose_backend(files, backend, backend_key)
    meter = meter or Meter()
    open_graph = opener(files, backend, device_id, threads)

    def profiled(path: Path, role: str) -> Session:
        card = backend == "axengine" and device_id is not None  # M.2: copies over PCIe, no cache maintenance
        return ProfileSession(open_graph(path, role), role, meter, sleep=sleep, card=card)

    t0 = time.monotonic()
    log.info("loading %d graphs with %s%s", len(files.layers) + 1 + bool(files.vit), backend,
             " (on the board this takes about a minute)" if backend == "axengine" else "")
    layers = []
    for i, p in enumerate(files.layers, 1):
        layers.append(profiled(p, "layer"))
        if i % 7 == 0 or i == len(files.layers):
            log.info("loaded %d/%d decoder layers", i, len(files.layers))
    post = profiled(files.post, "post")
    vit = profiled(files.vit, "vit") if files.vit else None
    log.info("model %s ready in %.1f s", files.name, time.monotonic() - t0)
    hidden = layers[0].inputs(0)[_index(layers[0].inputs(0), "input")].shape[-1]
    note = (files.manifest or {}).get("note", "")
    embeddings, tokenizer = load_embeddings(files.embeddings, hidden), load_tokenizer(files.tokenizer)
    check_vocabulary(files, post.outputs(0)[0].shape[-1], embeddings.shape[0], len(tokenizer))
    return Model(files.name, layers, post, vit, embeddings, tokenizer, meter, note)


def check_vocabulary(files: BundleFiles, logits: int, rows: int, tokens: int) -> None:
    """The post graph scores as many tokens as the embedding table has rows, and every token the tokenizer
    makes has both; otherwise the folder mixes files of two models, which would answer garbage."""
    where = files.post.parent
    if logits > 0 and logits != rows:
        raise ModelError(f"{where}: the post graph {files.post.name} scores {logits} tokens but the embedding table "
                         f"{files.embeddings.name} has {rows} rows: the files come from different models; copy "
                         "the whole model folder from one source")
    if tokens > rows:
        raise ModelError(f"{where}: the tokenizer {files.tokenizer} knows {tokens} tokens but the embedding table "
                         f"{files.embeddings.name} has only {rows} rows: it belongs to another model; use the "
                         "tokenizer that came with these graphs")


def layer_ports(files: BundleFiles) -> list[list[Port]]:
    """The decoder layers' shape groups an ONNX manifest declares."""
    try:
        return [[Port.from_json(d) for d in g] for g in files.manifest["layer_groups"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"ONNX manifest declares bad shape groups ({exc!r}); re-run 'vlmwatch export'") from None


def _onnx_opener(files: BundleFiles, threads: int = DEFAULT_ORT_THREADS):
    ports = manifest_ports(files)
    return lambda path, role: OnnxSession(path, ports[role], threads)


def manifest_ports(files: BundleFiles) -> dict[str, list[list[Port]] | None]:
    """Declared inputs per role ("layer", "post", "vit") and shape group, from an ONNX bundle's manifest."""
    m = files.manifest
    layer_groups = layer_ports(files)
    try:
        post_ports = [[Port.from_json(d) for d in m["post_inputs"]]]
        vit_ports = [[Port.from_json(d) for d in m["vit_inputs"]]] if files.vit else None
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"ONNX manifest declares bad shape groups ({exc!r}); re-run 'vlmwatch export'") from None
    return {"layer": layer_groups, "post": post_ports, "vit": vit_ports}


def _index(ports: list[Port], name: str) -> int:
    for i, p in enumerate(ports):
        if p.name == name:
            return i
    raise ModelError(f"graph declares no input named {name!r} (it has {[p.name for p in ports]})")


def load_embeddings(path: Path, hidden: int) -> np.ndarray:
    """Memory-map the table: the real one is 0.93 GB (float32) and must not be read in."""
    try:
        if path.suffix == ".npy":
            table = np.load(path, mmap_mode="r")
        else:  # raw bfloat16 [vocab, hidden]
            import ml_dtypes

            size = path.stat().st_size
            if size % (2 * hidden):
                raise ModelError(
                    f"{path}: {size} bytes is not a whole number of bfloat16 rows of width {hidden};"
                    " the file is truncated or belongs to another model"
                )
            table = np.memmap(path, dtype=ml_dtypes.bfloat16, mode="r", shape=(size // (2 * hidden), hidden))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the embedding table {path}: {exc}") from None
    if table.ndim != 2 or table.shape[1] != hidden:
        raise ModelError(
            f"{path}: embedding table has shape {table.shape} but the layer graphs take hidden size {hidden}"
        )
    return table


def load_tokenizer(path: Path):
    """The tokenizer with the `tokenizers` library alone, from tokenizer.json or from a Qwen2 folder's vocab.json
    and merges.txt; transformers only for any other folder (its AutoTokenizer imports torch where installed)."""
    folder = Path(path)
    if (folder / "tokenizer.json").is_file() or all((folder / f).is_file() for f in ("vocab.json", "merges.txt")):
        return JsonTokenizer.load(folder)
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ModelError(f"{path} holds neither tokenizer.json nor vocab.json and merges.txt: copy the model's"
                         " tokenizer files there (pip install transformers reads other tokenizer formats)") from None
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # transformers raises many kinds
        raise ModelError(f"cannot load the tokenizer from {path}: {exc}") from None


class JsonTokenizer:
    """A `tokenizers.Tokenizer` with the part of transformers' tokenizer API the engine uses.

    Special tokens come from tokenizer_config.json (a string or an AddedToken dict).
    Decoding matches transformers 5, which skips its space clean-up for BPE models."""

    def __init__(self, backend, eos_token: str | None, unk_token: str | None):
        self.backend = backend
        self.eos_token_id = self.convert_tokens_to_ids(eos_token) if eos_token else None
        self.unk_token_id = self.convert_tokens_to_ids(unk_token) if unk_token else None

    @classmethod
    def load(cls, folder: Path) -> "JsonTokenizer":
        from tokenizers import Tokenizer

        try:
            config_path = folder / "tokenizer_config.json"
            config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
            if (folder / "tokenizer.json").is_file():
                backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
            else:
                backend = _qwen2_bpe(folder, config)
        except ModelError:
            raise
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ModelError(f"cannot load the tokenizer from {folder}: {exc}") from None

        def token(key: str) -> str | None:
            value = config.get(key)
            return value.get("content") if isinstance(value, dict) else value

        return cls(backend, token("eos_token"), token("unk_token"))

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def __len__(self) -> int:
        """Tokens it knows, added ones included (as `len()` of a transformers tokenizer)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)


QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _qwen2_bpe(folder: Path, config: dict):
    """What transformers' Qwen2Tokenizer builds from vocab.json and merges.txt (InternVL3-2B's own tokenizer
    folder has no tokenizer.json): NFC, Qwen2's split regex, byte-level BPE, then the added tokens at their ids."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    bpe = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token=None, continuing_subword_prefix="",
                        end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    added = {int(i): d for i, d in (config.get("added_tokens_decoder") or {}).items()}
    if (folder / "added_tokens.json").is_file():
        for content, i in json.loads((folder / "added_tokens.json").read_text(encoding="utf-8")).items():
            added.setdefault(int(i), {"content": content})
    for i in sorted(added):  # added tokens follow the vocabulary in id order
        d = added[i]
        bpe.add_tokens([AddedToken(d["content"], special=d.get("special", True), lstrip=d.get("lstrip", False),
                                   rstrip=d.get("rstrip", False), normalized=d.get("normalized", False),
                                   single_word=d.get("single_word", False))])
        if bpe.token_to_id(d["content"]) != i:
            raise ModelError(f"{folder}: added token {d['content']!r} should have id {i} but gets"
                             f" {bpe.token_to_id(d['content'])}; the vocab.json and the added tokens do not match")
    return bpe
