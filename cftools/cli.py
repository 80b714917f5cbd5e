"""What every command shares: option meanings, error handling, messages and progress.

A command is a click command built with ``cls=CfCommand`` (or ``CfGroup``): every failure
becomes one line on stderr and a non-zero exit, with the traceback only under ``--debug``.
stdout carries data only; messages, warnings, tables and progress go to stderr.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from .errors import CfError, brief

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _prog() -> str:
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "cftools"


def _report_failure(prog: str, err: BaseException, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exception(err)
    if isinstance(err, KeyboardInterrupt):
        click.echo(f"{prog}: interrupted", err=True)
        return EXIT_INTERRUPTED
    if isinstance(err, click.ClickException):
        message = " ".join(err.format_message().split())
        click.echo(f"{prog}: error: {message} (see {prog} --help)", err=True)
        return err.exit_code
    if isinstance(err, CfError):
        click.echo(f"{prog}: error: {err}", err=True)
        return EXIT_ERROR
    if isinstance(err, MemoryError):
        click.echo(f"{prog}: error: out of memory; try a smaller --batch-size", err=True)
        return EXIT_ERROR
    first = brief(err, 300)
    click.echo(f"{prog}: internal error: {type(err).__name__}: {first} "
               f"(rerun with --debug for the traceback)", err=True)
    return EXIT_ERROR


def _print_version(ctx, param, value):
    if value and not ctx.resilient_parsing:
        from . import __version__

        click.echo(f"{ctx.info_name or _prog()} (cftools) {__version__}")
        ctx.exit(0)


class _OneLineErrors(click.Command):
    """Base of CfCommand and CfGroup: run click in non-standalone mode and turn every
    failure into one line. Every command built on it takes --version."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.append(click.Option(["--version"], is_flag=True, expose_value=False,
                                        is_eager=True, callback=_print_version,
                                        help="Print the cftools version and exit."))

    def main(self, args=None, prog_name=None, **extra):  # type: ignore[override]
        args = list(sys.argv[1:] if args is None else args)
        # the command's own name (cf-knn), also when run as python -m cftools.commands.knn
        prog = str(prog_name or (self.name if (self.name or "").startswith("cf-") else _prog()))
        debug = "--debug" in args or os.environ.get("CFTOOLS_DEBUG") == "1"
        try:
            rv = super().main(args=args, prog_name=prog, standalone_mode=False, **extra)
        except click.exceptions.Exit as ex:
            sys.exit(ex.exit_code)
        except click.exceptions.Abort:
            click.echo(f"{prog}: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except BaseException as err:  # noqa: BLE001 - the whole point is to catch all
            if isinstance(err, SystemExit):
                raise
            sys.exit(_report_failure(prog, err, debug))
        sys.exit(rv if isinstance(rv, int) else 0)


class CfCommand(_OneLineErrors, click.Command):
    pass


class CfGroup(_OneLineErrors, click.Group):
    """A command with subcommands; ``default_command`` runs when the first argument names
    none of them (so ``cf-eval PRED --truth T`` means ``cf-eval clusters PRED --truth T``)."""

    command_class = click.Command
    default_command: str | None = None

    def __init__(self, *args, **kwargs):
        # with no arguments, say so in one line rather than the whole help squashed into it
        kwargs.setdefault("no_args_is_help", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx, args):
        if (self.default_command and args and args[0] not in self.commands
                and args[0] not in ("-h", "--help", "--version")):
            args = [self.default_command] + list(args)
        return super().parse_args(ctx, args)


# ----------------------------------------------------------------- shared options

def quiet_option(f):
    return click.option("-q", "--quiet", is_flag=True,
                        help="No progress bars or messages; errors and warnings still go to stderr.")(f)


def debug_option(f):
    """--debug: read by the error handler (from argv, before click parses), never by the
    command itself."""
    return click.option("--debug", is_flag=True, expose_value=False,
                        help="Show the full traceback on failure.")(f)


def device_option(f):
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                        show_default=True,
                        help="Where to compute: auto uses the GPU when one is present.")(f)


