"""Configs from JSON: one checker for every stage's config dataclass.

`typed(cls, obj)` builds a dataclass from a JSON object, refusing unknown keys and values of the
wrong type with a one-line `ConfigError` naming the file and key; nested dataclasses are checked
the same way, and JSON lists become tuples where the field is a tuple.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from testtime import jsonio

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config or checkpoint. The message is one line, fit to show a user as is."""


def one_line(message: object, first_line: bool = False) -> str:
    """An error (or any message) as one line: its whitespace runs made single spaces, or with `first_line`
    only its first line; an empty message gives the exception's type name."""
    text = str(message).strip()
    if first_line:
        text = text.splitlines()[0] if text else ""
    return " ".join(text.split()) or type(message).__name__


def with_overrides(cfg: T, values: dict[str, Any]) -> T:
    """`cfg` with the values of dotted field paths replaced (`{"ttt_cfg.epochs": 3}`), by `dataclasses.replace`;
    a path the config does not have is a one-line ConfigError."""
    for path, value in values.items():
        cfg = _replace_path(cfg, path.split("."), value, path)
    return cfg


def _replace_path(obj: Any, keys: list[str], value: Any, path: str) -> Any:
    if not is_dataclass(obj) or keys[0] not in {f.name for f in fields(obj)}:
        raise ConfigError(f"{type(obj).__name__} has no setting {path!r}")
    inner = value if len(keys) == 1 else _replace_path(getattr(obj, keys[0]), keys[1:], value, path)
    return replace(obj, **{keys[0]: inner})  # type: ignore[type-var]


def read_json(path: str | Path, what: str = "config", error: type[Exception] = ConfigError) -> Any:
    """A JSON file's content; a missing, unreadable, special, oversized, too deeply nested or malformed file
    raises `error` with one line naming it (see `testtime.jsonio`)."""
    return jsonio.read_json(path, what, error)


def typed(cls: type[T], obj: Any, where: str = "config") -> T:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected an object, got {json.dumps(obj)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    kwargs = {}
    for key, value in obj.items():
        hint = hints[key]
        if is_dataclass(hint):
            kwargs[key] = typed(hint, value, f"{where}: {key}")
        elif not _matches(value, hint):
            raise ConfigError(f"{where}: {key} must be {_type_name(hint)}, got {json.dumps(value)}")
        elif typing.get_origin(hint) is tuple:
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = float(value) if hint is float else value
    return cls(**kwargs)


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return False


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        return f"a list of {_type_name(args[0])}"
    if origin is tuple:
        return f"a list of {len(args)} numbers"
    if args:
        return " or ".join(_type_name(a) for a in args)
    names = {type(None): "null", bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, str(hint))
