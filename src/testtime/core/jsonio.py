"""Reading the JSON a user hands us, once for every reader: task files and folders, text tasks (JSON lines),
configs, model folders' config.json, run records.

Only regular files are read (a FIFO would block forever, a link to /dev/zero would fill memory), at most
`max_bytes()` of them (256 MB, or $TESTTIME_MAX_FILE_MB), and JSON nested deeper than `MAX_DEPTH` is refused
before it is parsed (a parser, or any code walking the value, would end in RecursionError). Every problem is
raised as the caller's error type with one line naming the file.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np

MAX_FILE_ENV = "TESTTIME_MAX_FILE_MB"
DEFAULT_MAX_FILE_MB = 256
MAX_DEPTH = 100  # our own files nest 8 levels at most (a record's votes)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def max_bytes() -> int:
    """The largest file read, in bytes: $TESTTIME_MAX_FILE_MB megabytes (default 256)."""
    raw = os.environ.get(MAX_FILE_ENV, "")
    try:
        mb = float(raw) if raw else DEFAULT_MAX_FILE_MB
    except ValueError:
        mb = -1.0
    if not (0 < mb < 1e7):
        raise ValueError(f"environment variable {MAX_FILE_ENV}={raw!r}: expected a number of megabytes > 0")
    return int(mb * 2**20)


def read_bytes(path: str | Path, what: str = "", error: type[Exception] = ValueError) -> bytes:
    """A regular file's bytes, up to `max_bytes()`; anything else raises `error` with one line naming the file."""
    path = Path(path)
    kind = f"{what} file" if what else "file"
    try:
        # Non-blocking, so that opening a FIFO returns at once; the type is then checked on what was opened.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise error(f"{path}: no such {kind}") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror})") from None
    # The type is checked on the descriptor before Python wraps it: os.fdopen refuses a folder itself, with an
    # error that names the descriptor ("Is a directory: 3") instead of the path.
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        os.close(fd)
        raise error(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(f"{path}: is {_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}, not a regular {kind}")
    with os.fdopen(fd, "rb") as f:
        limit = max_bytes()
        try:
            data = f.read(limit + 1)  # a file that grows while read is still cut at the limit
        except OSError as e:
            raise error(f"{path}: cannot read ({e.strerror})") from None
    if len(data) > limit:
        size = f"{limit / 2**20:g} MB" if limit >= 2**20 else f"{limit} bytes"
        raise error(f"{path}: larger than {size}, the limit on a file read (set {MAX_FILE_ENV} to raise it)")
    return data


def read_text(path: str | Path, what: str = "", error: type[Exception] = ValueError) -> str:
    """`read_bytes` as UTF-8 text."""
    try:
        return read_bytes(path, what, error).decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{Path(path)}: not UTF-8 text") from None


def depth(text: str) -> int:
    """How deep the JSON in `text` nests (brackets outside strings), without parsing it."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0  # cannot be too deep: skip the scan (most lines of a JSON-lines file)
    bare = np.frombuffer(_STRING.sub("", text).encode(), dtype=np.uint8)
    step = (np.isin(bare, (ord("["), ord("{"))).astype(np.int32) - np.isin(bare, (ord("]"), ord("}"))))
    moves = step[step != 0]
    return int(np.cumsum(moves).max()) if len(moves) else 0


def loads(text: str, where: str, error: type[Exception] = ValueError, line: int | None = None) -> Any:
    """Parse JSON text; too deep or malformed raises `error` with one line starting with `where`."""
    at = f"{where}: line {line}: " if line is not None else f"{where}: "
    if depth(text) > MAX_DEPTH:
        raise error(f"{at}JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        pos = f"column {e.colno}" if line is not None else f"line {e.lineno} column {e.colno}"
        raise error(f"{at}bad JSON at {pos}: {e.msg}") from None


def read_json(path: str | Path, what: str = "", error: type[Exception] = ValueError) -> Any:
    """One JSON file's value (see the module's docstring for what is refused)."""
    return loads(read_text(path, what, error), str(path), error)


def read_json_lines(path: str | Path, what: str = "", error: type[Exception] = ValueError,
                    complete_only: bool = False) -> list[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a JSON-lines file.

    `complete_only`: a last line without its newline is a write cut short by a kill, and is dropped (for files
    we append to); otherwise it is read like any other line (for files people write).
    """
    lines = read_text(path, what, error).split("\n")
    if complete_only or lines[-1] == "":
        lines.pop()
    return [(n, loads(line, str(path), error, line=n)) for n, line in enumerate(lines, 1) if line.strip()]
