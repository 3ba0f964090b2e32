"""Small parse functions that turn located YAML nodes into checked Python values.

Each parser takes ``(reader, node, path)`` and returns a value, or records a Problem and
raises ``Invalid``. ``read_map`` applies a table of fields to one mapping, so that every
problem in a spec is collected and reported at once.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from photonkick.kickstarts.errors import Location, Problem
from photonkick.kickstarts.secrets import Secret
from photonkick.kickstarts.source import Map, Node, Scalar, Seq, read_user_file

T = TypeVar("T")
C = TypeVar("C", bound=str)


class Invalid(Exception):
    """Raised by a parser after it has recorded its problem."""


class Reader:
    """Collects problems while a spec is read; knows the spec's folder and environment."""

    def __init__(self, base_dir: Path, environ: Mapping[str, str] | None = None) -> None:
        self.base_dir = base_dir
        self.environ = os.environ if environ is None else environ
        self.problems: list[Problem] = []

    def fail(self, loc: Location, path: str, message: str, hint: str | None = None) -> Invalid:
        """Record a problem and return the exception for the caller to raise."""
        self.problems.append(Problem(loc, path, message, hint))
        return Invalid()

    def read_text_file(self, node: Node, path: str, name: str) -> str:
        """Read a file named relative to the spec's folder."""
        file = (self.base_dir / name).resolve() if not Path(name).is_absolute() else Path(name)
        try:
            return read_user_file(file)
        except (OSError, UnicodeDecodeError) as exc:
            raise self.fail(
                node.loc,
                path,
                f"cannot read file {name!r}: {getattr(exc, 'strerror', None) or exc}",
            ) from None


Parser = Callable[[Reader, Node, str], T]


@dataclass(frozen=True)
class Field:
    """One key of a mapping: how to parse it and what it is when absent.

    An absent key is ``default``, or a new ``default_factory()`` when that is given (for
    values built per spec, such as a dataclass holding defaults).
    """

    parse: Parser[Any]
    default: Any = None
    required: bool = False
    default_factory: Callable[[], Any] | None = None

    def __post_init__(self) -> None:
        if callable(self.default):
            raise TypeError("a Field's default is a value: pass a factory as default_factory")
        if self.default is not None and self.default_factory is not None:
            raise TypeError("a Field takes default or default_factory, not both")

    def absent(self) -> Any:
        """The value of the key when the mapping leaves it out."""
        return self.default_factory() if self.default_factory is not None else self.default


def describe(node: Node) -> str:
    """A short name for a node's kind, for messages."""
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    return repr(node.raw) if node.value is not None else "empty"


def read_map(reader: Reader, node: Node, path: str, fields: Mapping[str, Field]) -> dict[str, Any]:
    """Apply a field table to a mapping: unknown keys, required keys, then each parser.

    Keys whose parser failed map to None; the caller must check ``reader.problems``.
    """
    if not isinstance(node, Map):
        raise reader.fail(node.loc, path or "(root)", f"expected a mapping, got {describe(node)}")
    for key in node.items:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(fields)
            reader.fail(node.key_locs[key], join(path, key), "unknown key", hint)
    values: dict[str, Any] = {}
    for key, spec in fields.items():
        child = node.items.get(key)
        if child is None or (isinstance(child, Scalar) and child.value is None and spec.required):
            if spec.required:
                reader.fail(node.loc, join(path, key), "is required")
                values[key] = None
            else:
                values[key] = spec.absent()
            continue
        try:
            values[key] = spec.parse(reader, child, join(path, key))
        except Invalid:
            values[key] = None
    return values


def read_checked(
    reader: Reader, node: Node, path: str, fields: Mapping[str, Field]
) -> dict[str, Any]:
    """Like read_map, but raise Invalid when any key of this mapping had a problem."""
    before = len(reader.problems)
    values = read_map(reader, node, path, fields)
    if len(reader.problems) > before:
        raise Invalid()
    return values


def join(path: str, key: str) -> str:
    """Extend a key path such as ``hosts[2].network`` by one key."""
    return f"{path}.{key}" if path else key


def scalar(reader: Reader, node: Node, path: str) -> Scalar:
    """The node as a scalar, or a problem."""
    if not isinstance(node, Scalar):
        raise reader.fail(node.loc, path, f"expected a single value, got {describe(node)}")
    return node


def text(reader: Reader, node: Node, path: str) -> str:
    """A string. Plain numbers are taken as written (``release: 5.0`` is "5.0")."""
    s = scalar(reader, node, path)
    if isinstance(s.value, str):
        return s.value
    if isinstance(s.value, int | float) and not isinstance(s.value, bool) and s.plain:
        return s.raw
    raise reader.fail(node.loc, path, f"expected a string, got {describe(node)}")


