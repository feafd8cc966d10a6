"""The per-layer pipeline computes exactly what transformers computes.

Tiny random InternVL models (built offline by `make-tiny-model`) are exported
to ONNX bundles; greedy tokens from the engine must equal transformers' own
`generate` on the same input ids and pixels.
"""

import numpy as np
import pytest
from reference import SYSTEM, break_even, frames, load_hf, question_of, reference

from daemon.engine.bundle import locate, open_model
from daemon.engine.engine import Engine, Sampling
from daemon.errors import ChoiceError, PromptTooLongError
from daemon.types import Frame, Prompt


@pytest.fixture(scope="module")
def model(tiny_model):
    return open_model(locate(tiny_model))


@pytest.fixture(scope="module")
def reference_model(tiny_reference):
    """The model transformers' reference (`hf`) was exported to: the same weights."""
    return open_model(locate(tiny_reference))


@pytest.fixture(scope="module")
def hf(tiny_reference):
    return load_hf(tiny_reference)


def check_equal(model, hf, n_frames, question, max_new_tokens=24):
    engine = Engine(model, system=SYSTEM, max_new_tokens=max_new_tokens)
    fs = frames(n_frames)
    answer = engine.ask(fs, [Prompt("q", question)]).answers[0]
    want, n_ids = reference(hf, engine, fs, question, max_new_tokens)
    assert answer.prompt_tokens == n_ids
    assert list(answer.tokens) == want
    return answer, engine


def test_text_only_matches_transformers(reference_model, hf):
    answer, _ = check_equal(reference_model, hf, 0, "What is the weather like today?")
    assert answer.tokens


def test_one_image_matches_transformers(reference_model, hf):
    check_equal(reference_model, hf, 1, "Describe the picture.")


def test_eight_frames_over_many_prefill_chunks_match_transformers(reference_model, hf):
    answer, engine = check_equal(reference_model, hf, 8, "Describe what happens in the video.")
    assert answer.prompt_tokens > 3 * engine.llm.geo.prefill_len


def test_prompt_of_exact_multiple_of_prefill_length_matches_transformers(reference_model, hf):
    engine = Engine(reference_model, system=SYSTEM)
    P = engine.llm.geo.prefill_len
    question = "Describe"
    while (engine.budget(2).prefix_tokens + len(engine.prompts.suffix(question))) % P:
        question += " it"
    answer, _ = check_equal(reference_model, hf, 2, question)
    assert answer.prompt_tokens % P == 0


def test_shared_prefix_gives_from_scratch_tokens_and_is_computed_once(reference_model, hf):
    questions = ["Describe the video.", "Is anyone at the door?", "What moves?"]
    fs = frames(8, seed=3)
    scratch = [Engine(reference_model, system=SYSTEM, max_new_tokens=16).ask(fs, [Prompt(str(i), q)]).answers[0]
               for i, q in enumerate(questions)]

    engine = Engine(reference_model, system=SYSTEM, max_new_tokens=16)
    before = dict(reference_model.meter.calls)
    analysis = engine.ask(fs, [Prompt(str(i), q) for i, q in enumerate(questions)])
    calls = {k: n - before.get(k, 0) for k, n in reference_model.meter.calls.items()}

    assert [a.tokens for a in analysis.answers] == [a.tokens for a in scratch]
    for a, q in zip(analysis.answers, questions):
        assert list(a.tokens) == reference(hf, engine, fs, q, 16)[0]
    P, layers = engine.llm.geo.prefill_len, len(reference_model.layers)
    full_chunks = analysis.prefix_tokens // P
    assert full_chunks >= 3
    for group in range(1, full_chunks + 1):  # shared chunks: once, not once per prompt
        assert calls.get(("layer", group), 0) == layers
    assert calls[("vit", 0)] == 8


def test_frames_kept_small_at_capture_give_the_same_features_and_tokens(reference_model, hf):
    """Sources keep the ViT's input (made by the engine's own resize) and a reduced picture instead of the
    decoded one: the model must see exactly what it saw of the full frame."""
    from daemon.video.frames import FrameMaker

    engine = Engine(reference_model, system=SYSTEM, max_new_tokens=16)
    rng = np.random.default_rng(5)
    full = [Frame("cam", float(i), i, rng.integers(0, 255, (360, 640, 3), np.uint8)) for i in range(4)]
    keep = FrameMaker(picture_width=32, model_input=engine.vision.fit)  # a picture smaller than the ViT's input
    slim = [keep(f.camera, f.ts, f.index, f.image) for f in full]
    assert slim[0].image.shape == (18, 32, 3)
    for a, b in zip(full, slim):
        np.testing.assert_array_equal(engine.vision.features(a), engine.vision.features(b))
    question = "Describe what happens in the video."
    answers = [Engine(reference_model, system=SYSTEM, max_new_tokens=16).ask(fs, [Prompt("q", question)]).answers[0]
               for fs in (full, slim)]
    assert answers[0].tokens == answers[1].tokens
    assert list(answers[1].tokens) == reference(hf, engine, full, question, 16)[0]


