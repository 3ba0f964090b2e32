"""Secret values: resolved from the environment or a file, never shown by str() or repr()."""

from __future__ import annotations

from dataclasses import dataclass, field

REDACTED = "<redacted>"


@dataclass(frozen=True)
class Secret:
    """A value that must only reach the one host's own kickstart.

    ``str()``, ``repr()`` and f-strings print a placeholder; call ``reveal()`` where the real
    value is needed. ``origin`` says where it came from (``env:NAME``, ``file:path``, ``inline``).
    """

    _value: str = field(repr=False)
    origin: str = "inline"

    def reveal(self) -> str:
        """The secret value itself."""
        return self._value

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"Secret({self.origin})"

    def __format__(self, spec: str) -> str:
        return REDACTED


def reveal(value: str | Secret) -> str:
    """The plain text of a value that may or may not be a Secret."""
    return value.reveal() if isinstance(value, Secret) else value
