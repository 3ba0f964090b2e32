"""``server.dhcp`` in the spec: checked like every other key, at FILE:LINE:COL."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest

from photonkick.kickstarts.errors import Location, SpecError
from photonkick.kickstarts.inventory import load_inventory

HOSTS = "hosts:\n  - {name: a, mac: '00:50:56:00:00:01'}\n"


def problems(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_inventory(path, {})
    return [str(p).replace(str(path), "F") for p in info.value.problems]


def test_dhcp_is_off_by_default(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec("server: {url: http://192.0.2.1:8080}\n" + HOSTS)
    dhcp = load_inventory(spec, {}).server.dhcp
    assert (dhcp.mode, dhcp.interface, dhcp.range) == ("off", None, None)
    assert dhcp.at == Location(str(spec), 1, 9)


def test_plain_off_is_the_mode_not_a_boolean(write_spec: Callable[[str], Path]) -> None:
    # YAML 1.1 reads a plain `off` as false; the documented `mode: off` must still work.
    spec = write_spec("server:\n  url: http://192.0.2.1:8080\n  dhcp:\n    mode: off\n" + HOSTS)
    assert load_inventory(spec, {}).server.dhcp.mode == "off"
    quoted_false = write_spec(
        "server:\n  url: http://192.0.2.1:8080\n  dhcp: {mode: false}\n" + HOSTS
    )
    assert problems(quoted_false) == ["F:3:16: server.dhcp.mode: expected a string, got 'false'"]


def test_full_mode_reads_interface_and_range(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server:
          url: http://192.0.2.1:8080
          dhcp:
            mode: full
            interface: eth1
            range: 192.0.2.100 - 192.0.2.200
        hosts:
          - {name: a, mac: '00:50:56:00:00:01'}
        """
    )
    dhcp = load_inventory(spec, {}).server.dhcp
    assert (dhcp.mode, dhcp.interface) == ("full", "eth1")
    assert dhcp.range == (
        ipaddress.IPv4Address("192.0.2.100"),
        ipaddress.IPv4Address("192.0.2.200"),
    )
    assert dhcp.range_at == Location(str(spec), 6, 12)


def test_full_mode_needs_a_range(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec("server:\n  url: http://192.0.2.1:8080\n  dhcp: {mode: full}\n" + HOSTS)
    assert problems(spec) == [
        "F:3:9: server.dhcp.range: is required with mode: full "
        "(the addresses dnsmasq hands out, e.g. range: 192.0.2.100-192.0.2.200)"
    ]


def test_bad_dhcp_values_are_all_reported(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server:
          url: http://192.0.2.1:8080
          dhcp:
            mode: proxi
            interface: "eth 1"
            range: 192.0.2.200-192.0.2.100
            ranges: x
        hosts:
          - {name: a, mac: '00:50:56:00:00:01'}
        """
    )
    assert problems(spec) == [
        "F:4:11: server.dhcp.mode: 'proxi' is not one of: off, proxy, full (did you mean 'proxy'?)",
        "F:5:16: server.dhcp.interface: 'eth 1' is not a network interface name",
        "F:6:12: server.dhcp.range: '192.0.2.200-192.0.2.100' ends before it starts",
        "F:7:5: server.dhcp.ranges: unknown key (did you mean 'range'?)",
    ]


@pytest.mark.parametrize("value", ["192.0.2.100", "192.0.2.100-", "a-b", "192.0.2.1-10.0.0.300"])
def test_range_must_be_two_addresses(write_spec: Callable[[str], Path], value: str) -> None:
    spec = write_spec(
        f"server:\n  url: http://192.0.2.1:8080\n  dhcp: {{mode: proxy, range: '{value}'}}\n"
        + HOSTS
    )
    assert problems(spec) == [
        f"F:3:30: server.dhcp.range: {value!r} is not an address range like 192.0.2.100-192.0.2.200"
    ]


def test_dhcp_must_be_a_mapping(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec("server:\n  url: http://192.0.2.1:8080\n  dhcp: full\n" + HOSTS)
    assert problems(spec) == ["F:3:9: server.dhcp: expected a mapping, got 'full'"]
