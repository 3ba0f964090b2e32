"""The kickstart ``network`` key, in forms that installer 2.3 through 2.9 all read."""

from __future__ import annotations

from typing import Any

from photonkick.kickstarts.spec import Host


def network_config(host: Host) -> dict[str, Any]:
    """DHCP on every ``e*`` NIC, or a static address on the NIC with the host's MAC.

    The static form is the installer's netplan-like version 2 (read by 2.3 and later): the
    legacy ``type: static`` form takes only one name server, no search domains and always
    matches ``eth0``, which Photon's predictable NIC names never are.
    """
    net = host.network
    if net is None:
        return {"type": "dhcp"}
    match = {"macaddress": host.mac} if host.mac else {"name": "e*"}
    nic: dict[str, Any] = {"match": match, "dhcp4": False, "addresses": [str(net.address)]}
    if net.gateway is not None:
        nic["gateway"] = str(net.gateway)
    if net.dns or net.search:
        nameservers: dict[str, Any] = {}
        if net.dns:
            nameservers["addresses"] = [str(a) for a in net.dns]
        if net.search:
            nameservers["search"] = list(net.search)
        nic["nameservers"] = nameservers
    return {"version": "2", "ethernets": {"nic0": nic}}
