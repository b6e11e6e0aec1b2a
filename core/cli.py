"""One declaration per option: a command's options are the fields of one dataclass (as
vLLM's `EngineArgs` builds its CLI), and one way out on bad input (`fail`, `main`).

    @dataclass
    class Settings:
        port: int = option(8000, "Port to bind.", envvar="PORT")

    @command(app, Settings)
    def run(settings: Settings) -> None: ...

A field whose type is itself such a dataclass (declared with `group()`) contributes its
options too, so a config shared by a library function and a command is declared once.
"""
from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from typing import Annotated, Any, Callable, TypeVar

import typer

from core.errors import UserError

T = TypeVar("T")
_CLI = "cli"
_GROUP = "cli_group"


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
           envvar: str | None = None, flags: tuple[str, ...] = (), parser: Callable[[str], Any] | None = None,
           metavar: str | None = None) -> Any:
    """A dataclass field that is also a command-line option (`--field-name` unless `flags`)."""
    info = typer.Option(*flags, help=help, envvar=envvar, parser=parser, metavar=metavar or ("TEXT" if parser else None),
                        show_default=parser is None)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={_CLI: info})
    return dataclasses.field(default=default, metadata={_CLI: info})


def group(cls: type) -> Any:
    """A dataclass field holding another options dataclass (its defaults)."""
    return dataclasses.field(default_factory=cls, metadata={_GROUP: True})


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return ...  # required


def _parameters(cls: type) -> list[tuple[tuple[str, ...], inspect.Parameter]]:
    """(path of field names, CLI parameter) for every option of `cls`, groups flattened."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get(_GROUP):
            out += [((f.name, *path), p) for path, p in _parameters(hints[f.name])]
        elif _CLI in f.metadata:
            p = inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_default(f),
                                  annotation=Annotated[hints[f.name], f.metadata[_CLI]])
            out.append(((f.name,), p))
    return out


def _build(cls: type[T], values: dict[tuple[str, ...], Any]) -> T:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get(_GROUP):
            inner = {path[1:]: v for path, v in values.items() if path[0] == f.name}
            kwargs[f.name] = _build(hints[f.name], inner)
        elif (f.name,) in values:
            kwargs[f.name] = values[(f.name,)]
    return cls(**kwargs)


def command(app: typer.Typer, cls: type[T], *, name: str | None = None, callback: bool = False,
            **settings: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register `fn(options: cls[, ctx])` as a command (or the app's callback) whose options are
    the option fields of `cls`. `fn` receives a `typer.Context` too when it declares `ctx`."""

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
        if callback:
            app.callback(invoke_without_command=True, **settings)(wrapper)
        else:
            app.command(name, **settings)(wrapper)
        return fn

    return decorate


def comma_list(value: str | typing.Sequence[str]) -> tuple[str, ...]:
    """An option's comma-separated names as a tuple (a sequence passes through as one)."""
    return tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) else tuple(value)


def pairs(value: str | dict[str, str]) -> dict[str, str]:
    """`a=b,c=d` as {a: b, c: d}."""
    if isinstance(value, dict):
        return value
    out = {}
    for item in comma_list(value):
        key, sep, val = item.partition("=")
        if not (sep and key.strip() and val.strip()):
            raise ValueError(f"{item!r}: use NAME=VALUE, comma-separated")
        out[key.strip()] = val.strip()
    return out


def parse_size(value: str | tuple[int, int]) -> tuple[int, int]:
    """`WxH` (e.g. 320x240) as (W, H)."""
    if isinstance(value, tuple):
        return value
    w, sep, h = value.lower().partition("x")
    if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise ValueError(f"{value!r}: use WxH with positive integers, e.g. 320x240")
    return int(w), int(h)


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def _say(message: str) -> None:
    typer.secho(f"error: {one_line(message)}", fg="red", err=True)


def fail(message: str) -> typing.NoReturn:
    """Print `error: <message>` as one line on stderr and exit 2 (no traceback)."""
    _say(message)
    raise typer.Exit(2)


def main(app: typer.Typer) -> None:
    """Run a package's CLI: a UserError, or an OS error on a named file, wherever it is raised,
    ends the run with one line and exit 2 instead of a traceback."""
    try:
        app()
    except UserError as e:
        _say(str(e))
        sys.exit(2)
    except OSError as e:
        if e.filename is None:
            raise
        _say(f"{e.filename}: {e.strerror or e}")
        sys.exit(2)
