"""Resident KV: the cache stays in the NPU runtime's input buffers; only new rows are written.

Runs through `import axengine` against the fake (tests/fake_axengine), which
mirrors pyaxengine's internal structure (per-input buffers sized for the
largest shape group, CPU writes reaching the NPU only when flushed), counts
the bytes copied and flushed, and fails on any write outside a buffer. With
the tiny bundle's ONNX graphs under the board's file names the fake computes
real numbers, so the resident path is compared with the copied path, the ONNX
bundle and transformers; with empty files it is the full-size 2048 build.
"""

import logging

import numpy as np
import pytest
from boards import board_layout, tiny_board_layout
from reference import SYSTEM, break_even, frames, load_hf, question_of, reference

from daemon.engine.axinternals import KNOWN_PYAXENGINE
from daemon.engine.bundle import locate, open_model
from daemon.engine.engine import Engine
from daemon.engine.sessions import DECODE_TOKEN_MS, REFERENCE_TOK_S
from daemon.errors import ModelError, ShapeError
from daemon.types import Prompt

N_FRAMES = 5  # the tiny prefix then ends inside a chunk, with room for suffixes on both sides of the break-even
CARD = {"soc": None, "card": 0}  # provider: AxEngineExecutionProvider, or AXCLRTExecutionProvider on card 0


@pytest.fixture(scope="module")
def tiny_board(tiny_model, tmp_path_factory):
    return tiny_board_layout(tmp_path_factory.mktemp("tiny_board"), tiny_model)


