"""`vlmwatch check-config` and `vlmwatch run`: validate everything, then start."""

from __future__ import annotations

import sys
from pathlib import Path

from daemon.errors import ConfigError


def add_cli(sub) -> None:
    p = sub.add_parser("check-config", help="validate the config, rule files and model files; start nothing")
    p.add_argument("-c", "--config", type=Path, required=True, help="configuration file")
    p.set_defaults(func=run_check)


def run_check(args) -> int:
    from daemon.checks import check_all

    cfg, problems = check_all(args.config)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return ConfigError.exit_code
    print(f"{args.config}: OK ({len(cfg.cameras)} camera(s), model {cfg.model.dir})")
    return 0
