"""Everything `vlmwatch check-config` and `vlmwatch run` validate before starting:
the config, the model files and the rule files. Every problem is one line,
`FILE:LINE: key.path: message`.
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
    problems = model_problems(path, cfg) + rule_file_problems(path, cfg)
    return cfg, problems


def model_problems(path: Path, cfg: Config) -> list[str]:
    from daemon.engine.bundle import locate

    try:
        files = locate(cfg.model.dir, cfg.model.tokenizer, cfg.model.vit)
    except ModelError as exc:
        message = " ".join(line.strip() for line in str(exc).splitlines())
        return [f"{path}:{line_of(path, ('model', 'dir'))}: model.dir: {message}"]
    problem = cfg.model.device_problem(files.kind)
    if problem is not None:
        return [f"{path}:{line_of(path, ('model', 'devices'))}: model.devices: {problem}"]
    return []


def rule_file_problems(path: Path, cfg: Config) -> list[str]:
    """Every problem of the rule files, as `FILE:LINE: rule id: message` (see daemon.rule_files)."""
    from daemon.rules.files import check_rules

    if cfg.rules is None:
        return []
    if not cfg.rules.is_dir():
        return [f"{path}:{line_of(path, ('rules',))}: rules: rule directory {cfg.rules} does not exist"]
    return check_rules(cfg.rules, cameras=[c.name for c in cfg.cameras])[1]
