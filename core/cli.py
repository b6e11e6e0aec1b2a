"""One declaration per option: a command's options are the fields of one dataclass (as
vLLM's `EngineArgs` builds its CLI), and one way out on bad input (`fail`, `main`).

    @dataclass
    class Settings:
        port: int = option(8000, "Port to bind.")
        runs: RunsDir = group(RunsDir)           # a shared group: its options, declared once

    @command(app, Settings)
    def run(settings: Settings) -> None: ...

A field declared with `argument()` is a positional argument. An option with a `parser`
takes one string on the command line (`--frame-size 128x128`, `--shard 0/2`), whatever
the field's type, and shows its default as it would be typed.
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer import Abort

from core import progress
from core.errors import UserError

T = TypeVar("T")
# click's UsageError (bad option, missing argument, no such option) is not exported by typer,
# which vendors click; its public BadParameter derives from it.
UsageError: type[Exception] = typer.BadParameter.__mro__[1]
_INVOKED: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("invoked", default=())
_CLI = "cli"
_GROUP = "cli_group"
_SHOWN = "cli_shown"


def app(help: str | None, **settings: Any) -> typer.Typer:
    """A command-line app as every package's: help printed as written (no terminal markup, so
    `[data]` or `[/v1]` stay text), no shell-completion options."""
    return typer.Typer(add_completion=False, rich_markup_mode=None, help=help, **settings)


def shown(value: Any) -> str | None:
    """A default as a user would type it (None: nothing to show)."""
    if value is None or value is ... or value == () or value == {}:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


@dataclasses.dataclass(frozen=True)
class _Spec:
    """How a field appears on the command line."""

    help: str
    positional: bool = False
    envvar: str | None = None
    flags: tuple[str, ...] = ()
    parser: Callable[[str], Any] | None = None
    metavar: str | None = None
    shown: str | None = None  # the default in words, for one that depends on the machine or the data
    hidden: bool = False

    def info(self, default: Any, hint: Any) -> Any:
        show = self.shown or (default is not None and default is not ... and default is not False)
        if self.positional:
            return typer.Argument(help=self.help, parser=self.parser, metavar=self.metavar, show_default=show)
        return typer.Option(
            *self.flags,
            help=self.help,
            envvar=self.envvar,
            parser=self.parser,
            metavar=self.metavar or metavar_of(hint),
            show_default=show,
            hidden=self.hidden,
        )


METAVARS = {int: "N", float: "NUMBER", str: "TEXT", Path: "PATH"}


def metavar_of(hint: Any) -> str | None:
    """What a value of this type looks like in help: N, NUMBER, TEXT, PATH, a|b (None: a flag)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] if _is_union(hint) else [hint]
    inner = args[0] if len(args) == 1 else hint
    if typing.get_origin(inner) is list:
        inner = typing.get_args(inner)[0]
    if typing.get_origin(inner) is typing.Literal:
        return "|".join(map(str, typing.get_args(inner)))
    return None if inner is bool else METAVARS.get(inner, "TEXT")


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    envvar: str | None = None,
    flags: tuple[str, ...] = (),
    parser: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    shown: str | None = None,
    hidden: bool = False,
) -> Any:
    """A dataclass field that is also a command-line option (`--field-name` unless `flags`);
    `shown`: the default in words when it depends on the machine or the data."""
    spec = _Spec(help, envvar=envvar, flags=flags, parser=parser, metavar=metavar, shown=shown, hidden=hidden)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={_CLI: spec})
    return dataclasses.field(default=default, metadata={_CLI: spec})


