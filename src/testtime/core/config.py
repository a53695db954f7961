"""Configs from JSON: one checker for every stage's config dataclass.

`typed(cls, obj)` builds a dataclass from a JSON object, refusing unknown keys and values of the
wrong type with a one-line `ConfigError` naming the file and key; nested dataclasses are checked
the same way, and JSON lists become tuples where the field is a tuple.

A field declares its allowed values next to itself, and every way a config is read checks them (`typed`
for JSON, `with_overrides` for command-line flags, `check` for a config built in Python):

    rank: Annotated[int, Range(1, 1024)] = 32
    lr: Annotated[float, Range(0, 1, lo_open=True)] = 5e-4   # 0 < lr <= 1
    method: Annotated[str, OneOf("auto", "greedy", "rank")] = "auto"

A float must also be finite, declared or not; None passes (a field's `| None` means "not set").
"""

from __future__ import annotations

import functools
import json
import math
import types
import typing
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from testtime.core import jsonio

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


def _num(x: float) -> str:
    whole = isinstance(x, int) or (math.isfinite(x) and x.is_integer())
    return str(int(x)) if whole and abs(x) < 10**15 else f"{x:g}"


@dataclass(frozen=True)
class Range:
    """The allowed numbers of a field (each element, for a list): lo <= value <= hi, or strict at an open end."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def allows(self, v: float) -> bool:
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below  # NaN compares false: refused

    def __str__(self) -> str:
        if not (self.lo_open or self.hi_open):
            return f"between {_num(self.lo)} and {_num(self.hi)}"
        return f"{'>' if self.lo_open else '>='} {_num(self.lo)} and {'<' if self.hi_open else '<='} {_num(self.hi)}"


class OneOf:
    """The allowed values of a field, named one by one."""

    def __init__(self, *choices: Any) -> None:
        self.choices = choices

    def allows(self, v: Any) -> bool:
        return v in self.choices

    def __str__(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))

    def __repr__(self) -> str:
        return f"OneOf{self.choices!r}"


Limit = Range | OneOf

# Limits that several configs share.
SEED = Range(0, 2**32 - 1)
LR = Range(0, 1, lo_open=True)
LENGTH = Range(16, 2**20)  # tokens of one sequence
TOKENS = Range(1, 2**30)  # tokens of one batch
MINUTES = Range(0, 43200, lo_open=True)  # a wall-clock limit: up to 30 days
SECONDS = Range(0, 43200 * 60, lo_open=True)  # a time budget: up to 30 days


def check_value(name: str, value: Any, *limits: Limit) -> Any:
    """`value` when every limit allows it (each element of a list or tuple) and every float in it is finite;
    else a one-line ConfigError naming `name`, what is allowed and what was given."""
    if value is None:
        return value
    for v in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(v, float) and not math.isfinite(v) and not limits:
            raise ConfigError(f"{name} must be a finite number, got {v}")
        for limit in limits:
            if isinstance(limit, Range) and (isinstance(v, bool) or not isinstance(v, (int, float))):
                continue  # a type error, reported by the type check
            if not limit.allows(v):
                raise ConfigError(f"{name} must be {limit}, got {json.dumps(v) if isinstance(v, str) else _num(v)}")
    return value


@functools.cache
def limits_of(cls: type) -> dict[str, tuple[Limit, ...]]:
    """Each field's declared limits (`Annotated[..., Range(...)]`), by field name."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {name: tuple(m for m in getattr(h, "__metadata__", ()) if isinstance(m, (Range, OneOf)))
            for name, h in hints.items()}


def check(cfg: Any, where: str = "config") -> Any:
    """`cfg` (a config dataclass, nested ones included) when every field holds an allowed value; else a one-line
    ConfigError naming `where` and the key. For configs built in Python; JSON and flags are checked as read."""
    limits = limits_of(type(cfg))
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            check(value, f"{where}: {f.name}")
        else:
            check_value(f"{where}: {f.name}", value, *limits.get(f.name, ()))
    return cfg


def with_overrides(cfg: T, values: dict[str, Any], names: dict[str, str] | None = None) -> T:
    """`cfg` with the values of dotted field paths replaced (`{"ttt_cfg.epochs": 3}`), by `dataclasses.replace`;
    a path the config does not have, or a value outside the field's limits, is a one-line ConfigError naming
    the path (or its name in `names`, say the flag that gave it)."""
    for path, value in values.items():
        cfg = _replace_path(cfg, path.split("."), value, (names or {}).get(path, path))
    return cfg


def _replace_path(obj: Any, keys: list[str], value: Any, name: str) -> Any:
    if not is_dataclass(obj) or keys[0] not in {f.name for f in fields(obj)}:
        raise ConfigError(f"{type(obj).__name__} has no setting {name!r}")
    if len(keys) == 1:
        inner = check_value(name, value, *limits_of(type(obj)).get(keys[0], ()))
    else:
        inner = _replace_path(getattr(obj, keys[0]), keys[1:], value, name)
    return replace(obj, **{keys[0]: inner})  # type: ignore[type-var]


def read_json(path: str | Path, what: str = "config", error: type[Exception] = ConfigError) -> Any:
    """A JSON file's content; a missing, unreadable, special, oversized, too deeply nested or malformed file
    raises `error` with one line naming it (see `testtime.core.jsonio`)."""
    return jsonio.read_json(path, what, error)


def typed(cls: type[T], obj: Any, where: str = "config") -> T:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected an object, got {json.dumps(obj)}")
    hints = typing.get_type_hints(cls)
    limits = limits_of(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    kwargs = {}
    for key, value in obj.items():
        hint = hints[key]
        if is_dataclass(hint):
            kwargs[key] = typed(hint, value, f"{where}: {key}")
            continue
        if not _matches(value, hint):
            raise ConfigError(f"{where}: {key} must be {_type_name(hint)}, got {json.dumps(value)}")
        check_value(f"{where}: {key}", value, *limits.get(key, ()))
        if typing.get_origin(hint) is tuple:
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
