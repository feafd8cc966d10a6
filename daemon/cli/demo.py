"""`vlmwatch demo`: the whole daemon on a fresh machine with nothing but PyPI (no torch).

It builds the tiny random InternVL (once, cached; numpy and onnx only), writes
a 32-second clip in which a box crosses a still room, starts an MQTT broker
in-process (amqtt) unless --mqtt names one, and runs the daemon with a
generated config, printing every message it publishes. The clip plays in real
time, again and again, until Ctrl-C: long enough to watch the entities in
Home Assistant (--mqtt HOST:PORT of Home Assistant's broker). --once processes
the clip once, as fast as it can, and stops.

The tiny model is random: its descriptions are meaningless. Point --model at a
real bundle (or edit the generated config) for real descriptions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np

from daemon.errors import UsageError

DEFAULT_HOME = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vlmwatch" / "demo"
CLIP_SECONDS = 32
PASSWORD_ENV = "VLMWATCH_MQTT_PASSWORD"


def add_cli(sub) -> None:
    p = sub.add_parser("demo", help="run the daemon on a generated clip with a tiny random model and a local broker",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", type=Path, default=DEFAULT_HOME, help=f"where the demo keeps its files ({DEFAULT_HOME})")
    p.add_argument("--model", type=Path, help="use this model bundle instead of the tiny random one")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="publish to this broker (e.g. Home Assistant's) instead of"
                   " an embedded one")
    p.add_argument("--mqtt-username", metavar="USER", help=f"log in to --mqtt as USER; the password is read from"
                   f" ${PASSWORD_ENV}")
    p.add_argument("--remove-device", action="store_true", help="remove the demo's device from Home Assistant:"
                   " clear its retained discovery configs on the --mqtt broker, then exit")
    p.add_argument("--once", action="store_true", help="process the clip once, as fast as possible, then stop"
                   " (default: play it in real time, again and again, until Ctrl-C)")
    p.set_defaults(func=run)


def run(args) -> int:
    from daemon.cli.run import run_daemon

    if args.remove_device:
        return remove(args)
    home = args.home
    model = args.model or tiny_model(home / "tiny-model")
    clip = write_demo_clip(home / "front-door.mp4")
    # Looping: copies of the clip appear in a watched folder, one per clip length, played in real time.
    feeder = None if args.once else ClipFeeder(clip, home / "front_door", CLIP_SECONDS)
    broker = None
    if args.mqtt:
        host, port = broker_address(args.mqtt)
    else:
        host, port = "127.0.0.1", free_port()
        broker = EmbeddedBroker(host, port)
        broker.start()
        print(f"demo: MQTT broker (amqtt, in-process) on {host}:{port}")
    source = clip if feeder is None else feeder.folder
    config = write_demo_config(home / "config.yaml", model, source, home / "state", host, port,
                               realtime=feeder is not None, username=args.mqtt_username)
    forget_progress(home / "state")
    printer = Printer(host, port, args.mqtt_username, os.environ.get(PASSWORD_ENV))
    try:
        printer.start(given=broker is None)
        print(where_to_look(config, host, port, args.once), flush=True)
        if feeder is not None:
            feeder.start()
        code = run_daemon(argparse.Namespace(config=config, once=args.once))
    finally:
        if feeder is not None:
            feeder.stop()
        printer.stop()
        if broker is not None:
            broker.stop()
    if args.mqtt:
        print(f"\ndemo: the device \"Front door\" stays in Home Assistant (its discovery configs are retained);"
              f" remove it with: vlmwatch demo --remove-device --mqtt {args.mqtt}"
              + (f" --mqtt-username {args.mqtt_username}" if args.mqtt_username else ""))
    print(f"\ndemo: history in {home / 'state' / 'history.sqlite'}; the model is random, so its text is"
          " meaningless.\ndemo: for real descriptions set model.dir in the config to InternVL3-2B (board layout"
          " or 'vlmwatch export' ONNX bundle) and run 'vlmwatch run -c CONFIG'.")
    return code


def remove(args) -> int:
    from daemon.cli.demo_device import remove_device

    if not args.mqtt:
        print("demo: nothing to remove: without --mqtt the demo's own broker keeps nothing after it stops;"
              " give the broker the demo published to: vlmwatch demo --remove-device --mqtt HOST:PORT")
        return 0
    host, port = broker_address(args.mqtt)
    count = remove_device(host, port, args.mqtt_username, os.environ.get(PASSWORD_ENV))
    print(f"demo: cleared {count} retained discovery configs on {host}:{port}; Home Assistant removes the demo's"
          " entities and the device \"Front door\" (a vlmwatch daemon on this broker with the default base topic"
          " announces its own again when it reconnects or Home Assistant restarts)")
    return 0


def broker_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--mqtt must be HOST:PORT, got {text!r}")
    return host, int(port)


def forget_progress(state: Path) -> None:
    """Every demo replays its clip from the start: the daemon would otherwise resume after the last
    window an earlier demo recorded (`processed.sqlite`) and find nothing left to do."""
    for suffix in ("", "-wal", "-shm"):
        (state / f"processed.sqlite{suffix}").unlink(missing_ok=True)


def tiny_model(path: Path) -> Path:
    if not (path / "manifest.json").is_file():
        from daemon.engine.export.tiny import make_demo_model

        print(f"demo: building the tiny random model in {path} (once) ...", flush=True)
        # 32 chunks of 16 tokens: room for 8 frames with InternVL's default system text.
        make_demo_model(path, seed=0, prefill_len=16, kv_len=640, groups=32, progress=lambda line: None)
    return path


def where_to_look(config: Path, host: str, port: int, once: bool) -> str:
    how = ("the clip once, then it stops" if once else
           f"the clip in real time, again and again (a box crosses the room once per {CLIP_SECONDS}-second loop);"
           " Ctrl-C stops")
    return f"""\
