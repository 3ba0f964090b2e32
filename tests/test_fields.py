"""The field table: typed choices, defaults and default factories."""

from __future__ import annotations

from pathlib import Path

import pytest

from photonkick.kickstarts.fields import Field, Reader, choice, read_map, text
from photonkick.kickstarts.source import parse_yaml
from photonkick.kickstarts.spec import BOOT_MODES, FIRMWARES


def read(yaml_text: str, fields: dict[str, Field]) -> tuple[dict[str, object], list[str]]:
    reader = Reader(Path("."))
    values = read_map(reader, parse_yaml(yaml_text, "spec.yaml"), "", fields)
    return values, [f"{p.key_path}: {p.message}" for p in reader.problems]


def test_choice_returns_the_table_entry_and_names_the_choices() -> None:
    fields = {"firmware": Field(choice(*FIRMWARES), "efi"), "boot": Field(choice(*BOOT_MODES))}
    values, problems = read("firmware: bios\nboot: isoo\n", fields)
    assert values["firmware"] == "bios" and problems == [
        "boot: 'isoo' is not one of: pxe, http, iso, guestinfo"
    ]


def test_default_factory_makes_a_new_value_per_mapping() -> None:
    fields = {"tags": Field(text, default_factory=list), "name": Field(text, "x")}
    first, _ = read("{}\n", fields)
    second, _ = read("{}\n", fields)
    assert first == {"tags": [], "name": "x"} and first["tags"] is not second["tags"]


def test_a_factory_passed_as_default_is_refused() -> None:
    with pytest.raises(TypeError, match="default_factory"):
        Field(text, list)
    with pytest.raises(TypeError, match="not both"):
        Field(text, (), default_factory=tuple)