def questions(engine):
    """A description, then suffixes just below (decode graph) and at (the tail's chunk again) the break-even."""
    P, n = engine.llm.geo.prefill_len, engine.budget(N_FRAMES).prefix_tokens
    even = break_even(engine, n // P * P, n % P)
    return ["Describe what happens in the video.", question_of(engine, even - 1), question_of(engine, even)]


def answers(model, kv="auto", max_new_tokens=12):
    engine = Engine(model, system=SYSTEM, max_new_tokens=max_new_tokens, kv=kv)
    fs = frames(N_FRAMES, seed=11)
    analysis = engine.ask(fs, [Prompt(str(i), q) for i, q in enumerate(questions(engine))])
    return engine, fs, [list(a.tokens) for a in analysis.answers]


@pytest.mark.parametrize("provider", ["soc", "card"])
def test_resident_tokens_equal_the_copied_path_the_onnx_bundle_and_transformers(
        axengine, tiny_model, tiny_board, provider):
    resident, fs, got = answers(open_model(locate(tiny_board), device_id=CARD[provider]))
    copied, _, plain = answers(open_model(locate(tiny_board), device_id=CARD[provider]), kv="copied")
    _, _, onnx = answers(open_model(locate(tiny_model)))
    assert (resident.kv_path, copied.kv_path) == ("resident", "copied")
    assert got == plain == onnx
    hf = load_hf(tiny_model)
    assert got == [reference(hf, resident, fs, q, 12)[0] for q in questions(resident)]
    assert any(len(t) > 3 for t in got)
    P, n = resident.llm.geo.prefill_len, resident.budget(N_FRAMES).prefix_tokens
    tail_group, layers = n // P + 1, len(resident.model.layers)  # the tail's chunk: first and third prompt only
    assert resident.model.meter.count("layer", tail_group) == copied.model.meter.count("layer", tail_group) == 2 * layers


def test_resident_decode_writes_one_row_per_layer_and_flushes_only_it(axengine, tiny_model, tmp_path):
    copied_step, resident_step = (decode_traffic(axengine, tiny_model, tmp_path / kv, kv)
                                  for kv in ("copied", "resident"))
    K_ROW = axengine.KV_DIM * 2  # bf16: row r of K_cache at byte r x 512
    small = 4 + axengine.HIDDEN * 2 + (axengine.KV_LEN + 1) * 2  # indices, input, mask
    whole = 2 * axengine.KV_LEN * K_ROW + small  # what run() copies when K/V are fed whole
    assert whole == 2_628_612
    assert copied_step == (whole, whole)
    assert resident_step == (small + 2 * K_ROW, small + 2 * K_ROW)  # 9,220 B: one K row, one V row
    assert copied_step[0] / resident_step[0] > 280
    # per call: the last 28 runs were one decode step's layers, each with its own counts
    last = [entry for entry in axengine.traffic_log if "_together" in entry[0]][-28:]
    assert [(g, t.copied, t.flushed) for _, g, t in last] == [(0, small + 2 * K_ROW, small + 2 * K_ROW)] * 28


def decode_traffic(axengine, tiny_model, root, kv, device_id=None):
    """Bytes copied and flushed per layer for one decode step of the full-size build, at steady state."""
    model = open_model(locate(board_layout(root, tiny_model / "tokenizer")), device_id=device_id)
    engine = Engine(model, system="You watch a camera.", max_new_tokens=3, kv=kv)
    engine.ask([], [Prompt("q", "Hello")])
    layers = [s for s in axengine.sessions if "_together" in s.name][-28:]
    before = [s.traffic.snapshot() for s in layers]
    embed = np.zeros(engine.llm.geo.hidden, engine.llm.geo.dtypes["input"])
    engine.llm.decode(embed, 100)
    moved = [s.traffic.since(b) for s, b in zip(layers, before)]
    assert all(m.runs == 1 for m in moved) and len({(m.copied, m.flushed) for m in moved}) == 1
    return moved[0].copied, moved[0].flushed


def test_the_m2_card_copies_rows_host_to_device_without_cache_flushes(axengine, tiny_model, tmp_path):
    copied, flushed = decode_traffic(axengine, tiny_model, tmp_path, "resident", device_id=1)
    assert (copied, flushed) == (4 + 1536 * 2 + 2560 * 2 + 2 * 512, 0)
    assert all(s.providers == ["AXCLRTExecutionProvider"] for s in axengine.sessions)


def test_the_cost_model_reproduces_the_reference_demo_and_prices_resident_decode(axengine, tiny_model, tmp_path):
    speeds = {}
    for kv in ("copied", "resident"):
        model = open_model(locate(board_layout(tmp_path / kv, tiny_model / "tokenizer")))
        engine = Engine(model, system="You watch a camera.", max_new_tokens=3, kv=kv)
        engine.ask([], [Prompt("q", "Hello")])
        m0 = model.meter.ms
        engine.llm.decode(np.zeros(engine.llm.geo.hidden, engine.llm.geo.dtypes["input"]), 100)
        speeds[kv] = 1000 / (model.meter.ms - m0)
    assert 7.1 <= speeds["copied"] <= 7.3  # the reference demo's measured end-to-end speed
    assert round(speeds["copied"], 2) == REFERENCE_TOK_S
    assert 10.5 <= speeds["resident"] < 1000 / DECODE_TOKEN_MS  # close to the NPU alone (11.5 tok/s)


def test_writes_outside_a_buffer_or_without_a_flush_fail(axengine, tiny_model, tmp_path):
    model = open_model(locate(board_layout(tmp_path, tiny_model / "tokenizer")))
    layer = model.layers[0].inner  # the AxEngineSession
    resident = layer.resident(("K_cache", "V_cache"))
    row = np.zeros((1, 256), axengine.BF16)
    with pytest.raises(ShapeError, match="rows 2559..2559 are outside the 2559 rows of the K_cache buffer"):
        resident.write("K_cache", 2559, row)
    buffers = resident.buffers
    with pytest.raises(axengine.FakeMemoryError, match="outside the"):
        buffers.write_input(0, buffers.input_size(0) - 100, np.zeros(512, np.uint8))
    io = layer._sess._sess._io[0]
    axengine._axe.engine_cffi.memmove(io.pInputs[0].pVirAddr, np.ones(512, np.uint8), 512)  # no flush
    feeds = {p.name: np.zeros(p.shape, p.dtype) for p in layer.inputs(0) if p.name not in ("K_cache", "V_cache")}
    with pytest.raises(axengine.FakeMemoryError, match="written but not flushed"):
        resident.run(feeds, 0)


def test_a_second_engine_on_the_same_model_takes_the_buffers_over(axengine, tiny_board):
    model = open_model(locate(tiny_board))
    first, second = Engine(model, system=SYSTEM), Engine(model, system=SYSTEM)
    assert second.ask(frames(1), [Prompt("q", "Describe.")]).answers[0].tokens
    with pytest.raises(ModelError, match="another engine on the same model now keeps its KV cache in this"
                                         " session's buffers; use one Engine per opened model"):
        first.ask(frames(1), [Prompt("q", "Describe.")])


def fallback_engine(tiny_board, caplog, kv="auto"):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="daemon.engine.llm"):
        engine = Engine(open_model(locate(tiny_board)), system=SYSTEM, max_new_tokens=12, kv=kv)
    return engine, [r for r in caplog.records if r.name == "daemon.engine.llm"]


