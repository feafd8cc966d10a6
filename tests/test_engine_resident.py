"""Resident KV: the cache stays in the NPU runtime's input buffers; only new rows are written.

Runs through `import axengine` against the fake (tests/fake_axengine), written
from upstream pyaxengine's source tag by tag (per-input buffers sized for the
largest shape group, whole-buffer flushes in run(), CPU writes reaching the
NPU only when flushed, the card's per-thread context), which counts the bytes
copied, flushed and invalidated and fails on any write outside a buffer. With
the tiny bundle's ONNX graphs under the board's file names the fake computes
real numbers, so the resident path is compared with the copied path, the ONNX
bundle and transformers; with empty files it is the full-size 2048 build.
"""

import logging

import numpy as np
import pytest
from boards import board_layout, tiny_board_layout
from reference import SYSTEM, break_even, frames, load_hf, question_of, reference

import threading

from daemon.engine.axinternals import KNOWN_PYAXENGINE
from daemon.engine.bundle import locate, open_model
from daemon.engine.costs import DECODE_TOKEN_MS, REFERENCE_TOK_S
from daemon.engine.engine import Engine
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


# upstream builds with different run() internals: 0.1.2rc0 (SoC outputs are views; its card run() is broken),
# 0.1.3rc0 (card outputs copied), 0.1.3.rc3 (= main and, for all of this, the frigate branch)
BUILDS = [("soc", "0.1.2rc0"), ("soc", "0.1.3rc0"), ("soc", "0.1.3.rc3"), ("card", "0.1.3rc0"),
          ("card", "0.1.3.rc3")]


@pytest.mark.parametrize(("provider", "axengine_tag"), BUILDS)
def test_resident_tokens_equal_the_copied_path_and_the_onnx_bundle(axengine, tiny_model, tiny_board, provider):
    resident, fs, got = answers(open_model(locate(tiny_board), device_id=CARD[provider]))
    copied, _, plain = answers(open_model(locate(tiny_board), device_id=CARD[provider]), kv="copied")
    _, _, onnx = answers(open_model(locate(tiny_model)))
    assert (resident.kv_path, copied.kv_path) == ("resident", "copied")
    assert got == plain == onnx
    assert any(len(t) > 3 for t in got)
    P, n = resident.llm.geo.prefill_len, resident.budget(N_FRAMES).prefix_tokens
    tail_group, layers = n // P + 1, len(resident.model.layers)  # the tail's chunk: first and third prompt only
    assert resident.model.meter.count("layer", tail_group) == copied.model.meter.count("layer", tail_group) == 2 * layers


@pytest.mark.torch
def test_resident_tokens_equal_transformers(axengine, tiny_reference, tmp_path):
    """The resident path on the board layout of the transformers-exported tiny model gives its greedy tokens."""
    board = tiny_board_layout(tmp_path / "board", tiny_reference)
    resident, fs, got = answers(open_model(locate(board)))
    assert resident.kv_path == "resident"
    hf = load_hf(tiny_reference)
    assert got == [reference(hf, resident, fs, q, 12)[0] for q in questions(resident)]


def test_resident_decode_writes_one_row_per_layer_and_flushes_only_it(axengine, tiny_model, tmp_path):
    copied_step, resident_step = (decode_traffic(axengine, tiny_model, tmp_path / kv, kv)
                                  for kv in ("copied", "resident"))
    K_ROW = axengine.KV_DIM * 2  # bf16: row r of K_cache at byte r x 512
    small = 4 + axengine.HIDDEN * 2 + (axengine.KV_LEN + 1) * 2  # indices, input, mask
    whole = 2 * axengine.KV_LEN * K_ROW + small  # what run() copies when K/V are fed whole
    # run() flushes each fed input's whole buffer: K, V, and indices/input/mask sized for group 17
    buffers = 2 * axengine.KV_LEN * K_ROW + 4 * axengine.P + axengine.P * axengine.HIDDEN * 2 + \
        axengine.P * axengine.P * axengine.GROUPS * 2
    out, out_buffers = 2 * K_ROW + axengine.HIDDEN * 2, axengine.P * (2 * K_ROW + axengine.HIDDEN * 2)
    assert (whole, buffers, out_buffers) == (2_628_612, 3_571_200, 524_288)  # the 2.63 + 3.57 + 0.52 MB
    assert copied_step == (whole, buffers, out_buffers, out)
    assert resident_step == (small + 2 * K_ROW, small + 2 * K_ROW, out, out)  # 9,220 B: one K row, one V row
    assert sum(copied_step) / sum(resident_step) > 250  # 6.73 MB vs 26.6 kB
    # per call: the last 28 runs were one decode step's layers, each with its own counts
    last = [entry for entry in axengine.traffic_log if "_together" in entry[0]][-28:]
    assert [(g, t.copied, t.flushed) for _, g, t in last] == [(0, small + 2 * K_ROW, small + 2 * K_ROW)] * 28