def nonempty_text(reader: Reader, node: Node, path: str) -> str:
    """A string with something in it."""
    value = text(reader, node, path)
    if not value.strip():
        raise reader.fail(node.loc, path, "must not be empty")
    return value


def boolean(reader: Reader, node: Node, path: str) -> bool:
    """true or false."""
    s = scalar(reader, node, path)
    if not isinstance(s.value, bool):
        raise reader.fail(node.loc, path, f"expected true or false, got {describe(node)}")
    return s.value


def integer(low: int, high: int) -> Parser[int]:
    """A parser for a whole number in [low, high]."""

    def parse(reader: Reader, node: Node, path: str) -> int:
        s = scalar(reader, node, path)
        if not isinstance(s.value, int) or isinstance(s.value, bool):
            raise reader.fail(node.loc, path, f"expected a whole number, got {describe(node)}")
        if not low <= s.value <= high:
            raise reader.fail(node.loc, path, f"{s.value} is outside {low}..{high}")
        return s.value

    return parse


def choice(*choices: C) -> Parser[C]:
    """A parser for one of a fixed set of strings, typed as they are (``choice(*FIRMWARES)``
    parses a ``Firmware``)."""

    def parse(reader: Reader, node: Node, path: str) -> C:
        s = scalar(reader, node, path)
        if s.plain and s.raw in choices:  # YAML reads a plain `off`, `no` or `on` as a bool
            return choices[choices.index(s.raw)]
        value = text(reader, node, path)
        if value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            hint = f"did you mean {close[0]!r}?" if close else None
            raise reader.fail(
                node.loc, path, f"{value!r} is not one of: {', '.join(choices)}", hint
            )
        return choices[choices.index(value)]

    return parse


def matching(pattern: str, what: str) -> Parser[str]:
    """A parser for a string that fully matches a regular expression."""
    compiled = re.compile(pattern)

    def parse(reader: Reader, node: Node, path: str) -> str:
        value = text(reader, node, path)
        if not compiled.fullmatch(value):
            raise reader.fail(node.loc, path, f"{value!r} is not {what}")
        return value

    return parse


def list_of(item: Parser[T], *, allow_empty: bool = True) -> Parser[tuple[T, ...]]:
    """A parser for a list whose items all use ``item``; a problem per bad item."""

    def parse(reader: Reader, node: Node, path: str) -> tuple[T, ...]:
        if not isinstance(node, Seq):
            raise reader.fail(node.loc, path, f"expected a list, got {describe(node)}")
        if not node.items and not allow_empty:
            raise reader.fail(node.loc, path, "must not be empty")
        out: list[T] = []
        failed = False
        for i, child in enumerate(node.items):
            try:
                out.append(item(reader, child, f"{path}[{i}]"))
            except Invalid:
                failed = True
        if failed:
            raise Invalid()
        return tuple(out)

    return parse


def secret(reader: Reader, node: Node, path: str) -> Secret:
    """A secret written inline, as ``{env: NAME}`` or as ``{file: path}``."""
    if isinstance(node, Scalar):
        return Secret(nonempty_text(reader, node, path), "inline")
    values = read_checked(reader, node, path, {"env": Field(text), "file": Field(text)})
    env_name, file_name = values["env"], values["file"]
    if (env_name is None) == (file_name is None):
        raise reader.fail(node.loc, path, "give exactly one of 'env' or 'file'")
    if env_name is not None:
        if env_name not in reader.environ:
            raise reader.fail(node.loc, path, f"environment variable {env_name} is not set")
        return Secret(reader.environ[env_name], f"env:{env_name}")
    content = reader.read_text_file(node, path, file_name).rstrip("\n")
    if not content:
        raise reader.fail(node.loc, path, f"file {file_name!r} is empty")
    return Secret(content, f"file:{file_name}")


def string_or_secret(reader: Reader, node: Node, path: str) -> str | Secret:
    """A plain string, or a secret when written as ``{env: ...}`` / ``{file: ...}``."""
    if isinstance(node, Scalar):
        return text(reader, node, path)
    return secret(reader, node, path)


def ipv4_address(reader: Reader, node: Node, path: str) -> ipaddress.IPv4Address:
    """An IPv4 address such as 192.0.2.1."""
    value = text(reader, node, path)
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise reader.fail(node.loc, path, f"{value!r} is not an IPv4 address") from None


def ipv4_interface(reader: Reader, node: Node, path: str) -> ipaddress.IPv4Interface:
    """An address with its prefix length, such as 192.0.2.20/24."""
    value = text(reader, node, path)
    if "/" not in value:
        raise reader.fail(node.loc, path, f"{value!r} needs a prefix length, e.g. {value}/24")
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise reader.fail(node.loc, path, f"{value!r} is not an IPv4 address/prefix") from None
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address) and (
        iface.network.prefixlen < 31
    ):
        raise reader.fail(node.loc, path, f"{value!r} is a network or broadcast address")
    return iface