demo: config {config}: the daemon runs {how}
demo: MQTT topics on {host}:{port}: vlmwatch/status, vlmwatch/front_door/description (and .../snapshot,
demo:   .../rule/<rule> with rules); watch them with: mosquitto_sub -h {host} -p {port} -t 'vlmwatch/#' -v
demo: Home Assistant: give the demo Home Assistant's broker (--mqtt HOST:1883 [--mqtt-username USER with
demo:   ${PASSWORD_ENV}]); the device "Front door" appears (Settings > Devices & services > MQTT) with
demo:   sensor.front_door_description and image.front_door_alert_snapshot, available while the demo runs.
"""


def write_demo_config(path: Path, model: Path, source: Path, state: Path, host: str, port: int,
                      realtime: bool = False, username: str | None = None) -> Path:
    login = f"  username: {json.dumps(username)}\n  password_env: {PASSWORD_ENV}\n" if username else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""\
# Written by 'vlmwatch demo'. The model is a tiny random one: its text is meaningless.
model:
  dir: {model}
cameras:
  - name: front_door
    source: {source}
    span: 8
    frames: 8
    realtime: {str(realtime).lower()}
    folder: {{poll: 1, settle: 0.5}}
prompts:
  description: "Describe what happens in the video."
  max_new_tokens: 24
mqtt:
  host: {host}
  port: {port}
{login}state_dir: {state}
metrics:
  enabled: false
""")
    return path


class ClipFeeder:
    """Puts a fresh copy of the clip into the watched folder every `period` seconds, as a camera's recorder
    would; keeps the last three. Names carry the time, so a later demo run never sees them as processed."""

    def __init__(self, clip: Path, folder: Path, period: float, keep: int = 3):
        self.clip, self.folder, self.period, self.keep = clip, folder, period, keep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-clip-feeder", daemon=True)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("loop-*.mp4"):  # from an earlier run: not replayed
            old.unlink()
        self._thread.start()

    def _run(self) -> None:
        while True:
            part = self.folder / f".loop-{time.time_ns()}.mp4"  # hidden while written: the folder skips it
            shutil.copyfile(self.clip, part)
            part.rename(self.folder / part.name[1:])
            for old in sorted(self.folder.glob("loop-*.mp4"))[:-self.keep]:
                old.unlink()
            if self._stop.wait(self.period):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(5)


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

    def __init__(self, host: str, port: int, username: str | None = None, password: str | None = None):
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="vlmwatch-demo-printer",
                                  protocol=paho.MQTTv311)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, *_: c.subscribe([("vlmwatch/#", 1), ("homeassistant/#", 1)])
        self.client.on_message = lambda _c, _u, m: print(describe(m.topic, m.payload, m.retain), flush=True)
        self.host, self.port = host, port
        self._started = False

    def start(self, given: bool = True) -> None:
        """Connect once; a broker that cannot be reached is the user's --mqtt to fix (`given`), or a
        broker the demo failed to start. paho reconnects by itself after that."""
        try:
            self.client.connect(self.host, self.port)
        except (OSError, ValueError) as exc:
            why = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
            if given:
                raise UsageError(f"--mqtt {self.host}:{self.port}: cannot reach an MQTT broker there ({why}). Check"
                                 " the host and port (Home Assistant's Mosquitto add-on listens on 1883) and that"
                                 " the broker runs, or leave out --mqtt: the demo then starts its own.") from None
            raise UsageError(f"the demo's embedded MQTT broker on {self.host}:{self.port} does not answer ({why})") \
                from None
        self.client.loop_start()
        self._started = True

    def stop(self) -> None:
        if self._started:
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
