"""Bad specs: every problem reported at once, at FILE:LINE:COL with its key path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from photonkick.kickstarts.errors import SpecError
from photonkick.kickstarts.inventory import load_inventory

HEADER = """
server: {url: http://192.0.2.1:8080}
"""


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_inventory(path, environ or {})
    return [str(p).replace(str(path), "F") for p in info.value.problems]


def test_yaml_syntax_error_has_position(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(HEADER + "hosts:\n  - name: a\n    mac: [1, 2\n")
    (message,) = problems(spec)
    assert message.startswith("F:5:1: (yaml): ")


def test_duplicate_yaml_keys_are_errors(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(HEADER + "hosts:\n  - name: a\n    mac: 00:50:56:00:00:01\n    name: b\n")
    assert problems(spec) == ["F:5:5: hosts[0].name: duplicate key (first given at line 3)"]


def test_unknown_key_suggests_the_nearest(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        HEADER + "hosts:\n  - name: a\n    mac: 00:50:56:00:00:01\n    dsik: /dev/sdb\n"
    )
    assert problems(spec) == ["F:5:5: hosts[0].dsik: unknown key (did you mean 'disk'?)"]


def test_all_errors_at_once_sorted_by_line(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server: {url: ftp://x}
        hosts:
          - name: -bad-
            mac: 00:50:56:zz:00:01
            firmware: uefi
            network: {address: 10.0.0.300/24}
          - name: ok
            mac: 01:00:5e:00:00:01
        """
    )
    assert problems(spec) == [
        "F:1:15: server.url: 'ftp://x' is not an http:// or https:// URL",
        "F:3:11: hosts[0].name: '-bad-' is not an RFC 1123 host name",
        "F:4:10: hosts[0].mac: '00:50:56:zz:00:01' is not a MAC address like 00:50:56:00:10:01",
        "F:5:15: hosts[0].firmware: 'uefi' is not one of: efi, bios (did you mean 'efi'?)",
        "F:6:24: hosts[0].network.address: '10.0.0.300/24' is not an IPv4 address/prefix",
        "F:8:10: hosts[1].mac: '01:00:5e:00:00:01' is a multicast address",
    ]


def test_duplicate_names_and_macs_across_hosts(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        HEADER
        + """
hosts:
  - {name: web01, mac: "00:50:56:00:00:01"}
  - {name: WEB01, mac: "00-50-56-00-00-01"}
"""
    )
    assert problems(spec) == [
        "F:5:12: hosts[1].name: 'WEB01' is already hosts[0]",
        "F:5:24: hosts[1].mac: 00:50:56:00:00:01 is already hosts[0]",
    ]


