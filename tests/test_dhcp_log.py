"""dnsmasq's --log-dhcp lines (as dnsmasq 2.90 wrote them) turned into DHCP events."""

from __future__ import annotations

import threading

from photonkick.server.dhcp_log import DhcpEvent, DhcpLogParser, Leases

FULL_MODE_LOG = """\
dnsmasq[15355]: started, version 2.90 DNS disabled
dnsmasq-dhcp[15355]: DHCP, IP range 192.0.2.100 -- 192.0.2.200, lease time 1h
dnsmasq-dhcp[15355]: 4169118596 available DHCP range: 192.0.2.100 -- 192.0.2.200
dnsmasq-dhcp[15355]: 4169118596 vendor class: PXEClient:Arch:00000:UNDI:003016
dnsmasq-dhcp[15355]: 4169118596 DHCPDISCOVER(pkbr0) 00:50:56:00:10:01
dnsmasq-dhcp[15355]: 4169118596 tags: known, pkbr0
dnsmasq-dhcp[15355]: 4169118596 DHCPOFFER(pkbr0) 192.0.2.21 00:50:56:00:10:01
dnsmasq-dhcp[15355]: 4169118596 next server: 192.0.2.1
dnsmasq-dhcp[15355]: 4169118596 broadcast response
dnsmasq-dhcp[15355]: 4169118596 sent size:  1 option: 53 message-type  2
dnsmasq-dhcp[15355]: 4169118596 sent size: 12 option: 67 bootfile-name  lpxelinux.0
dnsmasq-dhcp[12227]: 3498048537 available DHCP range: 192.0.2.100 -- 192.0.2.200
dnsmasq-dhcp[12227]: 3498048537 vendor class: PXEClient:Arch:00000:UNDI:003016
dnsmasq-dhcp[12227]: 3498048537 user class: iPXE
dnsmasq-dhcp[12227]: 3498048537 DHCPREQUEST(pkbr0) 192.0.2.21 00:50:56:00:10:01
dnsmasq-dhcp[12227]: 3498048537 tags: known, ipxe, pkbr0
dnsmasq-dhcp[12227]: 3498048537 DHCPACK(pkbr0) 192.0.2.21 00:50:56:00:10:01 web01
dnsmasq-dhcp[12227]: 3498048537 sent size: 37 option: 67 bootfile-name  http://192.0.2.1:8080/ipxe/boot.ipxe
dnsmasq-dhcp[12227]: 3498048537 sent size:  4 option:175   b0:01:01:ff
dnsmasq-dhcp[12227]: 9 DHCPDISCOVER(pkbr0) 00:50:56:00:10:09 no address available
"""

PROXY_MODE_LOG = """\
dnsmasq-dhcp[21207]: DHCP, proxy on subnet 192.0.2.0
dnsmasq-dhcp[21207]: 70892151 vendor class: PXEClient:Arch:00007:UNDI:003016
dnsmasq-dhcp[21207]: 70892151 PXE(pkbr0) 00:50:56:00:10:02 proxy
dnsmasq-dhcp[21207]: 70892151 tags: efi64, pkbr0
dnsmasq-dhcp[21207]: 70892151 bootfile name: grubx64.efi
dnsmasq-dhcp[21207]: 70892151 next server: 192.0.2.1
dnsmasq-dhcp[21207]: 70892151 broadcast response
"""
BIOS = "PXEClient:Arch:00000:UNDI:003016"


def parse(text: str) -> list[DhcpEvent]:
    parser = DhcpLogParser()
    events = [e for line in text.splitlines() for e in parser.feed(line)]
    return events + parser.flush()


def test_full_mode_transactions_become_events() -> None:
    assert parse(FULL_MODE_LOG) == [
        DhcpEvent("DHCPDISCOVER", "00:50:56:00:10:01", vendor_class=BIOS),
        DhcpEvent("DHCPOFFER", "00:50:56:00:10:01", "192.0.2.21", "lpxelinux.0", BIOS),
        DhcpEvent(
            "DHCPACK",
            "00:50:56:00:10:01",
            "192.0.2.21",
            "http://192.0.2.1:8080/ipxe/boot.ipxe",
            BIOS,
            "iPXE",
        ),
        DhcpEvent("DHCPDISCOVER", "00:50:56:00:10:09", note="no address available"),
    ]