@pytest.mark.parametrize("n_frames", [2, 5])  # partial last chunks whose break-even leaves room
def test_the_tail_is_prefilled_once_and_suffixes_either_side_of_the_break_even_match_transformers(
        reference_model, hf, n_frames):
    engine = Engine(reference_model, system=SYSTEM, max_new_tokens=10)
    P, layers = engine.llm.geo.prefill_len, len(reference_model.layers)
    n_prefix = engine.budget(n_frames).prefix_tokens
    shared, tail = n_prefix // P * P, n_prefix % P
    assert tail > 0  # the case that matters: a partial last chunk
    even = break_even(engine, shared, tail)
    shortest = len(engine.prompts.suffix(""))
    assert shortest < even  # both sides are reachable
    sizes = [even - 1, even - 1, even]  # the first carries the tail; then decode; then the chunk again
    questions = [question_of(engine, n) for n in sizes]
    fs = frames(n_frames, seed=5)

    before = dict(reference_model.meter.calls)
    analysis = engine.ask(fs, [Prompt(str(i), q) for i, q in enumerate(questions)])
    calls = {k: n - before.get(k, 0) for k, n in reference_model.meter.calls.items()}

    for a, q in zip(analysis.answers, questions):
        assert list(a.tokens) == reference(hf, engine, fs, q, 10)[0]
    tail_group = shared // P + 1
    # the tail's chunk: with the first prompt and with the suffix at the break-even, not with the second
    assert calls[("layer", tail_group)] == 2 * layers
    generated = sum(len(a.tokens) - (a.stop_reason == "length") for a in analysis.answers)
    assert calls[("layer", 0)] == layers * (sizes[1] + generated)  # the short second suffix: decode steps


def test_the_break_even_follows_the_group_timings(model):
    engine = Engine(model, system=SYSTEM)
    llm, P = engine.llm, engine.llm.geo.prefill_len
    for chunk in range(1, 5):
        shared = chunk * P
        even = break_even(engine, shared, 1)
        # decoding n tokens costs n steps; prefilling them costs one call of the chunk's group
        assert llm.feed_cost(even - 1) < llm.prefill_cost(shared, even) <= llm.feed_cost(even)
    assert break_even(engine, 4 * P, 1) > break_even(engine, P, 1)  # later groups cost more: decode longer


def test_vit_features_are_reused_for_shared_frames(model):
    engine = Engine(model, system=SYSTEM, max_new_tokens=2)
    fs = frames(8)
    engine.ask(fs[:4], [Prompt("a", "Describe.")])
    engine.ask(fs[2:6], [Prompt("a", "Describe.")])  # overlapping window: two frames are new
    assert engine.vision.runs == 6


def test_choice_probabilities_are_deterministic_and_bounded(model):
    engine = Engine(model, system=SYSTEM)
    fs = frames(2)
    p1 = engine.ask(fs, [Prompt("door", "Is someone there?", ("yes", "no"))]).answers[0]
    p2 = Engine(model, system=SYSTEM).ask(fs, [Prompt("door", "Is someone there?", ("yes", "no"))]).answers[0]
    assert p1.stop_reason == "choice" and p1.probabilities == p2.probabilities
    assert all(0.0 <= v <= 1.0 for v in p1.probabilities.values())
    assert sum(p1.probabilities.values()) <= 1.0 + 1e-9
    assert p1.choice == max(p1.probabilities, key=p1.probabilities.get)


def test_choice_scoring_takes_no_decode_step(model):
    engine = Engine(model, system=SYSTEM)
    before = model.meter.count("layer", 0)
    engine.ask(frames(1), [Prompt("c", "Is it day?", ("yes", "no"))])
    assert model.meter.count("layer", 0) == before


def test_choices_sharing_a_first_token_are_rejected(model):
    engine = Engine(model, system=SYSTEM)
    with pytest.raises(ChoiceError, match="start with the same token"):
        engine.choice_tokens(["yes", "yes please"])