def decode_traffic(axengine, tiny_model, root, kv, device_id=None):
    """Bytes copied, flushed, invalidated and copied out per layer for one decode step of the full-size
    build, at steady state."""
    model = open_model(locate(board_layout(root, tiny_model / "tokenizer")), device_id=device_id)
    engine = Engine(model, system="You watch a camera.", max_new_tokens=3, kv=kv)
    engine.ask([], [Prompt("q", "Hello")])
    layers = [s for s in axengine.sessions if "_together" in s.name][-28:]
    before = [s.traffic.snapshot() for s in layers]
    embed = np.zeros(engine.llm.geo.hidden, engine.llm.geo.dtypes["input"])
    engine.llm.decode(embed, 100)
    moved = [s.traffic.since(b) for s, b in zip(layers, before)]
    assert all(m.runs == 1 for m in moved)
    counts = {(m.copied, m.flushed, m.invalidated, m.copied_out) for m in moved}
    assert len(counts) == 1
    return counts.pop()


def test_the_m2_card_copies_rows_host_to_device_without_cache_flushes(axengine, tiny_model, tmp_path):
    copied, flushed, invalidated, out = decode_traffic(axengine, tiny_model, tmp_path, "resident", device_id=1)
    assert (copied, flushed, invalidated, out) == (4 + 1536 * 2 + 2560 * 2 + 2 * 512, 0, 0, 2 * 512 + 1536 * 2)
    assert all(s.providers == ["AXCLRTExecutionProvider"] for s in axengine.sessions)


@pytest.mark.parametrize("kv", ["resident", "copied"])
def test_the_card_context_is_set_on_the_thread_that_runs(axengine, tiny_board, kv):
    """Sessions open on the main thread; the NPU worker runs them: the card's context is per thread."""
    model = open_model(locate(tiny_board), device_id=0)
    engine = Engine(model, system=SYSTEM, max_new_tokens=6, kv=kv)
    opened = len(axengine.context_sets)
    got = []
    worker = threading.Thread(target=lambda: got.append(engine.ask(frames(2), [Prompt("q", "Describe.")])),
                              name="npu-worker")
    worker.start()
    worker.join(timeout=120)
    assert got and got[0].answers[0].tokens and engine.kv_path == kv
    threads = {name for name, _ in axengine.context_sets[opened:]}
    assert threads == {"npu-worker"}


def test_a_card_call_on_a_thread_without_the_context_fails_in_the_fake(axengine, tiny_board):
    """What the test above guards: without axclrtSetCurrentContext a copy on another thread fails."""
    buffers = open_model(locate(tiny_board), device_id=0).layers[0].inner.resident(("K_cache", "V_cache")).buffers
    buffers._enter = lambda: None  # a resident path that forgets the context
    errors = []

    def write():
        try:
            buffers.write_input(2, 0, np.zeros(4, np.uint8))
        except Exception as exc:  # noqa: BLE001 -- the test reads it
            errors.append(exc)

    worker = threading.Thread(target=write, name="npu-worker")
    worker.start()
    worker.join(timeout=30)
    assert [str(e) for e in errors] == ["copying 4 bytes to or from the M.2 card failed (axclrtMemcpy returned"
                                        " 0x80030001); set model.kv: copied (--kv copied) and report it"]


def test_group_one_gets_a_zero_placeholder_not_the_previous_windows_rows(axengine, tiny_board, monkeypatch):
    seen = []
    compute = axengine._graphs.Graph.compute

    def spy(self, group, feeds):
        if group == 1 and self.name.endswith("_l0_together.axmodel"):
            seen.append(feeds["K_cache"].copy())
        return compute(self, group, feeds)

    monkeypatch.setattr(axengine._graphs.Graph, "compute", spy)
    engine = Engine(open_model(locate(tiny_board)), system=SYSTEM, max_new_tokens=4)
    assert engine.kv_path == "resident"
    for seed in (1, 2):  # the second window's group 1 runs over buffers full of the first window's rows
        engine.ask(frames(2, seed=seed), [Prompt("q", "Describe.")])
    assert len(seen) == 2 and engine.llm.geo.placeholder == seen[1].shape
    assert not seen[1].any()


