"""Everything checked before the daemon starts: `check-config` and `run` call the same functions,
so they agree on every problem, line and exit code.

    cfg, problems = check_all(path)                        # check-config
    cfg, problems = check_before_model(path)               # run, first: all that needs no model
    engine, problems = open_checked_engine(path, cfg)      # run, then: the model and every prompt on it

Every problem is one line, `FILE:LINE: key.path: message`. The order of the checks: docs/design.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.config import Config, line_of, load_config
from daemon.errors import ConfigError, ModelError, QuestionError, VlmwatchError
from daemon.types import Prompt

if TYPE_CHECKING:
    from daemon.engine.engine import Engine
    from daemon.engine.prompt_fit import PromptFit
    from daemon.rules.model import RuleSet

STATE_FILES = ("history.sqlite", "outbox.sqlite", "processed.sqlite")


def check_all(path: Path) -> tuple[Config | None, list[str]]:
    """What `vlmwatch check-config` reports: the validated config (None if unusable) and every problem."""
    cfg, problems = check_before_model(path)
    if cfg is None or problems:
        return cfg, problems
    from daemon.engine.prompt_fit import probe

    try:
        fit = probe(cfg.model)
    except ModelError as exc:
        return cfg, [model_problem(path, exc)]
    return cfg, prompt_problems(path, cfg, fit)


def check_before_model(path: Path) -> tuple[Config | None, list[str]]:
    """Steps 1-6: everything that needs no model loaded."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return None, str(exc).splitlines()
    problems = model_problems(path, cfg) + rule_file_problems(path, cfg)
    problems += secret_problems(path, cfg) + state_dir_problems(path, cfg) + source_problems(path, cfg)
    problems += http_problems(path, cfg) + state_problems(path, cfg)
    return cfg, problems + name_problems(path, cfg, problems)


def open_checked_engine(path: Path, cfg: Config) -> tuple[Engine | None, list[str]]:
    """Step 7 for `run`: open the (first NPU's) engine, then check every prompt against it."""
    from daemon.engine.engine import open_engine

    try:
        engine = open_engine(cfg.model.for_npu(0), max_new_tokens=cfg.prompts.max_new_tokens)
    except ModelError as exc:
        return None, [model_problem(path, exc)]
    return engine, prompt_problems(path, cfg, engine.fit)


# ----------------------------------------------------------------------------- steps 2-6


def model_problems(path: Path, cfg: Config) -> list[str]:
    from daemon.engine.bundle import choose_backend, locate

    try:
        files = locate(cfg.model.dir, cfg.model.tokenizer, cfg.model.vit)
        choose_backend(files, cfg.model.backend)
    except ModelError as exc:
        return [model_problem(path, exc)]
    problem = cfg.model.device_problem(files.kind)
    if problem is not None:
        return [f"{path}:{line_of(path, ('model', 'devices'))}: model.devices: {problem}"]
    return []


def model_problem(path: Path, exc: ModelError) -> str:
    """A model error as a config problem, at the key it names (model.dir unless it says otherwise)."""
    message = " ".join(line.strip() for line in str(exc).splitlines())
    for key in ("model.backend", "model.vit", "model.tokenizer"):
        if message.startswith(f"{key}: "):
            return at(path, tuple(key.split(".")), message)
    return at(path, ("model", "dir"), f"model.dir: {message}")


def rule_file_problems(path: Path, cfg: Config) -> list[str]:
    """Every problem of the rule files, as `FILE:LINE: rule id: message` (see daemon.rules.files)."""
    from daemon.rules.files import check_rules

    if cfg.rules is None:
        return []
    if not cfg.rules.is_dir():
        return [f"{path}:{line_of(path, ('rules',))}: rules: rule directory {cfg.rules} does not exist"]
    return check_rules(cfg.rules, cameras=[c.name for c in cfg.cameras],
                       zones={c.name: c.zones for c in cfg.cameras})[1]


def http_problems(path: Path, cfg: Config) -> list[str]:
    """With http enabled: the server can be loaded (aiohttp installed) and the API key can be read."""
    if not cfg.http.enabled:
        return []
    from daemon.service.build import http_server_module

    problems = []
    source = next((k for k in ("api_key", "api_key_env", "api_key_file", "api_key_credential")
                   if getattr(cfg.http, k) is not None), "api_key")
    for check, key in ((http_server_module, "enabled"), (cfg.http.resolve_api_key, source)):
        try:
            check()
        except ConfigError as exc:
            problems.append(f"{path}:{line_of(path, ('http', key))}: {exc}")
    return problems


