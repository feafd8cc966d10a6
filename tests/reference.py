"""transformers as the numerical reference for the engine's greedy tokens (a helper module like clips.py).

    hf = load_hf(tiny_model)
    want, n_ids = reference(hf, engine, frames(8), "Describe the video.", 24)
    question_of(engine, break_even(engine, shared, tail))   # a suffix right at the decode/prefill break-even
"""

from __future__ import annotations

import numpy as np

from daemon.engine.vision import preprocess
from daemon.types import Frame

SYSTEM = "You are a careful video assistant."


def load_hf(tiny_model):
    from transformers import InternVLForConditionalGeneration

    return InternVLForConditionalGeneration.from_pretrained(tiny_model / "hf").eval()


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Frame("cam", float(i), i, rng.integers(0, 255, (48 + i, 64, 3), np.uint8)) for i in range(n)]


def reference(hf, engine, frames, question, max_new_tokens):
    """transformers' greedy tokens for the same ids and pixels, stop token removed."""
    import torch

    ids = engine.prompts.prefix(len(frames)) + engine.prompts.suffix(question)
    kwargs = {}
    if frames:
        pixels = np.concatenate([preprocess(f.image, engine.vision.size) for f in frames])
        kwargs["pixel_values"] = torch.from_numpy(pixels)
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          max_new_tokens=max_new_tokens, do_sample=False,
                          eos_token_id=sorted(engine.prompts.stop_ids), pad_token_id=0, **kwargs)
    new = out[0, len(ids):].tolist()
    while new and new[-1] in engine.prompts.stop_ids:
        new.pop()
    return new, len(ids)


def break_even(engine, shared, tail):
    """Shortest suffix for which prefilling the tail's chunk again costs no more than feeding it token by token."""
    n = 1
    while engine.llm.feed_cost(n) < engine.llm.prefill_cost(shared, tail + n):  # infinite past the largest prefill
        n += 1
        assert shared + tail + n <= engine.limits.max_prompt, "no break-even within the largest prefill"
    return n


def question_of(engine, n_tokens):
    """A question whose suffix (with the template) is exactly n_tokens long."""
    q = "Is"
    while len(engine.prompts.suffix(q)) < n_tokens:
        q += " it"
    assert len(engine.prompts.suffix(q)) == n_tokens
    return q
