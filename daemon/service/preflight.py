"""Everything `vlmwatch check-config` and `vlmwatch run` validate before starting:
the config, the model files, the rule files and the state files. Every problem is
one line, `FILE:LINE: key.path: message`.
"""

from __future__ import annotations

from pathlib import Path

from daemon.config import Config, line_of, load_config
from daemon.errors import ConfigError, ModelError


def check_all(path: Path) -> tuple[Config | None, list[str]]:
    """The validated config (None if it is unusable) and every problem found."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return None, str(exc).splitlines()
    problems = (model_problems(path, cfg) + rule_file_problems(path, cfg) + http_problems(path, cfg)
                + state_problems(path, cfg))
    return cfg, problems


def model_problems(path: Path, cfg: Config) -> list[str]:
    from daemon.engine.bundle import locate

    try:
        locate(cfg.model.dir, cfg.model.tokenizer, cfg.model.vit)
    except ModelError as exc:
        message = " ".join(line.strip() for line in str(exc).splitlines())
        return [f"{path}:{line_of(path, ('model', 'dir'))}: model.dir: {message}"]
    return []


def rule_file_problems(path: Path, cfg: Config) -> list[str]:
    """Every problem of the rule files, as `FILE:LINE: rule id: message` (see daemon.rule_files)."""
    from daemon.rules.files import check_rules

    if cfg.rules is None:
        return []
    if not cfg.rules.is_dir():
        return [f"{path}:{line_of(path, ('rules',))}: rules: rule directory {cfg.rules} does not exist"]
    return check_rules(cfg.rules, cameras=[c.name for c in cfg.cameras])[1]


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
    from daemon.store import check_file

    if not cfg.state_dir.is_dir():
        return []
    line = line_of(path, ("state_dir",))
    found = [check_file(f, "the state file") for f in sorted(cfg.state_dir.glob("*.sqlite"))]
    return [f"{path}:{line}: state_dir: {problem}" for problem in found if problem is not None]