def bf16_inference_option(f):
    """--bf16/--no-bf16 of the commands that run a trained model (cf-link, cf-merge add)."""
    return click.option("--bf16/--no-bf16", default=None,
                        help="bfloat16 inference [default: where the CPU/GPU supports it].")(f)


def seed_option(f):
    return click.option("--seed", type=int, default=0, show_default=True,
                        help="Seed of every random choice, so runs repeat exactly.")(f)


def batch_size_option(default: int):
    def deco(f):
        return click.option("--batch-size", type=click.IntRange(min=1), default=default,
                            show_default=True,
                            help="Rows processed at once; lower it to use less memory.")(f)
    return deco


def checkpoint_options(default: str):
    """--checkpoint PATH (a pathlib.Path, or None for ``default``) and --resume, the same
    in both trainers (cf-train, cf-embed train)."""
    def deco(f):
        f = click.option("--resume", is_flag=True,
                         help="Continue from the checkpoint (--checkpoint; same options and "
                              "data); the result equals an uninterrupted run.")(f)
        return click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
                            default=None,
                            help=f"Checkpoint written after every epoch [default: {default}].")(f)
    return deco


def common_options(f):
    """-q/--quiet and --debug, which every command takes."""
    return quiet_option(debug_option(f))


# ----------------------------------------------------------------- messages and progress

class Reporter:
    """Messages and progress on stderr, silenced by --quiet (warnings never are)."""

    def __init__(self, quiet: bool = False, prog: str | None = None):
        self.quiet = quiet
        ctx = click.get_current_context(silent=True)
        self.prog = prog or (ctx.find_root().info_name if ctx else None) or _prog()

    def info(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, err=True)

    def warn(self, message: str) -> None:
        click.echo(f"{self.prog}: warning: {message}", err=True)

    def progress(self, iterable=None, *, total=None, desc: str = "", unit: str = "it"):
        """A progress bar on a terminal; where stderr is not one (a log file, a pipe), a
        line at each tenth of the work instead of carriage-return frames."""
        if iterable is not None and total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        if self.quiet or not sys.stderr.isatty():
            return LineProgress(iterable, total=total, desc=desc, unit=unit,
                                prog=self.prog, quiet=self.quiet)
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr,
                    dynamic_ncols=True, leave=False)

    def table(self, table) -> None:
        """Print a rich Table on stderr."""
        if self.quiet:
            return
        from rich.console import Console

        Console(stderr=True).print(table)


class LineProgress:
    """Progress as lines (a log keeps them, unlike a bar's frames): one at each tenth of
    ``total`` and one at the end, "PROG: DESC: 30% (300/1000 UNIT, 4.2 s)". With
    ``quiet``, nothing. Used like a tqdm bar: update, set_postfix, close, a context."""

    def __init__(self, iterable=None, *, total=None, desc: str = "", unit: str = "it",
                 prog: str = "cftools", quiet: bool = False):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.prog, self.quiet = prog, quiet
        self.n = 0
        self.tenths = 0  # tenths reported so far
        self.postfix = ""
        self.start = time.perf_counter()
        self.closed = False

    def __iter__(self):
        for item in self.iterable if self.iterable is not None else ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total:
            reached = min(10, int(10 * self.n / self.total))
            if reached > self.tenths:
                self.tenths = reached
                self._line(f"{10 * reached}%")

    def close(self) -> None:
        if not self.closed and (not self.total or self.tenths < 10):
            self._line("done")
        self.closed = True

    def _line(self, state: str) -> None:
        if self.quiet:
            return
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        extra = f", {self.postfix}" if self.postfix else ""
        click.echo(f"{self.prog}: {self.desc}: {state} ({count} {self.unit}, "
                   f"{time.perf_counter() - self.start:.1f} s{extra})", err=True)