def argument(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    parser: Callable[[str], Any] | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field that is a positional command-line argument."""
    return dataclasses.field(
        default=default, metadata={_CLI: _Spec(help, positional=True, parser=parser, metavar=metavar)}
    )


def group(cls: type, shown: Mapping[str, str] | None = None, **defaults: Any) -> Any:
    """A dataclass field holding another options dataclass; `defaults` override its own, and
    `shown` how the help states them (option field -> words)."""
    return dataclasses.field(
        default_factory=lambda: cls(**defaults), metadata={_GROUP: defaults, _SHOWN: dict(shown or {})}
    )


def _default(f: dataclasses.Field, overrides: Mapping[str, Any]) -> Any:
    if f.name in overrides:
        return overrides[f.name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return ...  # required


def _cli_type(hint: Any, spec: _Spec) -> Any:
    """The type typer sees: one string for an option with a parser (a list of them when the
    option repeats), else the field's own type."""
    if spec.parser is None:
        return hint
    repeats = any(typing.get_origin(a) is list for a in (typing.get_args(hint) if _is_union(hint) else (hint,)))
    return list[str] if repeats else str


def _typed_as(default: Any, spec: _Spec) -> Any:
    """An option with a parser gets its default as a user would type it (the parser reads it
    back), so the help shows it that way: 4,8,16 or 224x160, not a Python tuple."""
    if spec.parser is None or spec.shown or shown(default) is None:
        return default
    show = getattr(spec.parser, "show", shown)  # a parser may say how its values are typed
    return [show(d) for d in default] if isinstance(default, list) else show(default)


def _parameters(
    cls: type, overrides: Mapping[str, Any] = {}, shown_as: Mapping[str, str] = {}
) -> list[tuple[tuple[str, ...], inspect.Parameter]]:
    """(path of field names, CLI parameter) for every option of `cls`, groups flattened."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if _GROUP in f.metadata:
            inner = _parameters(hints[f.name], f.metadata[_GROUP], f.metadata[_SHOWN])
            out += [((f.name, *path), p) for path, p in inner]
        elif _CLI in f.metadata:
            spec: _Spec = f.metadata[_CLI]
            if f.name in shown_as:
                spec = dataclasses.replace(spec, shown=shown_as[f.name])
            default = _typed_as(_default(f, overrides), spec)
            annotation = Annotated[_cli_type(hints[f.name], spec), spec.info(default, hints[f.name])]
            out.append(
                (
                    (f.name,),
                    inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation),
                )
            )
    return out


def _build(cls: type[T], values: dict[tuple[str, ...], Any], overrides: Mapping[str, Any] = {}) -> T:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = dict(overrides)
    for f in dataclasses.fields(cls):
        if _GROUP in f.metadata:
            inner = {path[1:]: v for path, v in values.items() if path[0] == f.name}
            kwargs[f.name] = _build(hints[f.name], inner, f.metadata[_GROUP])
        elif (f.name,) in values:
            kwargs[f.name] = values[(f.name,)]
    return cls(**kwargs)


def parsed_options(cls: type) -> list[str]:
    """The flags of `cls`'s options that read their value with a parser of their own
    (`--frame-size`, `--models`, ...), groups included."""
    names = []
    for _, p in _parameters(cls):
        info = typing.get_args(p.annotation)[1]
        if isinstance(info, typer.models.OptionInfo) and info.parser is not None:
            names.append(info.param_decls[0] if info.param_decls else "--" + p.name.replace("_", "-"))
    return names


def _shown_name(param: Any) -> str:
    """A positional argument as help shows it: RUN, RUN_B, RUNS..."""
    return param.name.upper() + ("..." if param.nargs == -1 else "")


class Command(typer.core.TyperCommand):
    """A command whose help names positional arguments as a user types them (RUN, [RUN_B],
    RUNS...), not as Python types."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if p.param_type_name == "argument":
                pieces.append(_shown_name(p) if p.required else f"[{_shown_name(p)}]")
        return pieces

    def format_options(self, ctx: typer.Context, formatter: Any) -> None:
        args = [
            (_shown_name(p), p.help + ("  [required]" if p.required else ""))
            for p in self.get_params(ctx)
            if p.param_type_name == "argument"
        ]
        opts = [r for p in self.get_params(ctx) if p.param_type_name == "option" and (r := p.get_help_record(ctx))]
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class PassOn(Command):
    """A command that passes what follows `--` on to another program, unparsed: `passed_on(ctx)`."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if "--" in args:
            at = args.index("--")
            ctx.meta["passed_on"] = args[at + 1 :]
            args = args[:at]
        return super().parse_args(ctx, args)


def passed_on(ctx: typer.Context) -> list[str]:
    """What followed `--` on a PassOn command's line ([] when nothing did)."""
    return list(ctx.meta.get("passed_on", []))


def command(
    app: typer.Typer,
    cls: type[T],
    *,
    name: str | None = None,
    callback: bool = False,
    pass_on: bool = False,
    **settings: Any,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register `fn(options: cls[, ctx])` as a command (or the app's callback) whose options are
    the option fields of `cls`. `fn` receives a `typer.Context` too when it declares `ctx`;
    with `pass_on`, what follows `--` is kept for another program (`passed_on`)."""

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        wants_ctx = "ctx" in inspect.signature(fn).parameters
        params = _parameters(cls)
        paths = {p.name: path for path, p in params}
        if len(paths) != len(params):
            raise TypeError(f"{cls.__name__}: two options share a name")

        def wrapper(ctx: typer.Context, **values: Any) -> None:
            if callback and ctx.invoked_subcommand is not None:
                return
            options = _build(cls, {paths[k]: v for k, v in values.items()})
            fn(options, ctx=ctx) if wants_ctx else fn(options)

        ctx_param = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        signature = inspect.Signature([ctx_param, *(p for _, p in params)])
        wrapper.__signature__ = signature  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        wrapper.__doc__ = fn.__doc__
        wrapper.__name__ = name or fn.__name__
        wrapper.__module__ = fn.__module__  # `prog_of` names the package by it
        wrapper.options_class = cls  # type: ignore[attr-defined]  (what `parsed_options` reads)
        wrapper.options_of = lambda values: _build(cls, {paths[k]: v for k, v in values.items()})  # type: ignore[attr-defined]
        if callback:
            app.callback(invoke_without_command=True, **settings)(wrapper)
        else:
            app.command(name, cls=PassOn if pass_on else Command, **settings)(wrapper)
        return fn

    return decorate


def comma_list(value: str | typing.Sequence[str]) -> tuple[str, ...]:
    """An option's comma-separated names as a tuple (a sequence passes through as one)."""
    if not isinstance(value, str):
        return tuple(value)
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names:
        raise ValueError(f"{value!r}: give one or more names, comma-separated")
    return names


def counts(value: str | typing.Sequence[int]) -> tuple[int, ...]:
    """`1,2,4` as (1, 2, 4): positive whole numbers, comma-separated."""
    if not isinstance(value, str):
        return tuple(value)
    parts = comma_list(value)
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"{value!r}: give positive whole numbers, comma-separated, e.g. 1,8,64")
    return tuple(int(p) for p in parts)


def names(help: str, shown: str) -> Any:
    """An option holding comma-separated names (models, variants), None when not given."""
    return option(None, help, parser=comma_list, metavar="NAME,...", shown=shown)


def shard_spec(value: str | tuple[int, int]) -> tuple[int, int]:
    """`i/n` with 0 <= i < n: shard i of n (`prepare --shard`, `interpret --shard`)."""
    if isinstance(value, tuple):
        return value
    i, sep, n = value.partition("/")
    if not (sep and i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
        raise ValueError(f"{value!r}: use i/n with 0 <= i < n, e.g. 0/4")
    return int(i), int(n)


def positive_ints(value: str | typing.Sequence[int]) -> tuple[int, ...]:
    """`4,8,16` as (4, 8, 16): positive whole numbers, comma-separated."""
    if not isinstance(value, str):
        return tuple(value)
    parts = comma_list(value)
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"{value!r}: use positive whole numbers, comma-separated, e.g. 4,8,16")
    return tuple(int(p) for p in parts)


def pairs(value: str | Mapping[str, str]) -> dict[str, str]:
    """`a=b,c=d` as {a: b, c: d}."""
    if isinstance(value, Mapping):
        return dict(value)
    out = {}
    for item in comma_list(value):
        key, sep, val = item.partition("=")
        if not (sep and key.strip() and val.strip()):
            raise ValueError(f"{item!r}: use NAME=VALUE, comma-separated")
        out[key.strip()] = val.strip()
    return out


RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def run_name(value: str) -> str:
    """A run id: a folder's name under the runs directory, never a path (letters, digits and
    . _ -, not starting with . or -)."""
    if not RUN_NAME.fullmatch(value) or len(value) > 200:
        raise ValueError(f"{value!r}: a run id is a name (letters, digits, '.', '_', '-'), not a path")
    return value


def parse_size(value: str | tuple[int, int]) -> tuple[int, int]:
    """`WxH` (e.g. 320x240) as (W, H)."""
    if isinstance(value, tuple):
        return value
    w, sep, h = value.lower().partition("x")
    if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise ValueError(f"{value!r}: use WxH with positive integers, e.g. 320x240")
    return int(w), int(h)


parse_size.show = lambda size: f"{size[0]}x{size[1]}"  # type: ignore[attr-defined]


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def _say(message: str) -> None:
    typer.secho(f"error: {one_line(message)}", fg="red", err=True)


def fail(message: str) -> typing.NoReturn:
    """Print `error: <message>` as one line on stderr and exit 2 (no traceback)."""
    _say(message)
    raise typer.Exit(2)


def warn(message: str) -> None:
    """A warning line on stderr."""
    typer.secho(message, fg="yellow", err=True)


def usage(e: UsageError) -> str:
    """A usage error as one line: the option, the value and the accepted forms."""
    message = re.sub(r"^Invalid value for '([^']+)': ", r"\1: ", e.format_message()).replace("Value error, ", "")
    if "valid integer" in message or "valid number" in message:  # pydantic's words for int and float
        message = message.split(":")[0] + f": not a {'whole ' if 'integer' in message else ''}number"
    return message[0].lower() + message[1:].rstrip(".")


def prog_of(app: typer.Typer) -> str:
    """How a package's app is typed: `python -m <package>`."""
    first = app.registered_callback or app.registered_commands[0]
    module = first.callback.__module__
    if module == "__main__":  # started as `python -m <package>`: its spec names the package
        module = getattr(sys.modules["__main__"].__spec__, "name", module)
    return f"python -m {module.split('.')[0]}"


def parse(app: typer.Typer, argv: Sequence[str]) -> Any:
    """What a command line gives its command, without running it: the options object (a
    dataclass) built from `argv` as `run` would build it. A usage error raises."""
    top = typer.main.get_command(app)
    ctx = top.make_context(prog_of(app), list(argv))
    cmd, rest = top, [*ctx._protected_args, *ctx.args]
    if rest and isinstance(top, typer.core.TyperGroup):  # a sub-command and its arguments
        cmd = top.get_command(ctx, rest[0])
        ctx = cmd.make_context(rest[0], rest[1:], parent=ctx)
    return cmd.callback.options_of(ctx.params)


def invoked() -> tuple[str, ...]:
    """The command line of the command running now, as typed (`python -m measure ...`)."""
    return _INVOKED.get()


def run(app: typer.Typer, argv: Sequence[str], prog: str | None = None) -> int:
    """Run a CLI on `argv` in this process and return its exit code: a bad option value, a
    UserError, or an OS error on a named file, wherever it is raised, ends it with one
    `error:` line on stderr and code 2 instead of a traceback or a usage box; Ctrl-C is 130."""
    prog = prog or prog_of(app)
    progress.only_ours()
    token = _INVOKED.set((*prog.split(), *argv))
    try:
        code = app(args=list(argv), prog_name=prog, standalone_mode=False)
    except UsageError as e:
        hint = f" (see {e.ctx.command_path} --help)" if e.ctx else ""
        _say(usage(e) + hint)
        return 2
    except (Abort, KeyboardInterrupt):
        return 130
    except typer.Exit as e:
        return e.exit_code
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except UserError as e:
        _say(str(e))
        return 2
    except OSError as e:
        if e.filename is None:
            raise
        _say(f"{e.filename}: {e.strerror or e}")
        return 2
    finally:
        _INVOKED.reset(token)
    return code if isinstance(code, int) else 0


def main(app: typer.Typer) -> None:
    """Run a package's CLI on this process's command line (`run`) and exit with its code."""
    sys.exit(run(app, sys.argv[1:]))