def test_the_cost_model_reproduces_the_reference_demo_and_prices_resident_decode(axengine, tiny_model, tmp_path):
    speeds = {}
    for kv in ("copied", "resident"):
        model = open_model(locate(board_layout(tmp_path / kv, tiny_model / "tokenizer")))
        engine = Engine(model, system="You watch a camera.", max_new_tokens=3, kv=kv)
        engine.ask([], [Prompt("q", "Hello")])
        m0 = model.meter.ms
        engine.llm.decode(np.zeros(engine.llm.geo.hidden, engine.llm.geo.dtypes["input"]), 100)
        speeds[kv] = 1000 / (model.meter.ms - m0)
        assert engine.llm.call_ms(0, 1) * 28 + 11.455 == pytest.approx(model.meter.ms - m0, rel=0.02)
    assert round(speeds["copied"], 2) == round(REFERENCE_TOK_S, 2) == 6.89  # the demo's 2048-build decode
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


def install_version(monkeypatch, tmp_path, version):
    """A dist-info first on sys.path: what `pip install` of another axengine wheel leaves."""
    info = tmp_path / "dist" / f"axengine-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: axengine\nVersion: {version}\n")
    monkeypatch.syspath_prepend(str(info.parent))


def test_an_unknown_pyaxengine_version_falls_back_to_copying_with_one_log_line(
        axengine, tiny_board, caplog, monkeypatch, tmp_path):
    install_version(monkeypatch, tmp_path, "0.1.4")
    engine, records = fallback_engine(tiny_board, caplog)
    assert engine.kv_path == "copied"
    # 0.2 MB: K and V, 320 rows x 32 float32 each, in 2 layers
    message = ("KV cache: copied whole into the runtime with every call (0.2 MB per decode step): pyaxengine 0.1.4"
               f" is not a version whose internals vlmwatch was written against ({', '.join(KNOWN_PYAXENGINE)})")
    assert [(r.levelname, r.getMessage()) for r in records] == [("WARNING", message)]
    fs = frames(N_FRAMES, seed=11)
    prefix = engine.prefill(fs)
    got = [list(engine.answer(prefix, Prompt(str(i), q)).tokens) for i, q in enumerate(questions(engine))]
    assert got == answers(open_model(locate(tiny_board)), kv="copied")[2]

    forced, records = fallback_engine(tiny_board, caplog, kv="resident")  # the user vouches for this version
    assert forced.kv_path == "resident" and [r.levelname for r in records] == ["INFO"]


@pytest.mark.parametrize("axengine_tag", ["0.1.1rc0"])
def test_a_pyaxengine_without_shape_groups_fails_at_load_naming_both_versions(axengine, tiny_board):
    with pytest.raises(ModelError) as err:
        open_model(locate(tiny_board))
    assert str(err.value) == (
        "pyaxengine 0.1.1 is installed, but vlmwatch needs 0.1.2 or newer: the model's graphs have shape groups,"
        " which its run() cannot select. Install a newer wheel from AXERA-TECH/pyaxengine releases"
        " (pip install axengine-0.1.3-py3-none-any.whl)")


@pytest.mark.parametrize("axengine_tag", ["0.1.1rc0"])
def test_without_metadata_the_signature_of_run_decides(axengine, tiny_board, monkeypatch):
    monkeypatch.setattr("daemon.engine.axinternals.pyaxengine_version", lambda: None)  # a source checkout
    with pytest.raises(ModelError, match=r"^pyaxengine \(version unknown\) is installed, but vlmwatch needs 0.1.2"):
        open_model(locate(tiny_board))


@pytest.mark.parametrize("axengine_tag", ["0.1.2rc0"])
def test_the_card_needs_0_1_3_because_0_1_2_cannot_return_outputs(axengine, tiny_board):
    with pytest.raises(ModelError, match=r"^pyaxengine 0.1.2 is installed, but vlmwatch needs 0.1.3 or newer on"
                                         r" the M.2 card: its M.2 card provider cannot return a graph's outputs"):
        open_model(locate(tiny_board), device_id=0)
    assert open_model(locate(tiny_board)).layers  # the SoC provider of the same build is fine


def test_a_buffer_smaller_than_the_largest_group_falls_back(axengine, tiny_board, caplog, monkeypatch):
    real_init = axengine._axe.AXEngineSession.__init__

    def small_k_buffer(self, *args):  # a runtime that sizes buffers differently
        real_init(self, *args)
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

    def renamed_field(self, *args):  # a pyaxengine whose io struct lost a field that run() itself does not use
        real_init(self, *args)
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
