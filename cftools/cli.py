"""What every command shares: option meanings, error handling, messages and progress.

A command is a click command built with ``cls=CfCommand`` (or ``CfGroup``): every failure
becomes one line on stderr and a non-zero exit, with the traceback only under ``--debug``.
stdout carries data only; messages, warnings, tables and progress go to stderr.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import sys
import time
from pathlib import Path

import click

from .errors import CfError, brief
from .process import Terminated, command_process, printable

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it; SIGTERM 143, SIGHUP 129
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _say(text: str) -> None:
    click.echo(printable(text), err=True)


def _prog() -> str:
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "cftools"


def _has_batch_size(command: click.Command, args: list) -> bool:
    """Whether the (sub)command these arguments run takes --batch-size."""
    if isinstance(command, click.Group):
        sub = next((command.commands[a] for a in args if a in command.commands), None)
        default = getattr(command, "default_command", None)
        if sub is None and default:
            sub = command.commands.get(default)
        return sub is not None and _has_batch_size(sub, [])
    return any(p.name == "batch_size" for p in command.params)


def _no_space_message(err: OSError) -> str:
    name = getattr(err, "filename", None)
    return "no space left on device" + (f" writing {name}" if name else "")


def _report_failure(prog: str, err: BaseException, debug: bool, batch_size: bool = False) -> int:
    if debug:
        import traceback

        traceback.print_exception(err)
    if isinstance(err, KeyboardInterrupt):
        _say(f"{prog}: interrupted")
        return EXIT_INTERRUPTED
    if isinstance(err, Terminated):
        _say(f"{prog}: terminated by {signal.Signals(err.signum).name}")
        return 128 + err.signum
    if isinstance(err, click.ClickException):
        message = " ".join(err.format_message().split())
        _say(f"{prog}: error: {message} (see {prog} --help)")
        return err.exit_code
    if isinstance(err, CfError):
        _say(f"{prog}: error: {err}")
        return err.exit_code
    if isinstance(err, MemoryError):
        # what the files declare is checked before they are read (formats/artifacts.py,
        # interop.py): what is left is the work itself
        hint = "; try a smaller --batch-size" if batch_size else ""
        what = brief(err, 160)
        _say(f"{prog}: error: out of memory" + (f" ({what})" if what else "") + hint)
        return EXIT_ERROR
    if isinstance(err, OSError) and err.errno in NO_SPACE:
        _say(f"{prog}: error: {_no_space_message(err)}")
        return EXIT_ERROR
    first = brief(err, 300)
    _say(f"{prog}: internal error: {type(err).__name__}: {first} "
         f"(rerun with --debug for the traceback)")
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
        as_process = args is None  # the console script (or python -m): this process is ours
        args = list(sys.argv[1:] if args is None else args)
        # the command's own name (cf-knn), also when run as python -m cftools.commands.knn
        prog = str(prog_name or (self.name if (self.name or "").startswith("cf-") else _prog()))
        debug = "--debug" in args or os.environ.get("CFTOOLS_DEBUG") == "1"
        code: int = 0
        process = command_process(prog).__enter__()  # signals and warnings as cftools says
        try:
            rv = super().main(args=args, prog_name=prog, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except click.exceptions.Exit as ex:
            code = ex.exit_code
        except click.exceptions.Abort:
            _say(f"{prog}: interrupted")
            code = EXIT_INTERRUPTED
        except BaseException as err:  # noqa: BLE001 - the whole point is to catch all
            if isinstance(err, SystemExit):
                raise
            code = _report_failure(prog, err, debug, _has_batch_size(self, args))
            if as_process and getattr(err, "hard_exit", False):
                # a library (HDF5 after a failed write) would crash in its own clean-up at
                # exit: the temporaries are gone already, so end here
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        finally:
            process.__exit__(None, None, None)
        sys.exit(code)


def _refuse_both_of_a_pair(command: click.Command, args: list) -> None:
    """An on/off flag pair (--reciprocal/--directed) given both ways is a usage error,
    not "the last one wins"."""
    args = args[:args.index("--")] if "--" in args else args
    for p in command.params:
        if isinstance(p, click.Option) and p.is_flag and p.secondary_opts:
            on = [a for a in args if a in p.opts]
            off = [a for a in args if a in p.secondary_opts]
            if on and off:
                raise click.UsageError(f"{on[0]} and {off[0]} exclude each other; give one")


class CfCommand(_OneLineErrors, click.Command):
    def parse_args(self, ctx, args):
        _refuse_both_of_a_pair(self, args)
        return super().parse_args(ctx, args)


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
        if args and args[0] in self.commands:
            _refuse_both_of_a_pair(self.commands[args[0]], args[1:])
        return super().parse_args(ctx, args)


# ----------------------------------------------------------------- option types

# the largest count an option takes: the C int that faiss and torch read many of them into
MAX_COUNT = 2 ** 31 - 1
MAX_WORKERS = 256  # processes a command may start: more only thrash (and each costs memory)
MAX_DIM = 1 << 16  # a feature dimension or an embedding's: far above any face or image model
MAX_SEED = 2 ** 31 - 1  # faiss's k-means seed is a C int; numpy's and torch's take more


class FiniteFloat(click.FloatRange):
    """Every float option's type: a finite number (NaN and +-Inf refused: NaN passes every
    comparison of a range check, Inf makes sums NaN), within [min, max] where given
    (open ends with min_open/max_open). A bad value is a usage error (exit 2)."""

    name = "float"

    def span(self) -> str:
        """The values taken, as the messages and --help say them: [0, 1], > 0, ..."""
        lo, hi = self.min, self.max
        if lo is not None and hi is not None:
            return (f"{'(' if self.min_open else '['}{lo:g}, {hi:g}"
                    f"{')' if self.max_open else ']'}")
        if lo is not None:
            return f"{'>' if self.min_open else '>='} {lo:g}"
        if hi is not None:
            return f"{'<' if self.max_open else '<='} {hi:g}"
        return ""

    def convert(self, value, param, ctx):
        try:
            rv = float(value)
        except (TypeError, ValueError):
            rv = None
        span = self.span()
        want = "a finite number" + (f" {'in ' if span.startswith(('[', '(')) else ''}{span}"
                                    if span else "")
        if rv is None or not math.isfinite(rv) or not self._inside(rv):
            self.fail(f"must be {want}, got {value!r}", param, ctx)
        return rv

    def _inside(self, x: float) -> bool:
        if self.min is not None and (x <= self.min if self.min_open else x < self.min):
            return False
        return self.max is None or not (x >= self.max if self.max_open else x > self.max)


class Count(click.IntRange):
    """Every integer option's type: within [min, max], max at most MAX_COUNT (larger
    values overflow the C ints of faiss and torch)."""

    name = "integer"

    def __init__(self, min=None, max=None, **kwargs):
        super().__init__(min=min, max=MAX_COUNT if max is None else max, **kwargs)


class LengthList(click.ParamType):
    """Comma-separated sequence lengths ("21,31,51"), each an integer in [2, MAX_COUNT]:
    a sorted list without repeats. A bad value is a usage error (exit 2)."""

    name = "lengths"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        item = Count(min=2)
        parts = [p.strip() for p in str(value).split(",")]
        if not all(parts):
            self.fail(f"{value!r} is not a comma-separated list of lengths", param, ctx)
        return sorted({int(item.convert(p, param, ctx)) for p in parts})  # type: ignore[arg-type]


class ChoiceList(click.ParamType):
    """Comma-separated names, each one of ``choices`` ("infomap,peaks"): a tuple in the
    order of ``choices``, without repeats. A bad name is a usage error (exit 2)."""

    name = "names"

    def __init__(self, choices):
        self.choices = tuple(choices)

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = {p.strip() for p in str(value).split(",")}
        unknown = sorted(parts - set(self.choices))
        if unknown:
            self.fail(f"{', '.join(map(repr, unknown))}: choose from {', '.join(self.choices)}",
                      param, ctx)
        return tuple(c for c in self.choices if c in parts)


class Seed(click.IntRange):
    """--seed: an integer in [0, 2^31), which every random generator cftools seeds takes."""

    name = "seed"

    def __init__(self):
        super().__init__(min=0, max=MAX_SEED)


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
    return click.option("--seed", type=Seed(), default=0, show_default=True,
                        help="Seed of every random choice, so runs repeat exactly "
                             "(0 to 2^31-1).")(f)


def batch_size_option(default: int):
    def deco(f):
        return click.option("--batch-size", type=Count(min=1), default=default,
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
            _say(message)

    def warn(self, message: str) -> None:
        _say(f"{self.prog}: warning: {message}")

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
