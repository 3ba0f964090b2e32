"""The host keys of a spec: one field table and the parsers behind it."""

from __future__ import annotations

import base64
import binascii
import re
import shlex
from typing import Any

from photonkick.kickstarts.fields import (
    Field,
    Invalid,
    Reader,
    boolean,
    choice,
    integer,
    ipv4_address,
    ipv4_interface,
    list_of,
    matching,
    nonempty_text,
    read_checked,
    read_map,
    scalar,
    secret,
    string_or_secret,
    text,
)
from photonkick.kickstarts.installer import FILESYSTEMS, LINUX_FLAVORS
from photonkick.kickstarts.secrets import Secret
from photonkick.kickstarts.source import Map, Node, Scalar, Seq
from photonkick.kickstarts.spec import (
    BOOT_LOADERS,
    BOOT_MODES,
    DEFAULT_PACKAGES,
    FIRMWARES,
    Container,
    Host,
    Partition,
    Registry,
    Root,
    StaticNetwork,
    User,
    VmSize,
)

HOSTNAME_RE = r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"  # noqa: E501
USERNAME_RE = r"[a-z_][a-z0-9_-]{0,31}"
CRYPT_RE = r"\$(?:1|5|6|y|gy|2[aby]|7)\$[./A-Za-z0-9$=,]+|[*!]"
SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
RESERVED_USERS = frozenset("root bin daemon sys adm nobody systemd-network sshd docker".split())
_MAC_SPLIT = re.compile(r"[:-]")


def mac_address(reader: Reader, node: Node, path: str) -> str:
    """A unicast MAC written with ':' or '-' in any case; normalized to aa:bb:cc:dd:ee:ff."""
    s = scalar(reader, node, path)
    # Unquoted 00:50:56:00:10:01 is a base-60 integer in YAML 1.1: use the text as written.
    raw = s.raw.strip()
    parts = _MAC_SPLIT.split(raw)
    if len(parts) != 6 or not all(re.fullmatch(r"[0-9A-Fa-f]{2}", p) for p in parts):
        raise reader.fail(node.loc, path, f"{raw!r} is not a MAC address like 00:50:56:00:10:01")
    mac = ":".join(p.lower() for p in parts)
    if int(parts[0], 16) & 1:
        raise reader.fail(node.loc, path, f"{raw!r} is a multicast address")
    if mac == "00:00:00:00:00:00":
        raise reader.fail(node.loc, path, "the all-zero MAC cannot identify a host")
    return mac


def ssh_key_line(reader: Reader, node: Node, path: str, line: str) -> str:
    """One OpenSSH public key line; its base64 blob must decode and name the same type."""
    fields = line.split(None, 2)
    if len(fields) < 2 or fields[0] not in SSH_KEY_TYPES:
        raise reader.fail(node.loc, path, f"not an OpenSSH public key: {line[:40]!r}")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise reader.fail(node.loc, path, "the key's base64 part is damaged") from None
    name_len = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + name_len].decode("ascii", "replace") != fields[0]:
        raise reader.fail(node.loc, path, f"the key data is not a {fields[0]} key")
    return " ".join(fields)


