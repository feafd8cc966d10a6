"""daemon/engine/prompt_fit.py probe: the engine's limits and prompt sizes without loading the model."""

from __future__ import annotations

import json
import time

import pytest

from daemon.cli import main
from daemon.config.model import ModelSettings
from daemon.engine.bundle import locate, open_model
from daemon.engine.engine import Engine
from daemon.engine.prompt_fit import probe

SYSTEM = "You watch a camera."


@pytest.fixture
def no_sessions(monkeypatch):
    """Any ONNX Runtime session created from here on fails the test."""
    import onnxruntime

    def refuse(*args, **kwargs):
        raise AssertionError("a session was created: the model was loaded")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)


def test_same_numbers_as_the_engine(tiny_model):
    engine = Engine(open_model(locate(tiny_model)), system=SYSTEM)
    settings = ModelSettings(dir=tiny_model, system=SYSTEM)
    limits = probe(settings)
    assert limits.limits == engine.limits
    for n in (0, 1, 8):
        assert limits.budget(n) == engine.budget(n)
        assert limits.prompt_tokens(n, "Is the door open?") == engine.prompt_tokens(n, "Is the door open?")
    assert limits.tokenize("a red backpack") == engine.tokenize("a red backpack")
    assert limits.detokenize(engine.tokenize("a red backpack")) == "a red backpack"


def test_limits_load_no_graph(tiny_model, no_sessions):
    limits = probe(ModelSettings(dir=tiny_model, system=SYSTEM))
    assert (limits.limits.max_prompt, limits.limits.kv_len, limits.limits.prefill_len) == (256, 320, 16)
    assert limits.budget(8).prefix_tokens == limits.prompt_tokens(8, "") - len(limits.prompts.suffix(""))


def test_summarize_dry_run_loads_no_graph(tmp_path, tiny_model, no_sessions, capsys):
    from histories import long_history

    from daemon.state.history import History

    with History(tmp_path / "state" / "history.sqlite") as history:
        long_history(history, time.time() - 2 * 3600, hours=2)
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  dir: {tiny_model}\n  system: {SYSTEM}\ncameras:\n  - name: porch\n"
                      f"    source: {tmp_path}\n  - name: garage\n    source: {tmp_path}\n"
                      f"state_dir: {tmp_path / 'state'}\nmetrics:\n  enabled: false\n")
    assert main(["summarize", "-c", str(config), "--since", "3h", "--dry-run", "--json",
                 "--max-new-tokens", "40"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["limits"] == {"max_prompt": 256, "kv_len": 320}
    assert plan["map_steps"] >= 2 and all(s["prompt_tokens"] <= 256 for s in plan["steps"])
