"""Helpers every command shares: loading the config with readable errors, logging."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click

from ..config import Config, load_config, parse_config, take_carried_config_text
from ..errors import ConfigError, PipelineError, StopRequested
from ..logs import setup_logging
from ..redaction import scrub
from .registry import build_registry

__all__ = ["EXIT_CONFIG", "broker_option", "collector_paused", "config_option", "fail", "load",
           "log_options"]

EXIT_CONFIG = 2
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(scrub(f"tailrace: {message}"), err=True)
    sys.exit(code)


def load(path: str) -> Config:
    """Load and validate the config; on error print every problem and exit 2.

    A process re-executed by a reload runs the text it validated before the exec (carried
    over it), whatever the file holds now."""
    try:
        with collector_paused():  # the registry imports the plugins the config names
            carried = take_carried_config_text()
            if carried is not None:
                return parse_config(carried, path, build_registry())
            return load_config(path, build_registry())
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        n = len(exc.problems)
        click.echo(f"tailrace: {n} problem{'s' if n != 1 else ''} in {path}", err=True)
        sys.exit(EXIT_CONFIG)


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a process imports its modules and builds its
    config: they allocate ~100,000 objects that live as long as the process, and each of
    the collector's passes over them frees nothing (~20-30 ms of every start-up)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def config_option(f: F) -> F:
    return click.option(
        "-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
        envvar="TAILRACE_CONFIG", help="Pipeline config (YAML).",
    )(f)


def broker_option(f: F) -> F:
    return click.option(
        "--broker", envvar="TAILRACE_BROKER", default=None,
        help="Redis URL; overrides service.broker (env TAILRACE_BROKER).",
    )(f)


def log_options(f: F) -> F:
    f = click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
                     default=None, help="Overrides service.log_level.")(f)
    f = click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
                     help="Overrides service.log_format.")(f)
    return f


def init_logging(config: Config, role: str, level: str | None, fmt: str | None) -> None:
    setup_logging(level or config.service.log_level, fmt or config.service.log_format, role)


def run_role(fn: Callable[[], None]) -> None:
    """Run a role's main function; turn tailrace errors into a message and exit code 1."""
    try:
        fn()
    except StopRequested:
        return  # stopped before anything started: nothing to drain, a clean exit
    except PipelineError as exc:
        fail(str(exc))


def child_env(broker: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if broker:
        env["TAILRACE_BROKER"] = broker
    return env