def ssh_keys(reader: Reader, node: Node, path: str) -> tuple[str, ...]:
    """A key string, or ``{file: path}`` holding one key per line (comments allowed)."""
    if isinstance(node, Scalar):
        return (ssh_key_line(reader, node, path, text(reader, node, path).strip()),)
    values = read_checked(reader, node, path, {"file": Field(nonempty_text, required=True)})
    content = reader.read_text_file(node, path, values["file"])
    lines = [ln.strip() for ln in content.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise reader.fail(node.loc, path, f"file {values['file']!r} holds no key")
    return tuple(ssh_key_line(reader, node, path, ln) for ln in lines)


def key_list(reader: Reader, node: Node, path: str) -> tuple[str, ...]:
    """The ``ssh_keys`` list, flattened."""
    return tuple(key for keys in list_of(ssh_keys)(reader, node, path) for key in keys)


def crypt_hash(reader: Reader, node: Node, path: str) -> Secret:
    """A crypt(3) hash such as $6$salt$..., inline or from env/file; always kept as a Secret."""
    value = string_or_secret(reader, node, path)
    hashed = value if isinstance(value, Secret) else Secret(value, "inline")
    if not re.fullmatch(CRYPT_RE, hashed.reveal()):
        raise reader.fail(
            node.loc,
            path,
            "not a crypt hash (expected $6$..., $y$... or '*')",
            "make one with: openssl passwd -6",
        )
    return hashed


def user(reader: Reader, node: Node, path: str) -> User:
    """One entry of ``users``."""
    v = read_checked(reader, node, path, USER_FIELDS)
    if v["password"] is not None and v["password_hash"] is not None:
        raise reader.fail(node.loc, f"{path}.password", "give password or password_hash, not both")
    if v["name"] in RESERVED_USERS:
        assert isinstance(node, Map)
        raise reader.fail(
            node.items["name"].loc, f"{path}.name", f"{v['name']!r} is a system account"
        )
    return User(**v)


USER_FIELDS = {
    "name": Field(matching(USERNAME_RE, "a user name (lower case, up to 32)"), required=True),
    "groups": Field(list_of(matching(USERNAME_RE, "a group name")), ()),
    "ssh_keys": Field(key_list, ()),
    "password_hash": Field(crypt_hash),
    "password": Field(secret),
    "sudo": Field(boolean, False),
    "shell": Field(matching(r"/[\w./-]+", "an absolute path"), "/bin/bash"),
}


def root(reader: Reader, node: Node, path: str) -> Root:
    """The ``root`` key: locked unless allow_login and a password hash are both given."""
    v = read_checked(
        reader,
        node,
        path,
        {"allow_login": Field(boolean, False), "password_hash": Field(crypt_hash)},
    )
    if v["allow_login"] and v["password_hash"] is None:
        raise reader.fail(node.loc, f"{path}.password_hash", "allow_login needs a password_hash")
    return Root(**v)


def network(reader: Reader, node: Node, path: str) -> StaticNetwork | None:
    """``dhcp`` or a static ``{address, gateway, dns, search}``."""
    if isinstance(node, Scalar):
        choice("dhcp")(reader, node, path)
        return None
    before = len(reader.problems)
    v = read_map(
        reader,
        node,
        path,
        {
            "address": Field(ipv4_interface, required=True),
            "gateway": Field(ipv4_address),
            "dns": Field(list_of(ipv4_address), ()),
            "search": Field(list_of(matching(HOSTNAME_RE, "a DNS domain")), ()),
        },
    )
    address, gateway = v["address"], v["gateway"]
    if address is not None and gateway is not None and gateway not in address.network:
        assert isinstance(node, Map)
        reader.fail(
            node.items["gateway"].loc, f"{path}.gateway", f"{gateway} is not in {address.network}"
        )
    if len(reader.problems) > before:
        raise Invalid()
    return StaticNetwork(**v)


def partition(reader: Reader, node: Node, path: str) -> Partition:
    """One entry of ``partitions``, in the installer's form."""
    v = read_checked(
        reader,
        node,
        path,
        {
            "mountpoint": Field(matching(r"/[\w./-]*", "an absolute path")),
            "filesystem": Field(choice(*FILESYSTEMS), "ext4"),
            "size": Field(integer(0, 64 * 1024 * 1024)),
            "sizepercent": Field(integer(1, 100)),
            "lvm": Field(lvm),
            "fs_options": Field(nonempty_text),
        },
    )
    where = f"{path}"
    if (v["size"] is None) == (v["sizepercent"] is None):
        raise reader.fail(
            node.loc, where, "give exactly one of 'size' (MiB, 0 = rest of disk) or 'sizepercent'"
        )
    if v["filesystem"] == "swap" and v["mountpoint"] is not None:
        raise reader.fail(node.loc, f"{path}.mountpoint", "a swap partition has no mountpoint")
    if v["filesystem"] != "swap" and v["mountpoint"] is None:
        raise reader.fail(node.loc, f"{path}.mountpoint", "is required (except for swap)")
    if v["mountpoint"] == "/boot/efi" and v["filesystem"] != "vfat":
        raise reader.fail(node.loc, f"{path}.filesystem", "/boot/efi must be vfat")
    if v["mountpoint"] == "/boot" and v["lvm"] is not None:
        raise reader.fail(node.loc, f"{path}.lvm", "/boot cannot be on LVM")
    return Partition(**v)


def lvm(reader: Reader, node: Node, path: str) -> tuple[str, str]:
    """``{vg_name, lv_name}``."""
    name = matching(r"[A-Za-z0-9_.+-]+", "an LVM name")
    v = read_checked(
        reader,
        node,
        path,
        {"vg_name": Field(name, required=True), "lv_name": Field(name, required=True)},
    )
    return (v["vg_name"], v["lv_name"])


def partitions(reader: Reader, node: Node, path: str) -> tuple[Partition, ...]:
    """The partition list, checked with the installer's own rules."""
    parts = list_of(partition, allow_empty=False)(reader, node, path)
    assert isinstance(node, Seq)
    mounts = [p.mountpoint for p in parts if p.mountpoint]
    if "/" not in mounts:
        raise reader.fail(node.loc, path, "needs a partition mounted at '/'")
    seen: set[str] = set()
    for i, part in enumerate(parts):
        if part.mountpoint in seen:
            raise reader.fail(
                node.items[i].loc, f"{path}[{i}].mountpoint", f"{part.mountpoint} is used twice"
            )
        if part.mountpoint:
            seen.add(part.mountpoint)
    if sum(1 for p in parts if p.size == 0) > 1:
        raise reader.fail(node.loc, path, "only one partition may have size 0 (rest of disk)")
    return parts


PORT_RE = re.compile(r"(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d{1,5}):(\d{1,5})(?:/(tcp|udp|sctp))?")


def port_mapping(reader: Reader, node: Node, path: str) -> str:
    """``HOST:CONTAINER`` or ``IP:HOST:CONTAINER``, optionally ``/udp``."""
    value = text(reader, node, path)
    m = PORT_RE.fullmatch(value)
    if not m or not all(1 <= int(p) <= 65535 for p in (m.group(2), m.group(3))):
        raise reader.fail(node.loc, path, f"{value!r} is not a port mapping like '8080:80'")
    return value


def volume(reader: Reader, node: Node, path: str) -> str:
    """``/host/path:/container/path[:ro]`` or ``named-volume:/container/path``."""
    value = text(reader, node, path)
    m = re.fullmatch(r"(/[^:\s]*|[A-Za-z0-9][\w.-]*):(/[^:\s]*)(?::(ro|rw|z|Z|ro,z|ro,Z))?", value)
    if not m:
        raise reader.fail(node.loc, path, f"{value!r} is not a volume like '/srv/data:/data'")
    return value


def env_map(reader: Reader, node: Node, path: str) -> tuple[tuple[str, str | Secret], ...]:
    """``{KEY: value or secret}``."""
    if not isinstance(node, Map):
        raise reader.fail(node.loc, path, "expected a mapping of NAME: value")
    out: list[tuple[str, str | Secret]] = []
    failed = False
    for key, child in node.items.items():
        try:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise reader.fail(node.key_locs[key], f"{path}.{key}", "not a variable name")
            value = string_or_secret(reader, child, f"{path}.{key}")
            if "\n" in (value.reveal() if isinstance(value, Secret) else value):
                raise reader.fail(child.loc, f"{path}.{key}", "must be a single line")
            out.append((key, value))
        except Invalid:
            failed = True
    if failed:
        raise Invalid()
    return tuple(out)


def command(reader: Reader, node: Node, path: str) -> tuple[str, ...]:
    """A command as a string (split like a shell would) or as a list of arguments."""
    if isinstance(node, Scalar):
        try:
            return tuple(shlex.split(text(reader, node, path)))
        except ValueError as exc:
            raise reader.fail(node.loc, path, f"cannot split the command: {exc}") from None
    return list_of(text)(reader, node, path)


def container(reader: Reader, node: Node, path: str) -> Container:
    """One entry of ``containers``."""
    v = read_checked(
        reader,
        node,
        path,
        {
            "name": Field(
                matching(r"[A-Za-z0-9][A-Za-z0-9_.-]*", "a container name"), required=True
            ),
            "image": Field(matching(r"[A-Za-z0-9][^\s]*", "an image reference"), required=True),
            "ports": Field(list_of(port_mapping), ()),
            "volumes": Field(list_of(volume), ()),
            "env": Field(env_map, ()),
            "restart": Field(
                choice("always", "unless-stopped", "on-failure", "no"), "unless-stopped"
            ),
            "command": Field(command, ()),
        },
    )
    return Container(**v)


def containers(reader: Reader, node: Node, path: str) -> tuple[Container, ...]:
    """The container list: names and published host ports must not collide."""
    items = list_of(container)(reader, node, path)
    assert isinstance(node, Seq)
    seen_names: set[str] = set()
    seen_ports: dict[str, str] = {}
    for i, c in enumerate(items):
        if c.name in seen_names:
            raise reader.fail(node.items[i].loc, f"{path}[{i}].name", f"{c.name!r} is used twice")
        seen_names.add(c.name)
        for port in c.ports:
            m = PORT_RE.fullmatch(port)
            assert m
            key = f"{m.group(1) or '*'}:{m.group(2)}/{m.group(4) or 'tcp'}"
            if key in seen_ports:
                raise reader.fail(
                    node.items[i].loc,
                    f"{path}[{i}].ports",
                    f"host port {key} is already used by {seen_ports[key]!r}",
                )
            seen_ports[key] = c.name
    return items


def registry(reader: Reader, node: Node, path: str) -> Registry:
    """One entry of ``registries``."""
    v = read_checked(
        reader,
        node,
        path,
        {
            "server": Field(matching(r"[A-Za-z0-9.-]+(?::\d{1,5})?", "host[:port]"), required=True),
            "username": Field(nonempty_text, required=True),
            "password": Field(secret, required=True),
        },
    )
    return Registry(**v)


def vm(reader: Reader, node: Node, path: str) -> VmSize:
    """The ``vm`` key."""
    v = read_checked(
        reader,
        node,
        path,
        {
            "cpus": Field(integer(1, 768), 2),
            "memory_mb": Field(integer(512, 24 * 1024 * 1024), 2048),
            "disk_gb": Field(integer(4, 62 * 1024), 40),
            "network": Field(nonempty_text),
            "datastore": Field(nonempty_text),
        },
    )
    return VmSize(**v)


def script_lines(reader: Reader, node: Node, path: str) -> tuple[str, ...]:
    """Shell lines: a list of strings, or one multi-line string."""
    if isinstance(node, Scalar):
        return tuple(text(reader, node, path).splitlines())
    return list_of(text)(reader, node, path)


def to_plain(node: Node) -> Any:
    """A node as plain Python data (for raw kickstart keys)."""
    if isinstance(node, Map):
        return {k: to_plain(v) for k, v in node.items.items()}
    if isinstance(node, Seq):
        return [to_plain(v) for v in node.items]
    return node.value


def raw_kickstart(reader: Reader, node: Node, path: str) -> tuple[tuple[str, Any], ...]:
    """Raw installer keys; version checks happen once the installer version is known."""
    if not isinstance(node, Map):
        raise reader.fail(node.loc, path, "expected a mapping of installer keys")
    return tuple((k, to_plain(v)) for k, v in node.items.items())


def profile_names(reader: Reader, node: Node, path: str) -> tuple[str, ...]:
    """One profile name or a list of them."""
    if isinstance(node, Seq):
        return list_of(nonempty_text)(reader, node, path)
    return (nonempty_text(reader, node, path),)


HOST_FIELDS: dict[str, Field] = {
    "name": Field(matching(HOSTNAME_RE, "an RFC 1123 host name"), required=True),
    "mac": Field(mac_address),
    "profile": Field(profile_names, ()),
    "firmware": Field(choice(*FIRMWARES), "efi"),
    "boot": Field(choice(*BOOT_MODES), "pxe"),
    "loader": Field(choice(*BOOT_LOADERS), "auto"),
    "disk": Field(matching(r"/dev/[\w/.:-]+", "a device path such as /dev/sda"), "/dev/sda"),
    "partitions": Field(partitions, ()),
    "packages": Field(
        list_of(
            matching(r"[A-Za-z0-9][\w.+-]*(?:=[\w.+~-]+)?", "a package name"), allow_empty=False
        ),
        DEFAULT_PACKAGES,
    ),
    "linux_flavor": Field(choice(*LINUX_FLAVORS), "linux-esx"),
    "network": Field(network),
    "users": Field(list_of(user), ()),
    "root": Field(root, default_factory=Root),
    "containers": Field(containers, ()),
    "registries": Field(list_of(registry), ()),
    "docker": Field(boolean),
    "update": Field(boolean, False),
    "vm": Field(vm, default_factory=VmSize),
    "postinstall": Field(script_lines, ()),
    "kickstart": Field(raw_kickstart, ()),
}
"""Every key a host (and ``defaults`` and each profile) may set."""

PER_HOST_ONLY = ("name", "mac", "profile")


def build_host(reader: Reader, node: Map, path: str) -> Host | None:
    """Parse a merged host mapping; None when it has problems (already recorded)."""
    before = len(reader.problems)
    v = read_map(reader, node, path, HOST_FIELDS)
    if len(reader.problems) > before:
        return None
    names = [u.name for u in v["users"]]
    for i, name in enumerate(names):
        if names.index(name) != i:
            reader.fail(
                node.items["users"].loc, f"{path}.users[{i}].name", f"{name!r} is used twice"
            )
            return None
    if v["docker"] is None:
        v["docker"] = bool(v["containers"])
    elif not v["docker"] and v["containers"]:
        reader.fail(node.items["docker"].loc, f"{path}.docker", "containers need docker: true")
        return None
    if v["firmware"] == "efi":
        problem = efi_partition_problem([(p.mountpoint, p.size) for p in v["partitions"]])
        if problem is not None:
            index, message = problem
            parts = node.items["partitions"]
            loc = parts.items[index].loc if isinstance(parts, Seq) else parts.loc
            reader.fail(loc, f"{path}.partitions[{index}]", message, EFI_PARTITION_HINT)
            return None
    v["profiles"] = v.pop("profile")
    return Host(**v)


EFI_PARTITION_HINT = (
    "the installer numbers partitions in list order and registers partition 1 as the EFI "
    "boot entry; move /boot/efi to the top of the list, or leave it out and the installer "
    "adds one"
)


def efi_partition_problem(parts: list[tuple[str | None, int | None]]) -> tuple[int, str] | None:
    """For efi firmware: where a given /boot/efi partition breaks the EFI boot entry, and why.

    ``parts`` are (mountpoint, size) in list order. The installer places ``size: 0`` last.
    """
    for index, (mountpoint, size) in enumerate(parts):
        if mountpoint != "/boot/efi":
            continue
        if index != 0:
            return index, "with firmware efi, /boot/efi must be the first partition"
        if size == 0:
            return index, "/boot/efi needs a fixed size (the installer puts size 0 last)"
    return None