def test_pxe_host_needs_a_mac(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(HEADER + "hosts:\n  - name: a\n  - name: b\n    boot: iso\n")
    assert problems(spec) == ["F:3:5: hosts[0].mac: is required for boot: pxe"]


def test_unknown_profile_lists_the_known(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        HEADER
        + "profiles:\n  web: {}\nhosts:\n  - {name: a, mac: '00:50:56:00:00:01', profile: wbe}\n"
    )
    assert problems(spec) == ["F:5:50: hosts[0].profile: unknown profile 'wbe' (profiles: web)"]


def test_problem_in_defaults_is_reported_once_where_written(
    write_spec: Callable[[str], Path],
) -> None:
    spec = write_spec(
        HEADER
        + """
defaults:
  linux_flavour: linux
hosts:
  - {name: a, mac: "00:50:56:00:00:01"}
  - {name: b, mac: "00:50:56:00:00:02"}
"""
    )
    assert problems(spec) == [
        "F:4:3: defaults.linux_flavour: unknown key (did you mean 'linux_flavor'?)"
    ]


def test_missing_secret_names_the_key(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        HEADER
        + """
hosts:
  - name: a
    mac: "00:50:56:00:00:01"
    registries:
      - {server: registry.example, username: bot, password: {env: REG_TOKEN}}
    containers:
      - name: app
        image: registry.example/app:1
        env: {DB_PASSWORD: {file: missing.txt}}
"""
    )
    found = problems(spec)
    assert found[0] == (
        "F:7:61: hosts[0].registries[0].password: environment variable REG_TOKEN is not set"
    )
    assert found[1].startswith(
        "F:11:28: hosts[0].containers[0].env.DB_PASSWORD: cannot read file 'missing.txt'"
    )


def test_raw_kickstart_keys_checked_against_installer_version(
    write_spec: Callable[[str], Path],
) -> None:
    spec = write_spec(
        """
        photon: {release: "5.0", installer: "2.3"}
        server: {url: https://pk.example}
        hosts:
          - name: a
            mac: "00:50:56:00:00:01"
            kickstart:
              docker: {images: []}
              public_key: ssh-ed25519 AAAA
              packagess: [vim]
        """
    )
    assert problems(spec) == [
        "F:7:7: hosts[0].kickstart.docker: installer 2.3 does not know this key",
        "F:8:7: hosts[0].kickstart.public_key: not allowed (it adds the key to root and "
        "rewrites sshd to 'PermitRootLogin yes'; give the key to a user under 'users' instead)",
        "F:9:7: hosts[0].kickstart.packagess: installer 2.3 does not know this key",
    ]


def test_static_network_checks(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        HEADER
        + """
hosts:
  - name: a
    mac: "00:50:56:00:00:01"
    network: {address: 192.0.2.20, gateway: 192.0.2.1}
  - name: b
    mac: "00:50:56:00:00:02"
    network: {address: 192.0.2.21/24, gateway: 198.51.100.1, dns: [8.8.8.888]}
"""
    )
    assert problems(spec) == [
        "F:6:24: hosts[0].network.address: '192.0.2.20' needs a prefix length, e.g. 192.0.2.20/24",
        "F:9:48: hosts[1].network.gateway: 198.51.100.1 is not in 192.0.2.0/24",
        "F:9:68: hosts[1].network.dns[0]: '8.8.8.888' is not an IPv4 address",
    ]


def test_partitions_follow_the_installer_rules(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        HEADER
        + """
hosts:
  - name: a
    mac: "00:50:56:00:00:01"
    partitions:
      - {mountpoint: /boot/efi, size: 100, filesystem: ext4}
      - {mountpoint: /data, size: 10, sizepercent: 20}
      - {mountpoint: /swap, size: 100, filesystem: swap}
  - name: b
    mac: "00:50:56:00:00:02"
    partitions:
      - {mountpoint: /, size: 0}
      - {mountpoint: /, size: 0}
"""
    )
    assert problems(spec) == [
        "F:7:9: hosts[0].partitions[0].filesystem: /boot/efi must be vfat",
        "F:8:9: hosts[0].partitions[1]: give exactly one of 'size' (MiB, 0 = rest of disk) "
        "or 'sizepercent'",
        "F:9:9: hosts[0].partitions[2].mountpoint: a swap partition has no mountpoint",
        "F:14:9: hosts[1].partitions[1].mountpoint: / is used twice",
    ]


def test_partitions_need_root(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        HEADER
        + "hosts:\n  - name: a\n    mac: '00:50:56:00:00:01'\n"
        + "    partitions: [{mountpoint: /data, size: 0}]\n"
    )
    assert problems(spec) == ["F:5:17: hosts[0].partitions: needs a partition mounted at '/'"]


def test_users_and_keys(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        HEADER
        + """
hosts:
  - name: a
    mac: "00:50:56:00:00:01"
    users:
      - name: root
      - name: ops
        password_hash: hunter2
        ssh_keys: ["ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ== x"]
      - name: Bad
    root: {allow_login: true}
"""
    )
    assert problems(spec) == [
        "F:7:15: hosts[0].users[0].name: 'root' is a system account",
        "F:9:24: hosts[0].users[1].password_hash: not a crypt hash (expected $6$..., $y$... "
        "or '*') (make one with: openssl passwd -6)",
        "F:10:20: hosts[0].users[1].ssh_keys[0]: the key data is not a ssh-ed25519 key",
        "F:11:15: hosts[0].users[2].name: 'Bad' is not a user name (lower case, up to 32)",
        "F:12:11: hosts[0].root.password_hash: allow_login needs a password_hash",
    ]


def test_containers_collide(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        HEADER
        + """
hosts:
  - name: a
    mac: "00:50:56:00:00:01"
    docker: false
    containers:
      - {name: web, image: nginx, ports: ["80:80"], restart: sometimes}
      - {name: web2, image: nginx, ports: ["80:8080", "99999:1"], volumes: ["rel/path:/x"]}
"""
    )
    assert problems(spec) == [
        "F:8:62: hosts[0].containers[0].restart: 'sometimes' is not one of: always, "
        "unless-stopped, on-failure, no",
        "F:9:55: hosts[0].containers[1].ports[1]: '99999:1' is not a port mapping like '8080:80'",
        "F:9:77: hosts[0].containers[1].volumes[0]: 'rel/path:/x' is not a volume like "
        "'/srv/data:/data'",
    ]


def test_containers_need_docker(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        HEADER
        + """
hosts:
  - name: a
    mac: "00:50:56:00:00:01"
    docker: false
    containers: [{name: web, image: nginx}]
"""
    )
    assert problems(spec) == ["F:6:13: hosts[0].docker: containers need docker: true"]


def test_name_and_mac_only_on_hosts(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        HEADER
        + "defaults:\n  mac: '00:50:56:00:00:01'\nhosts:\n  - {name: a, mac: '00:50:56:00:00:02'}\n"
    )
    assert problems(spec) == ["F:3:3: defaults.mac: can only be set on a host"]


def test_missing_required_top_level_keys(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec("photon: {release: '6.0'}\n")
    assert problems(spec) == [
        "F:1:1: hosts: is required",
        "F:1:1: server: is required",
        "F:1:19: photon.release: '6.0' is not one of: 4.0, 5.0 (did you mean '5.0'?)",
    ]


def test_vm_limits(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        HEADER + "hosts:\n  - {name: a, mac: '00:50:56:00:00:01', vm: {cpus: 0, memory_mb: 1.5}}\n"
    )
    assert problems(spec) == [
        "F:3:52: hosts[0].vm.cpus: 0 is outside 1..768",
        "F:3:66: hosts[0].vm.memory_mb: expected a whole number, got '1.5'",
    ]


def test_guestinfo_needs_installer_2_7(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        photon: {installer: "2.3"}
        server: {url: http://192.0.2.1:8080}
        hosts:
          - {name: a, boot: guestinfo}
        """
    )
    assert problems(spec) == [
        "F:4:21: hosts[0].boot: guestinfo kickstarts need installer 2.7 or newer "
        "(use boot: iso or pxe with installer 2.3)"
    ]


def test_http_boot_needs_efi_and_a_mac(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server: {url: http://192.0.2.1:8080}
        hosts:
          - {name: a, mac: "00:50:56:00:10:01", firmware: bios, boot: http}
          - {name: b, boot: http}
          - {name: c, mac: "00:50:56:00:10:03", boot: http}
        """
    )
    assert problems(spec) == [
        "F:3:63: hosts[0].boot: http (UEFI HTTP boot) needs firmware: efi (use boot: pxe)",
        "F:4:5: hosts[1].mac: is required for boot: http",
    ]


def test_https_server_needs_a_plain_http_boot_url(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server: {url: https://pk.example, boot_url: https://pk.example:8443}
        hosts: []
        """
    )
    assert problems(spec) == [
        "F:1:45: server.boot_url: must be http://: loaders cannot fetch https"
    ]
    spec = write_spec(
        "server: {url: https://pk.example}\nhosts: [{name: a, mac: 00:50:56:00:00:01}]\n"
    )
    assert problems(spec) == [
        "F:1:15: server.url: lpxelinux, GRUB and iPXE cannot fetch kernel and initrd over "
        "https (add server.boot_url: http://... for boot files (kickstarts and callbacks "
        "still use the https url))"
    ]


def test_raw_keys_that_would_undo_photonkick_are_refused(
    write_spec: Callable[[str], Path],
) -> None:
    spec = write_spec(
        """
        photon: {installer: "2.7"}
        server: {url: https://pk.example, boot_url: "http://192.0.2.1:8080"}
        defaults:
          kickstart:
            packages: [minimal]
        hosts:
          - name: a
            mac: "00:50:56:00:00:01"
            kickstart:
              disk: /dev/sdb
              linux_flavor: linux
              disks: {default: {device: /dev/sdb}}
          - name: b
            mac: "00:50:56:00:00:02"
            kickstart:
              disks: {data: /dev/sdc}
        """
    )
    assert problems(spec) == [
        "F:5:5: hosts[0].kickstart.packages: not allowed (it replaces the package list "
        "photonkick computes, dropping the kernel flavor and curl, sudo and docker, which its "
        "scripts need; use the host key 'packages' (or 'additional_packages' here))",
        "F:10:7: hosts[0].kickstart.disk: not allowed (use the host key 'disk')",
        "F:11:7: hosts[0].kickstart.linux_flavor: not allowed (use the host key "
        "'linux_flavor', which also puts that kernel in the packages)",
        "F:12:24: hosts[0].kickstart.disks.default: the default disk is the host key 'disk' "
        "(photonkick writes it; give only the extra disks here)",
        "F:16:14: hosts[1].kickstart.disks: expected {id: {device: /dev/...}}",
    ]


def test_efi_partition_must_come_first(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server: {url: https://pk.example, boot_url: "http://192.0.2.1:8080"}
        defaults:
          partitions:
            - {mountpoint: /, size: 0}
            - {mountpoint: /boot/efi, size: 100, filesystem: vfat}
        hosts:
          - {name: a, mac: "00:50:56:00:00:01"}
          - {name: b, mac: "00:50:56:00:00:02", firmware: bios}
          - name: c
            mac: "00:50:56:00:00:03"
            partitions:
              - {mountpoint: /, size: 8192}
              - {mountpoint: /boot/efi, size: 0, filesystem: vfat}
          - name: d
            mac: "00:50:56:00:00:04"
            partitions:
              - {mountpoint: /boot/efi, size: 0, filesystem: vfat}
              - {mountpoint: /, size: 8192}
          - name: e
            mac: "00:50:56:00:00:05"
            partitions: [{mountpoint: /, size: 0}]
            kickstart:
              partitions:
                - {mountpoint: /, size: 0}
                - {mountpoint: /boot/efi, size: 64, filesystem: vfat}
        """
    )
    hint = (
        " (the installer numbers partitions in list order and registers partition 1 as the "
        "EFI boot entry; move /boot/efi to the top of the list, or leave it out and the "
        "installer adds one)"
    )
    assert problems(spec) == [
        "F:5:7: hosts[0].partitions[1]: with firmware efi, /boot/efi must be the first "
        "partition" + hint,
        "F:13:9: hosts[2].partitions[1]: with firmware efi, /boot/efi must be the first "
        "partition" + hint,
        "F:17:9: hosts[3].partitions[0]: /boot/efi needs a fixed size (the installer puts "
        "size 0 last)" + hint,
        "F:25:11: hosts[4].kickstart.partitions[1]: with firmware efi, /boot/efi must be the "
        "first partition" + hint,
    ]


@pytest.mark.parametrize(
    ("release", "scheme", "accepted"),
    [
        ("4.0", "6", True),
        ("4.0", "5", True),
        ("4.0", "y", False),
        ("4.0", "2b", False),
        ("5.0", "y", True),
        ("5.0", "gy", True),
        ("5.0", "7", True),
    ],
)
def test_password_schemes_follow_the_release(
    write_spec: Callable[[str], Path], release: str, scheme: str, accepted: bool
) -> None:
    hashed = f"${scheme}$abc$def"
    spec = write_spec(
        f"""
        photon: {{release: "{release}"}}
        server: {{url: https://pk.example, boot_url: "http://192.0.2.1:8080"}}
        hosts:
          - name: a
            mac: "00:50:56:00:00:01"
            users: [{{name: ops, password_hash: "{hashed}"}}]
            root: {{allow_login: true, password_hash: "{hashed}"}}
        """
    )
    if accepted:
        assert load_inventory(spec, {}).hosts[0].users[0].password_hash is not None
        return
    hint = "(use one of $1$, $5$, $6$; make one with: openssl passwd -6)"
    assert problems(spec) == [
        f"F:6:40: hosts[0].users[0].password_hash: Photon 4.0 cannot verify ${scheme}$ "
        f"hashes, so this password never works {hint}",
        f"F:7:46: hosts[0].root.password_hash: Photon 4.0 cannot verify ${scheme}$ hashes, "
        f"so this password never works {hint}",
    ]


@pytest.mark.parametrize("installer", ["2.3", "2.7", "2.9"])
def test_a_pinned_kernel_needs_an_installer_that_keeps_the_pin(
    write_spec: Callable[[str], Path], installer: str
) -> None:
    # Installer 2.7+ appends linux_flavor to the packages unless that exact name is listed.
    spec = write_spec(
        f"""
        photon: {{release: "4.0", installer: "{installer}"}}
        server: {{url: "http://192.0.2.1:8080"}}
        hosts:
          - name: a
            mac: "00:50:56:00:00:01"
            packages: [curl, linux-esx=6.1.10, linux-esx-devel=6.1.10]
        """
    )
    if installer == "2.3":
        assert "linux-esx=6.1.10" in load_inventory(spec, {}).hosts[0].packages
        return
    assert problems(spec) == [
        f"F:6:22: hosts[0].packages[1]: installer {installer} adds linux-esx without a "
        "version beside linux-esx=6.1.10, so the kernel it installs may not be the pinned one "
        "(list linux-esx without a version)"
    ]
