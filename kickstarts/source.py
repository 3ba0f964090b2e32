"""YAML source with positions: every value keeps the place it was written.

PyYAML's ``safe_load`` forgets positions and silently keeps the last of two equal keys;
this module composes the node graph instead and converts it into small ``Node`` objects.
Aliases (``*name``) are refused where they are written: a few hundred bytes of nested aliases
expand into billions of nodes, and ``defaults`` and ``profiles`` already share keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from photonkick.kickstarts.errors import Location, Problem, SpecError


@dataclass(frozen=True)
class Scalar:
    """A YAML scalar: its resolved value and the text exactly as written."""

    value: Any
    raw: str
    plain: bool
    loc: Location


@dataclass(frozen=True)
class Seq:
    """A YAML sequence."""

    items: tuple[Node, ...]
    loc: Location


@dataclass(frozen=True)
class Map:
    """A YAML mapping with string keys, remembering where each key was written."""

    items: dict[str, Node]
    loc: Location
    key_locs: dict[str, Location] = field(default_factory=dict)


Node = Scalar | Seq | Map


def location(file: str, mark: yaml.Mark) -> Location:
    """Convert PyYAML's 0-based mark into a 1-based Location."""
    return Location(file, mark.line + 1, mark.column + 1)


def parse_yaml(text: str, file: str) -> Node:
    """Parse YAML text into a Node tree; raise SpecError for syntax errors, duplicate keys,
    aliases and nesting deeper than ``MAX_DEPTH``."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = location(file, mark) if mark else Location(file, 1, 1)
        raise SpecError([Problem(loc, "(yaml)", str(exc.problem or exc))]) from None
    if root is None:
        raise SpecError([Problem(Location(file, 1, 1), "(yaml)", "the file is empty")])
    problems: list[Problem] = []
    node = _convert(root, file, "", problems)
    if problems:
        raise SpecError(problems)
    return node


def read_user_file(path: Path) -> str:
    """The text of a file the user named: the spec, or a file the spec refers to.

    The only place the pure packages read files; raises ``OSError`` or
    ``UnicodeDecodeError``.
    """
    return path.read_text(encoding="utf-8")


def load_yaml_file(path: Path) -> Node:
    """Read and parse one YAML file."""
    try:
        text = read_user_file(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(
            [Problem(Location(str(path), 1, 1), "(file)", f"cannot read: {exc}")]
        ) from None
    return parse_yaml(text, str(path))


MAX_DEPTH = 100


class _Alias(yaml.Node):
    """Where an alias was written, kept in place of the node it names (never expanded)."""

    id = "alias"


class _Loader(yaml.SafeLoader):
    """The safe loader, composing aliases as ``_Alias`` and refusing deep nesting.

    Nesting is bounded because both the composer and ``_convert`` recurse per level.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()  # type: ignore[no-untyped-call]
            return _Alias("alias", event.anchor, event.start_mark, event.end_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {MAX_DEPTH} levels", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_constructor = yaml.SafeLoader("")


def _alias_problem(node: yaml.Node, file: str, path: str) -> Problem:
    return Problem(
        location(file, node.start_mark),
        path or "(root)",
        f"YAML alias *{node.value} is not supported (put shared keys in defaults or a profile)",
    )


def _convert(node: yaml.Node, file: str, path: str, problems: list[Problem]) -> Node:
    loc = location(file, node.start_mark)
    if isinstance(node, _Alias):
        problems.append(_alias_problem(node, file, path))
        return Scalar(None, "", False, loc)
    if isinstance(node, yaml.ScalarNode):
        value = _constructor.construct_object(node, deep=True)
        return Scalar(value, str(node.value), node.style is None, loc)
    if isinstance(node, yaml.SequenceNode):
        children = tuple(
            _convert(child, file, f"{path}[{i}]", problems) for i, child in enumerate(node.value)
        )
        return Seq(children, loc)
    assert isinstance(node, yaml.MappingNode)
    items: dict[str, Node] = {}
    key_locs: dict[str, Location] = {}
    for key_node, value_node in node.value:
        key_loc = location(file, key_node.start_mark)
        if isinstance(key_node, _Alias):
            problems.append(_alias_problem(key_node, file, path))
            continue
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            problems.append(Problem(key_loc, path or "(root)", "keys must be plain strings"))
            continue
        key = str(key_node.value)
        child_path = f"{path}.{key}" if path else key
        if key in items:
            first = key_locs[key]
            problems.append(
                Problem(key_loc, child_path, f"duplicate key (first given at line {first.line})")
            )
            continue
        items[key] = _convert(value_node, file, child_path, problems)
        key_locs[key] = key_loc
    return Map(items, loc, key_locs)
