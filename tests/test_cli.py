"""The `vlmwatch` command line: every sub-command explains itself in --help."""

from daemon.cli import build_parser


def test_every_command_has_a_description_in_its_help():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    missing = [name for name, parser in sub.choices.items() if not (parser.description or "").strip()]
    assert missing == []
    listed = {choice.dest for choice in sub._choices_actions if (choice.help or "").strip()}
    assert listed == set(sub.choices)  # and a one-line help in `vlmwatch --help`
