"""Everything `vlmwatch check-config` and `vlmwatch run` validate before starting:
the config, the model files and the rule files. Every problem is one line,
`FILE:LINE: key.path: message`.
"""

from __future__ import annotations

from pathlib import Path

import yaml

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
    from daemon.bundle import locate

    try:
        locate(cfg.model.dir, cfg.model.tokenizer, cfg.model.vit)
    except ModelError as exc:
        message = " ".join(line.strip() for line in str(exc).splitlines())
        return [f"{path}:{line_of(path, ('model', 'dir'))}: model.dir: {message}"]
    return []


def rule_file_problems(path: Path, cfg: Config) -> list[str]:
    """Each rule file must exist and be readable YAML (rule semantics are checked by the rules module)."""
    if cfg.rules is None:
        return []
    if not cfg.rules.is_dir():
        return [f"{path}:{line_of(path, ('rules',))}: rules: rule directory {cfg.rules} does not exist"]
    problems = []
    for file in sorted([*cfg.rules.glob("*.yaml"), *cfg.rules.glob("*.yml")]):
        try:
            yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{file}:1: cannot read the rule file ({exc})")
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problems.append(f"{file}:{mark.line + 1 if mark else 1}: not valid YAML: {getattr(exc, 'problem', exc)}")
    return problems
