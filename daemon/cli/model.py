"""`vlmwatch check-model`: what a model folder holds, what it can take, or exactly what is missing.

    vlmwatch check-model /opt/vlmwatch/models/InternVL3-2B
    vlmwatch check-model -c /etc/vlmwatch/config.yaml      # model.dir, its system text and frames per window

It finds the layout (board, reference demo or ONNX bundle) and every file,
reads the layer graphs' declared shape groups (from an ONNX bundle's manifest;
for .axmodel files from one session with axengine, on the board) and says the
prefill length, KV capacity and largest prompt, then counts the prompt prefix
of one window (system text and frames) with the model's own tokenizer and
template. Exit 0: all there and a window fits; 1: a window does not fit with
this system text; 2: files missing or unreadable. Nothing is run on the NPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from daemon.errors import ModelError, UsageError


def add_cli(sub) -> None:
    p = sub.add_parser("check-model", help="check a model folder: layout, files, limits, whether a window fits",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", type=Path, metavar="DIR", help="model folder (default: model.dir of -c)")
    p.add_argument("-c", "--config", type=Path, help="take model.dir, model.system and the cameras' frames from it")
    p.add_argument("--tokenizer", type=Path, help="tokenizer folder (reference demo layout only)")
    p.add_argument("--vit", type=Path, help="ViT graph file (reference demo layout only)")
    p.add_argument("--device-id", type=int, help="M.2 card number (AXCLRT provider); omit on the board")
    p.add_argument("--system", help="system text to count (default: the config's, else InternVL's own)")
    p.add_argument("--frames", type=int, help="frames per window (default: the config's largest, else 8)")
    p.set_defaults(func=run)


def run(args) -> int:
    from daemon.engine.bundle import locate

    settings, frames = _settings(args)
    files = locate(settings.dir, settings.tokenizer, settings.vit)
    print(f"model     {settings.dir}")
    print(f"layout    {_layout(files, settings.dir)}")
    size = _size(files)
    print(f"files     {_files(files)}: all present, "
          + (f"{size / 1e9:.2f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"))
    return _report_limits(files, settings, frames)


def _settings(args):
    from daemon.config.model import ModelSettings

    frames = args.frames
    if args.config is not None:
        from daemon.config import load_config

        cfg = load_config(args.config)
        settings = cfg.model.model_copy(update={k: v for k, v in (
            ("dir", args.model), ("tokenizer", args.tokenizer), ("vit", args.vit), ("device_id", args.device_id),
            ("system", args.system)) if v is not None})
        frames = frames or max((c.frames for c in cfg.cameras), default=8)
    elif args.model is None:
        raise UsageError("check-model needs a model folder (DIR) or a config (-c config.yaml)")
    else:
        settings = ModelSettings(dir=args.model, tokenizer=args.tokenizer, vit=args.vit, device_id=args.device_id,
                                 system=args.system)
    if frames is not None and frames < 1:
        raise UsageError(f"--frames must be at least 1, got {frames}")
    return settings, frames or 8


def _layout(files, root: Path) -> str:
    from daemon.engine.bundle import BOARD_LLM

    if files.kind == "onnx":
        return f"ONNX bundle ({files.name}: manifest.json, {len(files.layers)} layer graphs)"
    if files.layers[0].parent == root / BOARD_LLM:
        return f"board ({BOARD_LLM}/, {files.vit.parent.name}/, {files.tokenizer.name}/)" if files.vit else \
            f"board ({BOARD_LLM}/, {files.tokenizer.name}/, no ViT: text only)"
    return "reference demo (layer graphs in the folder" + (", no ViT: text only)" if files.vit is None else ")")


def _files(files) -> str:
    vit = ", ViT graph" if files.vit else ", no ViT graph"
    source = f" ({files.layers_from})" if files.layers_from else ""
    return f"{len(files.layers)} layer graphs{source}, post graph{vit}, embeddings {files.embeddings.name}, tokenizer"


def _size(files) -> int:
    paths = [*files.layers, files.post, files.embeddings, *([files.vit] if files.vit else [])]
    paths += [p for p in files.tokenizer.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in paths)


def _report_limits(files, settings, frames: int) -> int:
    from daemon.engine.bundle import choose_backend, load_embeddings, load_tokenizer
    from daemon.engine.prompt_fit import DEFAULT_SYSTEM, PromptBuilder, PromptFit, declared_layer, image_tokens
    from daemon.engine.llm import Geometry
    from daemon.engine.sessions import import_axengine

    how = "manifest.json" if files.kind == "onnx" else "axengine (first layer graph)"
    if files.kind == "axmodel":
        try:
            import_axengine()
        except ModelError as exc:  # not on the board: the files alone were checked
            print(f"graphs    not read: {exc}")
            print("NOT CHECKED: prefill length, KV capacity and image tokens are declared only to axengine;"
                  " run check-model on the board")
            return 0
    backend = choose_backend(files, settings.backend, "--backend")
    geo = Geometry.read(declared_layer(files, backend, settings.device_id))
    print(f"graphs    read from {how}: decode + {geo.groups} prefill groups of {geo.prefill_len} tokens")
    print(f"limits    largest prompt {geo.max_prompt} tokens, KV cache {geo.kv_len} tokens (prompt and answer),"
          f" hidden size {geo.hidden}")
    table = load_embeddings(files.embeddings, geo.hidden)
    print(f"embedding {table.shape[0]} tokens x {table.shape[1]} ({table.dtype})")
    tokens = image_tokens(files, backend, settings.device_id)
    prompts = PromptBuilder(load_tokenizer(files.tokenizer), tokens, settings.system or DEFAULT_SYSTEM)
    limits = PromptFit(prompts, geo, tokens > 0)
    p = limits.prompts
    print(f"tokenizer <img> {p.img}, </img> {p.img_end}, <IMG_CONTEXT> {p.context}; stop ids {sorted(p.stop_ids)}")
    if not tokens:
        print("frames    no ViT graph: text-only questions")
        return 0
    budget = limits.budget(frames)
    room = geo.max_prompt - limits.prompt_tokens(frames, "")  # the question's own tokens, after the template
    system = "InternVL's default system text" if settings.system is None else f"system text {settings.system!r}"
    print(f"frames    {tokens} image tokens per frame; {frames} frames with {system}:"
          f" prefix {budget.prefix_tokens} of {budget.max_tokens} prompt tokens")
    if room <= 0:
        print(f"DOES NOT FIT: {frames} frames leave no room for a question ({budget.prefix_tokens} prefix tokens"
              f" and the template fill the {geo.max_prompt}-token prompt); use a shorter model.system text"
              " or fewer frames")
        return 1
    print(f"OK: {room} tokens left for each question")
    return 0
