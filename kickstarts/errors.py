"""Typed errors for photonkick. The CLI maps them to exit codes; nothing here exits."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class PhotonkickError(Exception):
    """Base class of every error photonkick reports to a user."""


@dataclass(frozen=True, order=True)
class Location:
    """A place in a user's file: 1-based line and column."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where, which key, what, and an optional hint."""

    location: Location
    key_path: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        text = f"{self.location}: {self.key_path}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class SpecError(PhotonkickError):
    """A spec that cannot be used; carries every problem found, sorted by location."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(sorted(problems, key=lambda p: (p.location, p.key_path)))
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(PhotonkickError):
    """A command line that cannot be used, found after parsing (the CLI exits 2)."""


class RenderError(PhotonkickError):
    """A valid spec that still cannot be rendered (for example a broken user template)."""
