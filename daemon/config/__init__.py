"""The configuration: a tree of small pydantic models, validated once, every problem
reported as `FILE:LINE: key.path: message`.

Strings may use `${ENV_VAR}` (or `${ENV_VAR:-default}`); secrets belong in the
environment or in systemd credentials, never in a logged config.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    Field,
    ValidationError,
)

from daemon.config.base import Section, Timezone
from daemon.config.cameras import KEYFRAME_GAP, CameraSettings
from daemon.config.daemon import (
    AskSettings,
    HealthSettings,
    LoggingSettings,
    MetricsSettings,
    PromptSettings,
    RetentionSettings,
)
from daemon.config.events import EventSettings
from daemon.config.hints import not_a_section, unknown_key
from daemon.config.http import HttpSettings
from daemon.config.model import ModelSettings
from daemon.config.mqtt import MqttSettings
from daemon.config.summaries import SummarySettings
from daemon.config.yamlfiles import compose_yaml, yaml_problem
from daemon.errors import ConfigError
from daemon.times import zone_info

# Keys whose values are never shown in an error, whatever their type.
SECRET_KEY = re.compile(r"pass|secret|token|credential|key", re.IGNORECASE)
ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Config(Section):
    model: ModelSettings = Field(description="The model and how to run it.")
    cameras: list[CameraSettings] = Field(min_length=1, description="Sources to watch.")
    prompts: PromptSettings = Field(default_factory=PromptSettings, description="Questions asked of every window.")
    mqtt: MqttSettings | None = Field(None, description="Broker; absent: nothing is published.")
    rules: Path | None = Field(None, description="Directory of rule files (*.yaml).")
    timezone: Timezone = Field(None, description="IANA zone (e.g. Europe/Berlin) of the rules' active hours"
                                 " and of summary jobs without their own; default the system's.")
    summaries: list[SummarySettings] = Field(default_factory=list, description="Scheduled summaries.")
    state_dir: Path = Field(Path("/var/lib/vlmwatch"), description="History and outbox (SQLite).")
    asks: AskSettings = Field(default_factory=AskSettings,
                              description="Fair use of the NPU by questions (MQTT asks, HTTP requests).")
    retention: RetentionSettings = Field(default_factory=RetentionSettings, description="History retention.")
    metrics: MetricsSettings = Field(default_factory=MetricsSettings, description="Prometheus endpoint.")
    http: HttpSettings = Field(default_factory=HttpSettings,
                               description="OpenAI-compatible API (Frigate GenAI, LLM Vision); off by default.")
    health: HealthSettings = Field(default_factory=HealthSettings, description="Camera watchdog and health.")
    logging: LoggingSettings = Field(default_factory=LoggingSettings, description="Logging.")
    events: EventSettings = Field(default_factory=EventSettings,
                                  description="Events: one record and one story per activity (issue 20).")

    @property
    def tzinfo(self):
        """The configured zone, or None for the system's."""
        return None if self.timezone is None else zone_info(self.timezone)

    def cross_problems(self) -> list[tuple[tuple, str]]:
        """(key path, message) for what no single field can check."""
        out: list[tuple[tuple, str]] = []
        seen: set[str] = set()
        for i, cam in enumerate(self.cameras):
            if cam.name in seen:
                out.append((("cameras", i, "name"), f"camera name {cam.name!r} is used twice: names must be unique"))
            seen.add(cam.name)
            if cam.triggers and self.mqtt is None:
                out.append((("cameras", i, "triggers"), "triggers arrive over MQTT: add an mqtt section (the broker "
                            "they are published to)"))
        for i, job in enumerate(self.summaries):
            for name in job.cameras or []:
                if name not in seen:
                    out.append((("summaries", i, "cameras"), f"camera {name!r} is not configured"))
        return out + self._health_problems()

    def _health_problems(self) -> list[tuple[tuple, str]]:
        """The watchdog must give a live camera time for its first window before calling it stalled."""
        out: list[tuple[tuple, str]] = []
        health = self.health
        if 0 < health.down_after < health.stall_after:
            out.append((("health", "down_after"), f"must be 0 or at least health.stall_after "
                        f"({health.stall_after:g} s): a stalled camera is restarted before it counts as down"))
        for cam in self.cameras:
            keyframes = cam.stream.gate_decode == "keyframes"  # a window waits for the keyframe after it
            first = cam.stream.open_timeout + cam.span + cam.stride + (KEYFRAME_GAP if keyframes else 0.0)
            if "://" in cam.source and health.stall_after <= first:
                gap = f" + {KEYFRAME_GAP:g} s for a keyframe" if keyframes else ""
                out.append((("health", "stall_after"), f"{health.stall_after:g} s is too short for camera "
                            f"{cam.name}: its first window may take stream.open_timeout + span + stride{gap} = "
                            f"{first:g} s; raise stall_after above that"))
        return out