def test_proxy_reply_carries_the_boot_file() -> None:
    (event,) = parse(PROXY_MODE_LOG)
    assert event == DhcpEvent(
        "PXE",
        "00:50:56:00:10:02",
        None,
        "grubx64.efi",
        "PXEClient:Arch:00007:UNDI:003016",
        None,
        "proxy",
    )
    assert event.detail == "PXE proxy boot grubx64.efi (PXEClient:Arch:00007:UNDI:003016)"


def test_detail_names_packet_address_boot_file_and_client() -> None:
    offer = parse(FULL_MODE_LOG)[1]
    assert offer.detail == f"DHCPOFFER 192.0.2.21 boot lpxelinux.0 ({BIOS})"


def test_a_transaction_ends_at_the_next_or_when_flushed() -> None:
    parser = DhcpLogParser()
    lines = FULL_MODE_LOG.splitlines()[2:7]  # up to the OFFER, nothing after it yet
    assert [e.kind for line in lines for e in parser.feed(line)] == ["DHCPDISCOVER"]
    assert [e.kind for e in parser.flush()] == ["DHCPOFFER"]
    assert parser.flush() == []


def test_an_event_carries_the_arrival_of_its_packet_line() -> None:
    parser = DhcpLogParser()
    lines = FULL_MODE_LOG.splitlines()[2:7]
    events = [e for at, line in enumerate(lines) for e in parser.feed(line, float(at))]
    offer = parser.flush()[0]
    packet_lines = [at for at, line in enumerate(lines) if "DHCPDISCOVER(" in line]
    assert events[0].at == float(packet_lines[0])
    assert offer.at == float(next(i for i, ln in enumerate(lines) if "DHCPOFFER(" in ln))


def test_garbage_lines_are_ignored() -> None:
    text = "\n".join(
        [
            "nonsense",
            "dnsmasq-dhcp[1]: 5 DHCPDISCOVER(eth0) not-a-mac",
            "dnsmasq-dhcp[1]: 5 DHCPINFORM(eth0) 192.0.2.5 00:50:56:00:10:01",
            "dnsmasq-dhcp[1]: 6 \x00\xff DHCPACK(",
            "x dnsmasq-dhcp[1]: 8 DHCPACK(eth0) 192.0.2.5 00:50:56:00:10:01",
            "",
        ]
    )
    assert parse(text) == []


def test_a_client_cannot_forge_a_packet_line_through_its_class() -> None:
    # dnsmasq drops control characters from what clients send, so a forged line arrives
    # glued to the real one (as dnsmasq 2.90 logged it).
    text = (
        "dnsmasq-dhcp[25426]: 29 user class: iPXEdnsmasq-dhcp[1]: 7 DHCPACK(pkbr0) 192.0.2.99 "
        + "00:50:56:00:10:01"
        + "x" * 100
        + "\ndnsmasq-dhcp[25426]: 29 DHCPDISCOVER(pkbr0) 00:50:56:00:10:07\n"
    )
    (event,) = parse(text)
    assert (event.kind, event.mac, event.ip) == ("DHCPDISCOVER", "00:50:56:00:10:07", None)
    assert event.user_class is not None and len(event.user_class) == 64


def test_leases_keep_every_address_of_a_mac() -> None:
    leases = Leases()
    leases.load(
        "1764700000 00:50:56:00:10:01 192.0.2.21 web01 01:00:50:56:00:10:01\n"
        "1764700000 00:50:56:00:10:02 not-an-ip * *\n"
        "duid 00:01:00:01:2c:1f\n"
    )
    leases.add("00:50:56:00:10:01", "192.0.2.150")
    leases.add("00:50:56:00:10:01", "192.0.2.21")
    assert leases.ips("00:50:56:00:10:01") == ("192.0.2.21", "192.0.2.150")
    assert leases.ips("00:50:56:00:10:02") == ()


def test_leases_are_thread_safe() -> None:
    leases = Leases()
    macs = [f"00:50:56:00:00:{i:02x}" for i in range(8)]
    start = threading.Barrier(9)
    seen: list[int] = []

    def writer(mac: str) -> None:
        start.wait()
        for n in range(500):
            leases.add(mac, f"10.0.{n // 250}.{n % 250}")

    def reader() -> None:
        start.wait()
        for _ in range(2000):
            seen.append(sum(len(leases.ips(m)) for m in macs))

    threads = [threading.Thread(target=writer, args=(m,)) for m in macs]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(leases.ips(m)) == 500 for m in macs)
    assert seen == sorted(seen)  # never saw an address vanish
