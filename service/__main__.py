"""`python -m service`: serve the models with uvicorn, configured by RNNSERVE_* variables.

It takes no arguments but `--help` (`-h`), which lists every setting with its default and meaning.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from service.config import Settings
from service.logs import configure_logging
from service.server import serve

PROG = "python -m service"
HELP_WIDTH = 100

DESCRIPTION = """\
Serve the models of a model repository over HTTP: digit classification (POST /predict/digit),
forecasting (POST /forecast), the KServe V2 protocol (/v2), health (/health/live, /health/ready) and
metrics (/metrics). Every setting comes from an environment variable; SIGTERM drains, then stops."""


def main(argv: Sequence[str] | None = None) -> None:
    command_line().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "\n".join(
            f"  RNNSERVE_{'__'.join(map(str, e['loc'])).upper() or '(settings)'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        sys.exit(f"invalid configuration:\n{problems}")
    configure_logging(settings.log_level, settings.log_format)
    serve(settings)


class CommandLine(argparse.ArgumentParser):
    """argparse, with a mistake told in one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(
            2, f"{self.prog}: {message} (its settings are RNNSERVE_* variables; see {self.prog} --help)\n"
        )


def command_line() -> CommandLine:
    return CommandLine(
        prog=PROG,
        description=DESCRIPTION,
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def settings_help() -> str:
    """Every RNNSERVE_* variable with its default and description, as `--help` shows them."""
    lines = ["settings (environment variables, with their defaults):"]
    for name, field in Settings.model_fields.items():
        lines.append(f"  RNNSERVE_{name.upper()}={shown_default(field)}")
        text = " ".join(part for part in (field.description, choices(field)) if part)
        lines += textwrap.wrap(text, HELP_WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def shown_default(field: FieldInfo) -> str:
    """A field's default as it would be written in its environment variable."""
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value) if isinstance(value, str | Path | int | float) else repr(value)


def choices(field: FieldInfo) -> str:
    """ "One of: a, b." for a field that takes one of a few words."""
    if typing.get_origin(field.annotation) is not typing.Literal:
        return ""
    return f"One of: {', '.join(map(str, typing.get_args(field.annotation)))}."


if __name__ == "__main__":
    main()