# --------------------------------------------------------------------------- loading


def load_config(path: Path) -> Config:
    """Read, substitute ${ENV}, validate. ConfigError lists every problem as FILE:LINE: key: message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration ({exc})") from None
    try:
        node = compose_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_problem(path, exc)[1]) from None
    if node is None:
        raise ConfigError(f"{path}:1: the configuration is empty")
    lines: dict[tuple, int] = {}
    problems: list[str] = []
    data = _to_python(node, (), lines, problems, path)
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_format(path, lines, e) for e in exc.errors())) from None
    cross = cfg.cross_problems()
    if cross:
        raise ConfigError("\n".join(f"{path}:{_line(lines, loc)}: {_dotted(loc)}: {msg}" for loc, msg in cross))
    return _resolve_paths(cfg, path.parent)


def _to_python(node, loc: tuple, lines: dict, problems: list, path: Path) -> Any:
    """YAML node -> plain data, remembering the line of every key path; ${ENV} substituted."""
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = key_node.value
            out[key] = _to_python(value_node, loc + (key,), lines, problems, path)
            lines[loc + (key,)] = key_node.start_mark.line + 1  # the key's line, not its value's
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, loc + (i,), lines, problems, path) for i, v in enumerate(node.value)]
    value = _scalar(node)
    if isinstance(value, str) and "${" in value:
        def sub(m: re.Match) -> str:
            env = os.environ.get(m.group(1), m.group(2))
            if env is None:
                problems.append(f"{path}:{lines[loc]}: {_dotted(loc)}: environment variable {m.group(1)} is not set"
                                f" (set it, or write ${{{m.group(1)}:-default}})")
                return ""
            return env
        value = ENV_RE.sub(sub, value)
    return value


def _scalar(node):
    # A bare constructor: a SafeLoader("") per value would cost ~50 us in building a scanner for nothing.
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _format(path: Path, lines: dict, err: dict) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    line = _line(lines, loc)
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = unknown_key(Config, loc)
    elif err["type"] in ("model_type", "model_attributes_type", "dict_type") and not_a_section(Config, loc):
        msg = not_a_section(Config, loc)
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    value = err.get("input")
    if isinstance(value, str):
        from daemon.redact import redact_url

        value = redact_url(value)  # a camera URL's password never reaches a terminal or the journal
    secret = any(isinstance(p, str) and SECRET_KEY.search(p) for p in loc)  # password: 98765432 is an int
    if secret and err["type"] == "string_type":
        msg += " (YAML reads unquoted digits as a number: put the value in quotes, or better, in password_file)"
    shown = (f" (got {value!r})" if err["type"] not in ("missing", "extra_forbidden") and _short(value)
             and not secret else "")
    return f"{path}:{line}: {_dotted(loc)}: {msg}{shown}"


def _line(lines: dict, loc: tuple) -> int:
    """Line of the deepest part of `loc` that the file has."""
    return next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), 1)


def _short(value) -> bool:
    return isinstance(value, (str, int, float, bool)) and len(repr(value)) <= 80


def _resolve_paths(cfg: Config, base: Path) -> Config:
    """Relative paths in the config are relative to the config file, not to the working directory;
    summary jobs without a timezone take the config's."""
    def rel(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    model = cfg.model.model_copy(update={"dir": rel(cfg.model.dir), "tokenizer": rel(cfg.model.tokenizer),
                                         "vit": rel(cfg.model.vit)})
    def source(uri: str | None) -> str | None:
        return uri if uri is None or "://" in uri or Path(uri).is_absolute() else str(base / uri)

    cameras = [c.model_copy(update={"source": source(c.source), "detect_source": source(c.detect_source),
                                    "password_file": rel(c.password_file)}) for c in cfg.cameras]
    summaries = [j if j.timezone else j.model_copy(update={"timezone": cfg.timezone}) for j in cfg.summaries]
    return cfg.model_copy(update={"model": model, "cameras": cameras, "rules": rel(cfg.rules),
                                  "state_dir": rel(cfg.state_dir), "summaries": summaries})


def line_of(path: Path, key: tuple) -> int:
    """Line of a key path in a config file (1 when unknown): for errors found after validation."""
    try:
        node = compose_yaml(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return 1
    lines: dict[tuple, int] = {}
    _to_python(node, (), lines, [], Path(path))
    return _line(lines, key)