def state_problems(path: Path, cfg: Config) -> list[str]:
    """Damaged SQLite files in state_dir (history, outbox, processed clips), each with the `mv` command
    that moves it aside. Read-only: a file that does not exist yet is no problem."""
    from daemon.state.store import check_file

    if not cfg.state_dir.is_dir():
        return []
    line = line_of(path, ("state_dir",))
    found = [check_file(f, "the state file") for f in sorted(cfg.state_dir.glob("*.sqlite"))]
    return [f"{path}:{line}: state_dir: {problem}" for problem in found if problem is not None]


def secret_problems(path: Path, cfg: Config) -> list[str]:
    """The MQTT password and TLS files, and camera passwords, read as `run` reads them."""
    problems = []
    if cfg.mqtt is not None:
        source = next((k for k in ("password_env", "password_file", "password_credential") if getattr(cfg.mqtt, k)),
                      "password")
        for key, look_up in ((source, cfg.mqtt.resolve_password), ("tls", cfg.mqtt.ssl_context)):
            try:
                look_up()
            except ConfigError as exc:
                problems.append(at(path, ("mqtt", key), str(exc)))
    for i, cam in enumerate(cfg.cameras):
        try:
            cam.source_url(f"cameras[{i}]")
        except ConfigError as exc:
            key = next((k for k in ("password_env", "password_file", "password_credential") if getattr(cam, k)), "")
            problems.append(at(path, ("cameras", i, key), str(exc)))
    return problems


def state_dir_problems(path: Path, cfg: Config) -> list[str]:
    """state_dir must be a folder this user can write, or be creatable in one."""
    state = cfg.state_dir
    existing = state
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    where = at(path, ("state_dir",), "state_dir: ")
    if not existing.is_dir():
        return [f"{where}{existing} is not a folder, so {state} cannot be created there; point state_dir at a folder"]
    refused = None if os.access(existing, os.W_OK | os.X_OK) else "permission denied"
    refused = refused or cannot_write_in(existing)  # os.access says yes to root in /proc or on a read-only disk
    if refused:
        what = "is not writable" if existing == state else f"cannot be created: {existing} is not writable"
        return [f"{where}{state} {what} for this user ({refused}); point state_dir at a writable folder (the"
                " service's is /var/lib/vlmwatch, made by systemd's StateDirectory=)"]
    stuck = [state / f for f in STATE_FILES if (state / f).exists() and not os.access(state / f, os.R_OK | os.W_OK)]
    return [f"{where}{f} is not readable and writable for this user; fix its owner (chown) or remove it"
            for f in stuck]


