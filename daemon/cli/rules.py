"""`vlmwatch check-rules`: every problem of a folder of rule files.
"""

from __future__ import annotations

from pathlib import Path

from daemon.errors import ConfigError
from daemon.rules.files import check_rules, rule_files

# ----------------------------------------------------------------------------- CLI


def add_cli(sub) -> None:
    p = sub.add_parser(
        "check-rules", help="validate rule files; exit 2 listing every problem as FILE:LINE",
        description="Check a folder of rule files (or one file) without a config or model: every problem is"
        " printed as FILE:LINE: rule id: message and the exit code is 2. check-config also checks the"
        " cameras the rules name and that their questions fit the model.")
    p.add_argument("rules", type=Path, metavar="DIR", help="directory of rule files (*.yaml), or one file")
    p.set_defaults(func=run_check_rules)


def run_check_rules(args) -> int:
    from daemon.cli.common import report

    files = rule_files(args.rules)
    rules, problems = check_rules(args.rules)
    if report(problems):
        return ConfigError.exit_code
    print(f"{args.rules}: OK ({len(rules)} rule(s) in {len(files)} file(s))")
    return 0
