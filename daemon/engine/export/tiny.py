"""A tiny random InternVL for tests and demos: builds offline in seconds.

`vlmwatch make-tiny-model OUT` writes OUT/hf/ (a transformers checkpoint and
tokenizer: the numerical reference) and exports it into OUT/ as an ONNX
bundle with `daemon.export.export_bundle`. The weights are random, so the
text it generates is meaningless; what matters is that the exported graphs
reproduce transformers exactly and that every shape, token and special id
behaves like the real InternVL3-2B, only smaller.

Tokenizer: byte-level BPE (like Qwen2, so any text encodes without an unknown
token) trained on the paragraphs below, then the special tokens in Qwen2 /
InternVL order. Choices, as in Qwen2 chat models and InternVL3-hf:
eos = `<|im_end|>` (ends an assistant turn), pad = `<|endoftext|>`, no bos;
generation stops on either (generation_config.eos_token_id lists both).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from daemon.engine.export.export import (
    Progress,
    check_bundle_numbers,
    check_out_dir,
    export_bundle,
    require_torch,
)

# Qwen2's specials, then InternVL's, in the order the real vocabulary has them.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
)
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
IMAGE_TOKEN = "<IMG_CONTEXT>"
BPE_VOCAB = 1000  # byte alphabet + merges; the specials come on top

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Tiny sizes: the real model's shape, scaled down. The vision tower sees a
# 64x64 frame in 8x8 patches = 64 patches; pixel shuffle 0.5 -> 16 tokens.
VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=64,
              patch_size=8)
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, initializer_range=0.1)
# initializer_range 0.1 (transformers' default is 0.02) spreads the random
# logits, so greedy decoding rarely meets a near tie that float32 rounding
# could flip between ONNX Runtime and torch.

CORPUS = """\
A camera watches the front door of a small house. In the morning the street is quiet: a cat crosses the lawn,
a delivery van stops for a minute, and a man in a blue jacket leaves a parcel on the step. The light changes
slowly as the sun climbs over the roofs, and the shadows of the trees move across the path.

In the kitchen a second camera looks at the table and the window. A woman makes coffee, reads a letter and
puts two cups in the sink. Later a child comes in with a red backpack, opens the fridge and takes an apple.
Nothing is wrong in this scene; it is an ordinary day, and the system should say so in one short sentence.

The garage camera sees a car, a bicycle leaning against the wall and a stack of boxes. At night the motion
sensor turns on the lamp. If a person walks in after midnight, the watcher sends an alert with a snapshot of
the frame, the time and the name of the rule that fired. If the door stays open for more than ten minutes,
it asks again and reports whether anyone is still there.

Rain falls on the garden behind the house. The dog runs to the fence, barks at a neighbour and comes back to
the door, wet and happy. A fox appears near the bushes at dusk, looks around and disappears. The summary at
the end of the day counts the people, the animals and the vehicles that each camera saw, hour by hour.

Describe what happens in the video. Is there a person in the frame? Is the door open or closed? How many
cars are parked in the driveway? What colour is the jacket? Answer yes or no. Where is the package now? Who
is at the gate, and what are they carrying? Is the window broken? Is there smoke or fire anywhere?

The model looks at eight frames taken from a short window of time, in order, from the first to the last.
It writes a description of the scene, then answers each question about the same frames. Its answers are
published to a message broker, where home automation can switch on lights, lock a door or send a message
to a phone. Every step is logged, so a user can later check why an alert was raised and what the model saw.

Winter mornings are dark. Snow covers the steps, and the postman leaves footprints from the gate to the
letter box. A plough passes at seven, its orange light flashing across the walls. Children in heavy coats
wait for the school bus at the corner, throwing snowballs at each other until it arrives.

On a busy Saturday the driveway fills with visitors. Grandparents arrive with flowers and a cake, cousins
bring footballs, and somebody forgets an umbrella on the bench by the porch. The watcher notices a stranger
lingering beside the hedge, but the debounce rule waits for three consecutive windows before it publishes
anything, and by then the stranger has simply collected a lost glove and walked away toward the bakery.