def cannot_write_in(folder: Path) -> str | None:
    """Why a folder cannot be made in `folder` (tried, then removed), or None when it can."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".vlmwatch-check-"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def source_problems(path: Path, cfg: Config) -> list[str]:
    """A file source must exist; a folder source (an existing folder, or a path ending in /) may fill later."""
    problems = []
    for i, cam in enumerate(cfg.cameras):
        if "://" in cam.source or cam.source.endswith("/") or Path(cam.source).is_dir():
            continue
        source = Path(cam.source)
        if not source.exists():
            message = (f"no such file or folder {source}; check the path (a folder that may appear later:"
                       " end the path with /)")
        elif not os.access(source, os.R_OK):
            message = f"cannot read {source}: permission denied for this user"
        else:
            continue
        problems.append(at(path, ("cameras", i, "source"), f"cameras[{i}].source: {message}"))
    return problems


def name_problems(path: Path, cfg: Config, earlier: list[str]) -> list[str]:
    """With MQTT: camera, summary job and entity names as the publisher takes them."""
    if cfg.mqtt is None:
        return []
    from daemon.config.base import check_name
    from daemon.mqtt.messages import RESERVED_CAMERA_NAMES
    from daemon.mqtt.publisher import plan_entities
    from daemon.service.build import rule_infos

    problems = []
    for i, cam in enumerate(cfg.cameras):
        try:
            check_name(cam.name, kind="camera name")
            if cam.name in RESERVED_CAMERA_NAMES:
                raise ValueError(f"camera name {cam.name!r} is reserved (<base>/summary/<job> is taken); rename it")
        except ValueError as exc:
            problems.append(at(path, ("cameras", i, "name"), f"cameras[{i}].name: {exc}"))
    for i, job in enumerate(cfg.summaries):
        try:
            check_name(job.id, kind="summary job")
        except ValueError as exc:
            problems.append(at(path, ("summaries", i, "id"), f"summaries[{i}].id: {exc}"))
    if problems or earlier:
        return problems
    rules = _rules(cfg)
    cameras = [c.name for c in cfg.cameras]
    try:
        plan_entities(cfg.mqtt, cameras, rule_infos(rules, cameras) if rules else (), [j.id for j in cfg.summaries],
                      cfg.events.enabled)
    except ConfigError as exc:
        problems.append(at(path, ("mqtt",), str(exc)))
    return problems


# ----------------------------------------------------------------------------- step 7


def prompt_problems(path: Path, cfg: Config, fit: PromptFit) -> list[str]:
    """Every camera's prefix, description and rule questions against the model (`fit`)."""
    problems = []
    for i, cam in enumerate(cfg.cameras):
        n = cam.frames
        try:
            fit.check_prefix(n, f"{n}-frame prefix (system text and frames) of camera {cam.name}")
        except ModelError as exc:
            problems.append(model_problem(path, ModelError(f"model.vit: {exc}")))
            break
        except QuestionError as exc:
            problems.append(at(path, ("cameras", i, "frames"), f"cameras[{i}].frames: {exc}"))
            continue
        own = cam.prompts.description is not None
        key = ("cameras", i, "prompts", "description") if own else ("prompts", "description")
        question = cam.prompts.description or cfg.prompts.description
        try:
            fit.check(n, Prompt("description", question), f"description prompt with the {n}-frame prefix of"
                                                          f" camera {cam.name}")
        except QuestionError as exc:
            problems.append(at(path, key, f"{'cameras[%d].' % i if own else ''}prompts.description: {exc}"))
        if cfg.events.enabled:  # the story: the same n frames (spread across the event) and the event prompt
            try:
                fit.check(n, Prompt("story", cfg.events.prompt, max_new_tokens=cfg.events.max_new_tokens),
                          f"event story prompt with the {n}-frame prefix of camera {cam.name}")
            except QuestionError as exc:
                problems.append(at(path, ("events", "prompt"), f"events.prompt: {exc}"))
    rules = _rules(cfg)
    return problems + (rule_question_problems(rules, fit, {c.name: c.frames for c in cfg.cameras}) if rules else [])


def rule_question_problems(rules: RuleSet, fit: PromptFit, frames: dict[str, int]) -> list[str]:
    """Each ask rule's choices must be told apart from one token, and its question must fit the
    model on each of its cameras (`frames`: camera -> frames per window); one line per rule."""
    from daemon.engine.constrain import check_schema
    from daemon.rules.answers import AskJson
    from daemon.rules.model import Ask

    problems: list[str] = []
    for rule in rules.rules:
        t = rule.trigger
        if not isinstance(t, (Ask, AskJson)):
            continue
        prompt = Prompt(rule.id, t.question, t.choices) if isinstance(t, Ask) else Prompt(rule.id, t.question)
        for camera, n in frames.items():
            if rule.applies_to(camera):
                try:
                    fit.check(n, prompt, f"question with the {n}-frame prefix of camera {camera}")
                    if isinstance(t, AskJson):
                        check_schema(json.loads(t.schema), t.max_tokens)
                except (QuestionError, ModelError) as exc:  # ModelError: llguidance missing
                    problems.append(f"{rule.where}: {rule.id}: {exc}")
                    break
    return problems


# ----------------------------------------------------------------------------- helpers


def at(path: Path, key: tuple, message: str) -> str:
    """`FILE:LINE: message` at the line of `key` (or of its nearest parent the file has)."""
    return f"{path}:{line_of(path, tuple(k for k in key if k != ''))}: {message}"


def _rules(cfg: Config) -> RuleSet | None:
    from daemon.rules.files import check_rules

    if cfg.rules is None:
        return None
    try:
        return check_rules(cfg.rules, cameras=[c.name for c in cfg.cameras])[0]
    except VlmwatchError:
        return None
