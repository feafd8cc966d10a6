"""Whether a model folder's files are the model's, before any runtime reads them.

A download can go wrong in ways a file listing does not show: a git clone without
git-lfs leaves ~130-byte pointer files under the real names, an interrupted copy
leaves a short file, a partial `hf download` leaves out the last layers. So the
number of layers comes from the model's own config (the board layout's tokenizer
folder holds InternVL's config.json; an ONNX bundle's manifest lists its layers),
never from the files present, and every graph is checked for being a graph at all.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from daemon.errors import ModelError

LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
INTERNVL3_2B_LAYERS = 28  # Qwen2-1.5B inside InternVL3-2B: the board layout's folder names this model
# A compiled InternVL3-2B graph is tens to hundreds of MB; these floors catch pointers and placeholders
# (and leave room for the tests' tiny graphs), truncated_layers catches a copy cut off later.
MIN_AXMODEL = 64 * 1024
MIN_ONNX = 1024  # even the tiny random test model's graphs are 150 kB
TRUNCATED = 0.5  # a layer graph under half the median of its siblings is a cut-off copy


def declared_layers(config_dirs: list[Path]) -> tuple[int, str] | None:
    """(layer count, where it was read) from the first config.json that states one."""
    for folder in config_dirs:
        path = folder / "config.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for section in ("llm_config", "text_config", None):
            node = config.get(section) if section else config
            count = node.get("num_hidden_layers") if isinstance(node, dict) else None
            if isinstance(count, int) and count > 0:
                key = f"{section}.num_hidden_layers" if section else "num_hidden_layers"
                return count, f"{key} in {path}"
    return None


def layer_count(config_dirs: list[Path]) -> tuple[int, str]:
    """The model's layer count: its config's, else InternVL3-2B's."""
    return declared_layers(config_dirs) or (INTERNVL3_2B_LAYERS, "InternVL3-2B's; no config.json states a count")


def file_problem(path: Path, kind: str) -> str | None:
    """Why `path` cannot be the graph or table it is named as (`kind`: axmodel, onnx, table), or None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(len(LFS_POINTER))
    except OSError as exc:
        return f"{path}: cannot read it ({exc.strerror or exc})"
    if head == LFS_POINTER:
        return (f"{path}: a git-lfs pointer ({size} bytes), not the file: the download fetched the pointers only;"
                " run `git lfs pull` in that clone, or download with `hf download`")
    floor = {"axmodel": MIN_AXMODEL, "onnx": MIN_ONNX}.get(kind, MIN_ONNX)
    if size < floor:
        return f"{path}: {size} bytes, too small for {'a compiled' if kind == 'axmodel' else 'an'} {kind} file" \
               f" (at least {floor // 1024} kB); the download is incomplete: fetch it again"
    return None


def truncated_layers(layers: tuple[Path, ...]) -> list[str]:
    """Layer graphs much smaller than their siblings (all layers of a model have one shape)."""
    sizes = {p: p.stat().st_size for p in layers if p.is_file()}
    if len(sizes) < 3:
        return []
    median = statistics.median(sizes.values())
    return [f"{p}: {size:,} bytes, under half the other layer graphs' {int(median):,}: a cut-off download;"
            " fetch it again" for p, size in sizes.items() if size < TRUNCATED * median]


def found(folder: Path) -> str:
    """What a folder holds, in one line: layer graphs as ranges, other files with sizes."""
    if not folder.is_dir():
        return f"{folder}: no such folder"
    layers, others = [], []
    for p in sorted(folder.iterdir()):
        m = re.fullmatch(r"qwen2_p\d+_l(\d+)_together\.axmodel", p.name)
        if m:
            layers.append(int(m.group(1)))
        else:
            others.append(f"{p.name}/" if p.is_dir() else f"{p.name} ({_size(p.stat().st_size)})")
    parts = [f"layer graphs l{ranges(layers)} ({len(layers)})"] if layers else []
    return f"{folder}: " + ", ".join(parts + others) if parts or others else f"{folder}: empty"


def ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    out, numbers = [], sorted(numbers)
    start = prev = numbers[0] if numbers else None
    for n in numbers[1:] + [None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = n
    return ", ".join(out)


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} byte{'' if n == 1 else 's'}"


def require(files) -> None:
    """Every file of a located bundle (`bundle.BundleFiles`) there and plausibly what it is named (no
    git-lfs pointer, no cut-off copy), or one ModelError listing each problem, then what the folders hold."""
    graphs = [*files.layers, files.post, *([files.vit] if files.vit is not None else [])]
    missing = [str(p) for p in [*files.layers, files.post, files.embeddings] if not p.is_file()]
    missing += [str(files.vit)] if files.vit is not None and not files.vit.is_file() else []
    if not (files.tokenizer / "tokenizer.json").is_file() and not (files.tokenizer / "tokenizer_config.json").is_file():
        missing.append(f"{files.tokenizer}/tokenizer.json")
    kind = "axmodel" if files.kind == "axmodel" else "onnx"
    bad = [problem for p in graphs if p.is_file() and (problem := file_problem(p, kind))]
    if files.embeddings.is_file() and (problem := file_problem(files.embeddings, "table")):
        bad.append(problem)
    bad += truncated_layers(files.layers) if not bad else []
    if missing or bad:
        folders = dict.fromkeys(p.parent for p in [*files.layers, files.post, *([files.vit] if files.vit else [])])
        folders[files.tokenizer] = None
        layers = f" ({len(files.layers)} layer graphs expected: {files.layers_from})" if files.layers_from else ""
        raise ModelError(
            "model files are missing or unreadable" + layers + ":\n  " + "\n  ".join(missing + bad)
            + "\nFound:\n  " + "\n  ".join(found(folder) for folder in folders)
            + "\nCheck the model folder (model.dir, model.tokenizer, model.vit; or --model, --tokenizer, --vit),"
            " or copy the complete model folder."
        )
