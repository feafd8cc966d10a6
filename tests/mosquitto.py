"""A real mosquitto for tests: free loopback port, own config directory,
optional TLS (a throw-away PKI made with openssl) and password file.

    broker = Mosquitto(tmp_path / "broker", users={"vlm": "secret"})
    broker.start(); broker.stop(); broker.start()   # same port again
    broker.kill()                                   # SIGKILL

`Listener` is a subscriber that records what arrives, with the retain flag
as published (MQTT 5 retain-as-published), and waits on conditions.

Fixtures: `mosquitto` (a started plain broker), `pki` (CA, server and client
certificates, and a second unrelated CA), `listen` (factory of started
listeners, all stopped at teardown). tests/conftest.py loads this module as a
pytest plugin, so every test module can ask for them by name.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.client import ConnectFlags
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout: float, what: str, poll: float = 0.02) -> object:
    """Poll `condition` until it is truthy; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


# -- PKI ------------------------------------------------------------------------

@dataclass(frozen=True)
class Pki:
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_file: Path  # a CA that signed nothing here: "wrong CA"


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(directory: Path) -> Pki:
    """EC P-256 keys (fast), a CA and certificates for localhost/127.0.0.1, valid for a day."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "1",
                 "-subj", f"/CN=vlmwatch test {ca}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    for name, usage, san in (("server", "serverAuth", "DNS:localhost,IP:127.0.0.1"), ("client", "clientAuth", None)):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=vlmwatch-{name}",
                 cwd=directory)
        ext = directory / f"{name}.ext"
        ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                       f"extendedKeyUsage={usage}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
                       + (f"subjectAltName={san}\n" if san else ""))
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "1", "-extfile", ext, cwd=directory)
    d = directory
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key", d / "other-ca.crt")


# -- broker ---------------------------------------------------------------------

class Mosquitto:
    """One mosquitto process at a time, always on the same port."""

    def __init__(self, directory: Path, *, pki: Pki | None = None, require_certificate: bool = False,
                 users: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.pki = pki
        self.require_certificate = require_certificate
        self.users = users
        self.host = HOST
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.directory / "mosquitto.log"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [
            f"user {pwd.getpwuid(os.getuid()).pw_name}",  # as root, stay root: the files are ours
            f"listener {self.port} {self.host}",
            f"log_dest file {self.log_file}",
            "log_type all",
            # Persistence keeps durable listeners' sessions (and what they missed) across stop()/start().
            "persistence true",
            f"persistence_location {self.directory}/",
            f"allow_anonymous {'false' if self.users else 'true'}",
        ]
        if self.users:
            password_file = self.directory / "passwords"
            password_file.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(password_file)], check=True, capture_output=True, timeout=30)
            lines.append(f"password_file {password_file}")
        if self.pki:
            lines += [f"cafile {self.pki.ca_file}", f"certfile {self.pki.server_cert}",
                      f"keyfile {self.pki.server_key}"]
            if self.require_certificate:
                lines.append("require_certificate true")
        config = self.directory / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            raise RuntimeError("mosquitto is already running")
        if not self.port:
            self.port = free_port()
        config = self._write_config()
        self.process = subprocess.Popen(["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)

        def accepting() -> bool:
            if self.process is not None and self.process.poll() is not None:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {stderr}\n{self.log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_until(accepting, timeout, f"mosquitto to listen on {self.host}:{self.port}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: mosquitto saves its state, disconnects every client and exits (also when paused)."""
        self._end(signal.SIGTERM, timeout)

    def pause(self) -> None:
        """SIGSTOP: the broker hangs; clients' messages pile up unacknowledged in socket buffers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        self._end(signal.SIGKILL, 10.0)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.send_signal(signal.SIGCONT)  # a paused broker handles the signal on resuming
            self.process.wait(timeout=timeout)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None


# -- subscriber -----------------------------------------------------------------

@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool  # as published, thanks to retain-as-published


class Listener:
    """Subscribes at QoS 2 and records every message in arrival order.

    Default: MQTT 5 with retain-as-published, so `retain` is the publisher's flag.
    `durable=True`: an MQTT 3.1.1 persistent session, which mosquitto 2.0 restores
    after a stop()/start() (it does not restore MQTT 5 sessions), so messages
    published before the listener reconnects are queued for it; live messages
    then arrive with retain=False.
    """

    def __init__(self, broker: Mosquitto, topics: tuple[str, ...] = ("#",), *, durable: bool = False,
                 username: str | None = None, password: str | None = None) -> None:
        self.broker = broker
        self.topics = topics
        self.durable = durable
        self.messages: list[Received] = []
        self._lock = threading.RLock()  # predicates given to wait_for may call on()/last()
        self._subscribed = threading.Event()
        if durable:
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"listener-{id(self)}",
                                 protocol=paho.MQTTv311, clean_session=False)
        else:
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"listener-{id(self)}", protocol=paho.MQTTv5)
        if username:
            client.username_pw_set(username, password)
        if broker.pki:
            client.tls_set(ca_certs=str(broker.pki.ca_file), certfile=str(broker.pki.client_cert),
                           keyfile=str(broker.pki.client_key))
        client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message
        self.client = client

    def _on_connect(self, client: paho.Client, _u: object, flags: ConnectFlags, reason: object, _p: object) -> None:
        if flags.session_present:
            return
        if self.durable:
            client.subscribe([(t, 2) for t in self.topics])
        else:
            options = SubscribeOptions(qos=2, retainAsPublished=True)
            client.subscribe([(t, options) for t in self.topics])

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(message.topic, message.payload, message.qos, bool(message.retain)))

    def start(self, timeout: float = 10.0) -> Listener:
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise AssertionError("listener did not get its subscription acknowledged")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> Received | None:
        found = self.on(topic)
        return found[-1] if found else None

    def wait_for(self, predicate: Callable[[list[Received]], object], timeout: float = 10.0,
                 what: str = "messages") -> object:
        def check() -> object:
            with self._lock:
                return predicate(list(self.messages))
        return wait_until(check, timeout, what)

    def wait_topic(self, topic: str, payload: bytes | None = None, timeout: float = 10.0) -> Received:
        """The last message on `topic` (with `payload`, if given) once one has arrived."""
        def found(messages: list[Received]) -> Received | None:
            hits = [m for m in messages if m.topic == topic and (payload is None or m.payload == payload)]
            return hits[-1] if hits else None
        return self.wait_for(found, timeout, f"{topic!r}" + (f" = {payload!r}" if payload is not None else ""))  # type: ignore[return-value]


# -- fixtures -------------------------------------------------------------------

def _require_mosquitto() -> None:
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed; tests/run.sh installs it (apt-get install mosquitto)")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    _require_mosquitto()
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    yield broker
    broker.kill()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed; tests/run.sh installs it")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def listen() -> Iterator[Callable[..., Listener]]:
    listeners: list[Listener] = []

    def start(broker: Mosquitto, *topics: str, **options: object) -> Listener:
        listener = Listener(broker, topics or ("#",), **options).start()  # type: ignore[arg-type]
        listeners.append(listener)
        return listener

    yield start
    for listener in listeners:
        listener.stop()