def test_an_unknown_pyaxengine_version_falls_back_to_copying_with_one_log_line(
        axengine, tiny_board, caplog, monkeypatch):
    monkeypatch.setattr(axengine, "__version__", "0.0.9")
    engine, records = fallback_engine(tiny_board, caplog)
    assert engine.kv_path == "copied"
    # 0.2 MB: K and V, 320 rows x 32 float32 each, in 2 layers
    message = ("KV cache: copied whole into the runtime with every call (0.2 MB per decode step): pyaxengine 0.0.9"
               f" is not a version whose internals vlmwatch was written against ({', '.join(KNOWN_PYAXENGINE)})")
    assert [(r.levelname, r.getMessage()) for r in records] == [("WARNING", message)]
    fs = frames(N_FRAMES, seed=11)
    prefix = engine.prefill(fs)
    got = [list(engine.answer(prefix, Prompt(str(i), q)).tokens) for i, q in enumerate(questions(engine))]
    assert got == answers(open_model(locate(tiny_board)), kv="copied")[2]

    forced, records = fallback_engine(tiny_board, caplog, kv="resident")  # the user vouches for this version
    assert forced.kv_path == "resident" and [r.levelname for r in records] == ["INFO"]


def test_a_buffer_smaller_than_the_largest_group_falls_back(axengine, tiny_board, caplog, monkeypatch):
    real_init = axengine._axe.AXEngineSession.__init__

    def small_k_buffer(self, path):  # a runtime that sizes buffers differently
        real_init(self, path)
        if "_together" in self.name:
            self._io[0].pInputs[0].nSize -= 128

    monkeypatch.setattr(axengine._axe.AXEngineSession, "__init__", small_k_buffer)
    engine, records = fallback_engine(tiny_board, caplog)
    assert engine.kv_path == "copied" and len(records) == 1
    assert records[0].getMessage().endswith(
        "qwen2_p16_l0_together.axmodel: the runtime's buffer for input K_cache holds 40832 bytes,"
        " but its largest shape group needs 40960")
    with pytest.raises(ModelError, match=r"model.kv \(--kv\) is 'resident' but the KV cache cannot stay in"):
        fallback_engine(tiny_board, caplog, kv="resident")


def test_missing_internals_fall_back_and_name_what_is_missing(axengine, tiny_board, caplog, monkeypatch):
    real_init = axengine._axe.AXEngineSession.__init__

    def renamed_field(self, path):  # a pyaxengine whose io struct lost a field that run() itself does not use
        real_init(self, path)
        del self._io[0].nInputSize

    monkeypatch.setattr(axengine._axe.AXEngineSession, "__init__", renamed_field)
    engine, records = fallback_engine(tiny_board, caplog)
    assert engine.kv_path == "copied" and [r.levelname for r in records] == ["WARNING"]
    assert records[0].getMessage().endswith(
        "pyaxengine's session internals differ (AttributeError: '_Io' object has no attribute 'nInputSize')")
    assert engine.ask(frames(2), [Prompt("q", "Describe.")]).answers[0].tokens  # the copied path still runs



def test_onnx_runtime_copies_without_a_warning(tiny_model, caplog):
    with caplog.at_level(logging.INFO, logger="daemon.engine.llm"):
        engine = Engine(open_model(locate(tiny_model)))
    assert engine.kv_path == "copied"
    assert [r for r in caplog.records if r.levelno >= logging.INFO and r.name == "daemon.engine.llm"] == []