Weekly summaries group the events by camera: deliveries, visitors, pets, vehicles, unusual sounds reported
by neighbours, lights left burning, gates left unlatched. Operators prefer brief, concrete sentences with
numbers and times rather than vague impressions, because automation reacts quickly to precise statements.
Quiet nights produce almost nothing to report, which is exactly the point of a careful, patient observer.
"""


def build_bpe() -> Any:
    """Byte-level BPE trained on CORPUS, with the Qwen2 / InternVL special tokens after the learned vocabulary.

    Needs only the `tokenizers` library (a `tokenizers.Tokenizer`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(CORPUS.split("\n\n"), trainer=trainer)
    bpe.add_special_tokens(list(SPECIAL_TOKENS))  # ids follow the learned vocabulary, in Qwen2's order
    return bpe


def build_tokenizer() -> Any:
    """The BPE as a transformers tokenizer (for the transformers reference model and its export)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=build_bpe(),
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in (EOS_TOKEN, PAD_TOKEN)],
        model_max_length=32768,
        chat_template=CHAT_TEMPLATE,
    )


def write_tokenizer(folder: Path) -> None:
    """The tokenizer files `build_tokenizer().save_pretrained(folder)` writes, without transformers."""
    folder.mkdir(parents=True, exist_ok=True)
    build_bpe().save(str(folder / "tokenizer.json"))
    config = {"eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN,
              "extra_special_tokens": [t for t in SPECIAL_TOKENS if t not in (EOS_TOKEN, PAD_TOKEN)],
              "model_max_length": 32768, "tokenizer_class": "TokenizersBackend"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)


def build_model(tokenizer: Any, seed: int) -> Any:
    """A random InternVLForConditionalGeneration sized like InternVL3-2B in miniature; same seed, same weights."""
    import torch
    from transformers import (
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLVisionConfig,
        Qwen2Config,
    )

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vision = InternVLVisionConfig(**VISION)
    text = Qwen2Config(vocab_size=len(tokenizer), bos_token_id=ids[PAD_TOKEN], eos_token_id=ids[EOS_TOKEN], **TEXT)
    tokens_per_frame = (VISION["image_size"] // VISION["patch_size"]) ** 2 // 4  # pixel shuffle 0.5
    config = InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=ids[IMAGE_TOKEN],
        image_seq_length=tokens_per_frame,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):  # seed our weights without moving the caller's RNG
        torch.manual_seed(seed)
        model = InternVLForConditionalGeneration(config).eval()
        # transformers zero-initialises the ViT's position embeddings and CLS token;
        # random ones make the exported vit graph's use of them testable.
        embeddings = model.model.vision_tower.embeddings
        with torch.no_grad():
            embeddings.position_embeddings.normal_(std=0.5)
            embeddings.cls_token.normal_(std=0.5)
    model.generation_config.eos_token_id = [ids[EOS_TOKEN], ids[PAD_TOKEN]]
    model.generation_config.pad_token_id = ids[PAD_TOKEN]
    return model


def make_tiny_model(
    out_dir: Path | str, seed: int = 0, prefill_len: int = 16, kv_len: int = 320, groups: int = 16,
    progress: Progress = print,
) -> Path:
    """Build the tiny model, export its bundle into `out_dir`, save the transformers reference in `out_dir`/hf."""
    check_bundle_numbers(prefill_len, kv_len, groups)
    require_torch("make-tiny-model (it writes the transformers reference too)")
    out = Path(out_dir)
    check_out_dir(out, keep=("hf",))
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed)
    note = f"tiny random model (seed {seed}): its text is meaningless; for tests and demos only"
    export_bundle(model, tokenizer, out, prefill_len, kv_len, groups, f"vlmwatch-tiny-internvl-seed{seed}", note,
                  progress=progress, keep=("hf",))
    hf = out / "hf"
    if hf.exists():
        shutil.rmtree(hf)
    _save_quietly(model, tokenizer, hf)
    return out


def _save_quietly(model: Any, tokenizer: Any, path: Path) -> None:
    """save_pretrained without transformers' progress bar, which clutters a command that takes seconds."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


# ---------------------------------------------------------------- without torch (the demo's model)


def tiny_config(vocab: int) -> dict[str, Any]:
    """The tiny model's config as transformers' InternVLConfig.to_dict() has it (the keys the graphs need)."""
    return {"vision_config": {**VISION, "layer_norm_eps": 1e-6}, "text_config": {**TEXT, "vocab_size": vocab},
            "downsample_ratio": 0.5}


def random_weights(config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Random weights under transformers' state-dict names, shaped like build_model's (numpy only)."""
    import numpy as np

    vision, text = config["vision_config"], config["text_config"]
    d, H, V = vision["hidden_size"], text["hidden_size"], text["vocab_size"]
    kvd = text["num_key_value_heads"] * (H // text["num_attention_heads"])
    patch, std = vision["patch_size"], text["initializer_range"]
    rng = np.random.default_rng(seed)
    w: dict[str, Any] = {}

    def normal(name: str, shape: tuple, scale: float = std) -> None:
        w[name] = rng.normal(0.0, scale, shape).astype(np.float32)

    def linear(name: str, out: int, inp: int, bias: bool = True) -> None:
        normal(f"{name}.weight", (out, inp))
        if bias:
            normal(f"{name}.bias", (out,))

    def norm(name: str, size: int, bias: bool = True) -> None:
        w[f"{name}.weight"] = (1.0 + rng.normal(0.0, 0.1, size)).astype(np.float32)
        if bias:
            normal(f"{name}.bias", (size,))

    e = "model.vision_tower.embeddings."
    normal(e + "cls_token", (1, 1, d), 0.5)
    normal(e + "position_embeddings", (1, (vision["image_size"] // patch) ** 2 + 1, d), 0.5)
    normal(e + "patch_embeddings.projection.weight", (d, 3, patch, patch))
    normal(e + "patch_embeddings.projection.bias", (d,))
    for i in range(vision["num_hidden_layers"]):
        p = f"model.vision_tower.encoder.layer.{i}."
        for n in "qkv":
            linear(f"{p}attention.{n}_proj", d, d, bias=False)
        linear(p + "attention.projection_layer", d, d)
        linear(p + "mlp.fc1", vision["intermediate_size"], d)
        linear(p + "mlp.fc2", d, vision["intermediate_size"])
        norm(p + "layernorm_before", d)
        norm(p + "layernorm_after", d)
        w[p + "lambda_1"] = w[p + "lambda_2"] = np.full(d, 0.1, np.float32)
    m = "model.multi_modal_projector."
    norm(m + "layer_norm", 4 * d)
    linear(m + "linear_1", H, 4 * d)
    linear(m + "linear_2", H, H)
    normal("model.language_model.embed_tokens.weight", (V, H))
    for i in range(text["num_hidden_layers"]):
        p = f"model.language_model.layers.{i}."
        linear(p + "self_attn.q_proj", H, H)
        linear(p + "self_attn.k_proj", kvd, H)
        linear(p + "self_attn.v_proj", kvd, H)
        linear(p + "self_attn.o_proj", H, H, bias=False)
        linear(p + "mlp.gate_proj", text["intermediate_size"], H, bias=False)
        linear(p + "mlp.up_proj", text["intermediate_size"], H, bias=False)
        linear(p + "mlp.down_proj", H, text["intermediate_size"], bias=False)
        norm(p + "input_layernorm", H, bias=False)
        norm(p + "post_attention_layernorm", H, bias=False)
    norm("model.language_model.norm", H, bias=False)
    linear("lm_head", V, H, bias=False)
    return w


def make_demo_model(
    out_dir: Path | str, seed: int = 0, prefill_len: int = 16, kv_len: int = 320, groups: int = 16,
    progress: Progress = print,
) -> Path:
    """The tiny model's ONNX bundle from numpy random weights: numpy, onnx and tokenizers only, no torch.

    Same architecture, sizes and tokenizer as make_tiny_model; the weights differ
    (numpy's generator, not torch's) and there is no transformers reference."""
    from daemon.engine.export.onnx_graphs import write_bundle

    config = tiny_config(build_bpe().get_vocab_size(with_added_tokens=True))
    note = f"tiny random model (seed {seed}, numpy): its text is meaningless; for tests and demos only"
    return write_bundle(random_weights(config, seed), config, write_tokenizer, out_dir, prefill_len, kv_len, groups,
                        f"vlmwatch-tiny-internvl-numpy-seed{seed}", note, progress)