def test_sampling_follows_the_seed(model):
    def run(seed):
        e = Engine(model, system=SYSTEM, sampling=Sampling(temperature=1.0, top_k=50, top_p=0.9, seed=seed),
                   max_new_tokens=12)
        return tuple(e.ask([], [Prompt("q", "Tell me a story.")]).answers[0].tokens)

    assert run(7) == run(7)  # the same seed, the same story
    # ... and other seeds, other stories: fails if the seed is ignored (a fixed or a fresh generator)
    assert len({run(seed) for seed in range(6)}) > 1


def test_streaming_callback_receives_the_answer_text(model):
    pieces = []
    engine = Engine(model, system=SYSTEM, max_new_tokens=10)
    answer = engine.ask([], [Prompt("q", "Say something.")], on_token=lambda _id, t: pieces.append(t)).answers[0]
    assert "".join(pieces) == answer.text


def test_kv_capacity_ends_generation_with_length(model):
    engine = Engine(model, system=SYSTEM, max_new_tokens=100_000)
    g = engine.llm.geo
    answer = engine.ask(frames(8), [Prompt("q", "Describe the video in detail.")]).answers[0]
    if answer.stop_reason == "stop":
        pytest.skip("the random model emitted a stop token before filling the cache")
    assert answer.stop_reason == "length"
    assert answer.prompt_tokens + len(answer.tokens) == g.kv_len + 1


def test_too_long_prompt_names_both_numbers(model):
    engine = Engine(model, system=SYSTEM)
    limit = engine.llm.geo.max_prompt
    question = "word " * (limit + 10)
    n = engine.budget(0).prefix_tokens + len(engine.prompts.suffix(question))
    with pytest.raises(PromptTooLongError) as err:
        engine.ask([], [Prompt("q", question)])
    assert str(err.value) == (
        f"the prompt 'q' is {n} tokens but the model's largest prefill is {limit} tokens"
        f" ({engine.llm.geo.groups} chunks of {engine.llm.geo.prefill_len});"
        " use fewer frames, a shorter question or a shorter system text")


def test_streamed_pieces_join_to_the_text_even_through_multibyte_characters(model):
    from daemon.engine.engine import _Streamer

    engine = Engine(model, system=SYSTEM)
    text = "A red panda 在木头上 sleeps; café — naïve 🐼 done."
    ids = engine.prompts.encode(text)
    assert len(ids) > len(text) // 2  # byte-level pieces split the multi-byte characters
    pieces = []
    streamer = _Streamer(engine.prompts, "q", lambda _id, piece: pieces.append(piece))
    for n in range(1, len(ids) + 1):
        streamer.push(ids[:n])
    assert "".join(pieces) == engine.prompts.decode(ids) == text
    assert all("\ufffd" not in p for p in pieces)


def test_per_answer_sampling_overrides_the_engines_for_that_answer_only(model):
    engine = Engine(model, system=SYSTEM, max_new_tokens=12)  # greedy
    prefix = engine.prefill([], [])
    prompt = Prompt("q", "Tell me a story.")
    greedy = engine.answer(prefix, prompt).tokens
    hot = [Sampling(temperature=1.0, top_p=0.9, seed=s) for s in (3, 3, 4, 5, 6)]
    sampled = [engine.answer(prefix, prompt, sampling=s).tokens for s in hot]
    assert sampled[0] == sampled[1]  # the same seed, the same answer, on a shared engine
    assert len(set(sampled)) > 1
    assert engine.answer(prefix, prompt).tokens == greedy  # the engine's own sampling is untouched
    assert engine.answer(prefix, prompt, sampling=Sampling(seed=9)).tokens == greedy  # temperature 0: greedy


def test_stop_texts_end_the_answer_and_are_never_streamed(model):
    engine = Engine(model, system=SYSTEM, max_new_tokens=24)
    prompt = Prompt("q", "Say something.")
    full = engine.ask([], [prompt]).answers[0]
    stop_text = full.text[6:9]  # three characters from the middle of the greedy answer
    cut = full.text.find(stop_text)
    pieces = []
    prefix = engine.prefill([], [])
    answer = engine.answer(prefix, prompt, on_token=lambda _id, t: pieces.append(t),
                           stop_texts=["never appears", stop_text])
    assert answer.text == full.text[:cut] and answer.stop_reason == "stop"
    assert "".join(pieces) == answer.text
    assert answer.tokens == full.tokens[:len(answer.tokens)] and len(answer.tokens) < len(full.tokens)
    unchanged = engine.answer(prefix, prompt, on_token=lambda _id, t: pieces.append(t), stop_texts=["\x00"])
    assert unchanged.text == full.text and unchanged.stop_reason == full.stop_reason
