"""`vlmwatch demo`: the whole daemon on a fresh machine with nothing but PyPI.

It builds the tiny random InternVL (once, cached), writes a clip in which a
box enters a still room, starts an MQTT broker in-process (amqtt) unless
--mqtt names one, and runs `vlmwatch run --once` on the clip with a generated
config, printing every message the daemon publishes.

The tiny model is random: its descriptions are meaningless. Point --model at a
real bundle (or edit the generated config) for real descriptions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import threading
from pathlib import Path

import numpy as np

from daemon.errors import UsageError

DEFAULT_HOME = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vlmwatch" / "demo"


def add_cli(sub) -> None:
    p = sub.add_parser("demo", help="run the daemon on a generated clip with a tiny random model and a local broker",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", type=Path, default=DEFAULT_HOME, help=f"where the demo keeps its files ({DEFAULT_HOME})")
    p.add_argument("--model", type=Path, help="use this model bundle instead of the tiny random one")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="publish to this broker instead of an embedded one")
    p.set_defaults(func=run)


def run(args) -> int:
    from daemon.cli.run import run_daemon

    home = args.home
    model = args.model or tiny_model(home / "tiny-model")
    clip = write_demo_clip(home / "front-door.mp4")
    broker = None
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--mqtt must be HOST:PORT, got {args.mqtt!r}")
        port = int(port)
    else:
        host, port = "127.0.0.1", free_port()
        broker = EmbeddedBroker(host, port)
        broker.start()
        print(f"demo: MQTT broker (amqtt, in-process) on {host}:{port}")
    config = write_demo_config(home / "config.yaml", model, clip, home / "state", host, port)
    forget_progress(home / "state")
    printer = Printer(host, port)
    printer.start()
    print(f"demo: config {config}\ndemo: running 'vlmwatch run -c {config} --once' on {clip}\n", flush=True)
    try:
        code = run_daemon(argparse.Namespace(config=config, once=True))
    finally:
        printer.stop()
        if broker is not None:
            broker.stop()
    print(f"\ndemo: history in {home / 'state' / 'history.sqlite'}; the model is random, so its text is"
          " meaningless.\ndemo: for real descriptions set model.dir in the config to InternVL3-2B (board layout"
          " or 'vlmwatch export' ONNX bundle) and run 'vlmwatch run -c CONFIG'.")
    return code


def forget_progress(state: Path) -> None:
    """Every demo replays its clip from the start: the daemon would otherwise resume after the last
    window an earlier demo recorded (`processed.sqlite`) and find nothing left to do."""
    for suffix in ("", "-wal", "-shm"):
        (state / f"processed.sqlite{suffix}").unlink(missing_ok=True)


def tiny_model(path: Path) -> Path:
    if not (path / "manifest.json").is_file():
        from daemon.engine.export.tiny import make_tiny_model

        print(f"demo: building the tiny random model in {path} (once) ...", flush=True)
        # 32 chunks of 16 tokens: room for 8 frames with InternVL's default system text.
        make_tiny_model(path, seed=0, prefill_len=16, kv_len=640, groups=32, progress=lambda line: None)
    return path


def write_demo_config(path: Path, model: Path, clip: Path, state: Path, host: str, port: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""\
# Written by 'vlmwatch demo'. The model is a tiny random one: its text is meaningless.
model:
  dir: {model}
cameras:
  - name: front_door
    source: {clip}
    span: 8
    frames: 8
prompts:
  description: "Describe what happens in the video."
  max_new_tokens: 24
mqtt:
  host: {host}
  port: {port}
state_dir: {state}
metrics:
  enabled: false
""")
    return path


def write_demo_clip(path: Path, seconds: int = 32, fps: int = 10) -> Path:
    """A still, slightly noisy room in which a box enters at 12 s and crosses the frame."""
    import cv2

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = 320, 240
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    rng = np.random.default_rng(0)
    room = np.full((h, w, 3), 90, np.uint8)
    cv2.rectangle(room, (0, 170), (w, h), (60, 80, 60), -1)  # floor
    for i in range(seconds * fps):
        img = room.copy()
        t = i / fps
        if 12 <= t < 26:
            x = int((t - 12) * 20)
            cv2.rectangle(img, (x, 100), (x + 40, 190), (40, 160, 230), -1)
        noise = rng.integers(-4, 5, img.shape, dtype=np.int16)
        out.write(np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    out.release()
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """amqtt's broker on its own asyncio loop in a named thread (demo only; use mosquitto for real)."""

    def __init__(self, host: str, port: int):
        self.config = {"listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
                       "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="demo-broker", daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        try:
            import amqtt.broker  # noqa: F401  (only to say how to install it, before any thread starts)
        except ImportError:
            raise UsageError("the demo's embedded broker needs amqtt: pip install 'vlmwatch[demo]',"
                             " or give a broker with --mqtt HOST:PORT") from None
        for noisy in ("amqtt", "transitions"):  # their INFO lines would drown what the daemon publishes
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self._thread.start()
        self._started.wait(15)
        if self._error is not None:
            raise UsageError(f"the embedded MQTT broker did not start: {self._error}")

    def _run(self) -> None:
        from amqtt.broker import Broker

        asyncio.set_event_loop(self._loop)
        try:
            self.broker = Broker(self.config, loop=self._loop)
            self._loop.run_until_complete(self.broker.start())
        except Exception as exc:  # reported by start()
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._error is None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.broker.shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


class Printer:
    """Subscribes to everything and prints one line per message, as a home automation system would see it."""

    def __init__(self, host: str, port: int):
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="vlmwatch-demo-printer",
                                  protocol=paho.MQTTv311)
        self.client.on_connect = lambda c, *_: c.subscribe([("vlmwatch/#", 1), ("homeassistant/#", 1)])
        self.client.on_message = lambda _c, _u, m: print(describe(m.topic, m.payload, m.retain), flush=True)
        self.host, self.port = host, port

    def start(self) -> None:
        self.client.connect(self.host, self.port)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def describe(topic: str, payload: bytes, retain: bool) -> str:
    flag = " (retained)" if retain else ""
    if topic.startswith("homeassistant/"):
        return f"mqtt  {topic}{flag}: Home Assistant discovery config"
    try:
        body = json.loads(payload)
    except ValueError:
        return f"mqtt  {topic}{flag}: {payload[:80]!r}"
    if isinstance(body, dict) and "text" in body:
        return f"mqtt  {topic}{flag}: {body['text'][:100]!r} (window {body.get('window')})"
    return f"mqtt  {topic}{flag}: {json.dumps(body)[:120]}"
