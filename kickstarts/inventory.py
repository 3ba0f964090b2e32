"""Load a whole spec file: merge defaults and profiles into hosts, check across hosts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from photonkick.kickstarts.dhcp_spec import managed_dhcp
from photonkick.kickstarts.errors import Location, Problem, SpecError
from photonkick.kickstarts.fields import (
    Field,
    Invalid,
    Reader,
    boolean,
    choice,
    integer,
    matching,
    nonempty_text,
    read_checked,
    read_map,
    secret,
    text,
)
from photonkick.kickstarts.hooks import webhooks_parser
from photonkick.kickstarts.hosts import (
    EFI_PARTITION_HINT,
    HOST_FIELDS,
    PER_HOST_ONLY,
    build_host,
    efi_partition_problem,
)
from photonkick.kickstarts.installer import (
    ASSUMED_WITHOUT_ISO,
    AUTO,
    CRYPT_SCHEMES,
    FORBIDDEN_KEYS,
    INSTALLER_VERSIONS,
    KNOWN_KEYS,
    RELEASES,
    ImportedInstaller,
)
from photonkick.kickstarts.secrets import Secret
from photonkick.kickstarts.source import Map, Node, Scalar, Seq, load_yaml_file, parse_yaml
from photonkick.kickstarts.spec import (
    NETWORK_BOOTS,
    Host,
    Inventory,
    ManagedDhcp,
    Photon,
    ServerUrls,
    Vsphere,
)


def load_inventory(
    path: Path,
    environ: Mapping[str, str] | None = None,
    imported: Mapping[str, ImportedInstaller] | None = None,
) -> Inventory:
    """Read and check a spec file; raise SpecError listing every problem in it.

    ``imported`` maps each imported Photon release to the installer found in its ISO: it
    decides ``photon.installer: auto`` and must agree with an explicit version.
    """
    return inventory_from_node(load_yaml_file(path), path, environ, imported)


def inventory_from_text(
    text_: str,
    path: Path,
    environ: Mapping[str, str] | None = None,
    imported: Mapping[str, ImportedInstaller] | None = None,
) -> Inventory:
    """Like load_inventory, for text already in memory (``path`` names it and anchors files)."""
    return inventory_from_node(parse_yaml(text_, str(path)), path, environ, imported)


def http_url(reader: Reader, node: Node, path: str) -> str:
    """An http:// or https:// URL without a trailing slash."""
    value = text(reader, node, path).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise reader.fail(node.loc, path, f"{value!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise reader.fail(node.loc, path, "must not have a query or fragment")
    return value


def state_url(reader: Reader, node: Node, path: str) -> Secret:
    """A ``postgresql://`` URL, inline or ``{env: NAME}`` / ``{file: path}``, kept as a Secret
    (it usually carries a password)."""
    value = secret(reader, node, path)
    if urlsplit(value.reveal()).scheme not in ("postgresql", "postgres"):
        raise reader.fail(node.loc, path, "must be a postgresql:// URL")
    return value


def plain_http_url(reader: Reader, node: Node, path: str) -> str:
    """An http:// URL (boot loaders cannot fetch https)."""
    value = http_url(reader, node, path)
    if not value.startswith("http://"):
        raise reader.fail(node.loc, path, "must be http://: loaders cannot fetch https")
    return value


def server_urls(reader: Reader, node: Node, path: str) -> ServerUrls:
    """The ``server`` section."""
    urls = ServerUrls(**read_checked(reader, node, path, SERVER_FIELDS))
    if urls.dhcp.at is None:  # no dhcp key: --dhcp problems point at the server section
        urls = replace(urls, dhcp=replace(urls.dhcp, at=node.loc))
    return urls


def _check_boot_url(reader: Reader, root: Node, server: ServerUrls, hosts: list[Host]) -> None:
    """Loaders fetch kernel and initrd over plain http: https needs a boot_url for PXE."""
    if server.boot_url or not server.url.startswith("https://"):
        return
    if not any(h.boot in NETWORK_BOOTS for h in hosts):
        return
    assert isinstance(root, Map)
    section = root.items["server"]
    loc = section.items["url"].loc if isinstance(section, Map) else section.loc
    reader.fail(
        loc,
        "server.url",
        "lpxelinux, GRUB and iPXE cannot fetch kernel and initrd over https",
        "add server.boot_url: http://... for boot files (kickstarts and callbacks still use "
        "the https url)",
    )


PHOTON_FIELDS = {
    "release": Field(choice(*RELEASES), "5.0"),
    "installer": Field(choice(*INSTALLER_VERSIONS, AUTO), AUTO),
}
SERVER_FIELDS = {
    "url": Field(http_url, required=True),
    "repo_url": Field(http_url),
    "boot_url": Field(plain_http_url),
    "kickstart_after_install": Field(boolean, False),
    "bind_kickstart_to_boot_ip": Field(boolean, False),
    "install_log_timeout": Field(integer(5, 86400), 300),
    "webhooks": Field(webhooks_parser(http_url), ()),
    "state": Field(state_url),
    "dhcp": Field(managed_dhcp, default_factory=ManagedDhcp),
}


def local_path(reader: Reader, node: Node, path: str) -> Path:
    """A file path, relative to the spec's folder."""
    return (reader.base_dir / nonempty_text(reader, node, path)).resolve()


def vsphere(reader: Reader, node: Node, path: str) -> Vsphere:
    """The ``vsphere`` section."""
    name = nonempty_text
    values = read_checked(
        reader,
        node,
        path,
        {
            "host": Field(matching(r"[A-Za-z0-9.:-]+", "a host name or address"), required=True),
            "port": Field(integer(1, 65535), 443),
            "user": Field(nonempty_text, required=True),
            "password": Field(secret, required=True),
            "datacenter": Field(name),
            "cluster": Field(name),
            "resource_pool": Field(name),
            "folder": Field(name),
            "datastore": Field(name),
            "network": Field(name),
            "ca_file": Field(local_path),
            "insecure": Field(boolean, False),
            "iso": Field(local_path),
            "iso_folder": Field(
                matching(r"[\w.-]+(/[\w.-]+)*", "a datastore folder"), "photonkick"
            ),
        },
    )
    if values["insecure"] and values["ca_file"] is not None:
        raise reader.fail(node.loc, f"{path}.insecure", "give ca_file or insecure, not both")
    return Vsphere(**values)


TOP_FIELDS = {
    "photon": Field(
        lambda r, n, p: Photon(**read_checked(r, n, p, PHOTON_FIELDS)),
        default_factory=lambda: Photon(installer=AUTO),
    ),
    "server": Field(server_urls, required=True),
    "templates": Field(nonempty_text),
    "vsphere": Field(vsphere),
    "defaults": Field(lambda r, n, p: n),
    "profiles": Field(lambda r, n, p: n),
    "hosts": Field(lambda r, n, p: n, required=True),
}


def inventory_from_node(
    root: Node,
    path: Path,
    environ: Mapping[str, str] | None,
    imported: Mapping[str, ImportedInstaller] | None = None,
) -> Inventory:
    """Build the Inventory from a parsed YAML tree."""
    reader = Reader(path.parent, environ)
    try:
        top = read_map(reader, root, "", TOP_FIELDS)
    except Invalid:
        raise SpecError(reader.problems) from None
    photon = _resolve_installer(
        reader, root, top["photon"] or Photon(installer=AUTO), imported or {}
    )
    layers = _check_layers(reader, top["defaults"], top["profiles"])
    hosts = _build_hosts(reader, top["hosts"], layers, photon)
    if top["server"] is not None:
        _check_boot_url(reader, root, top["server"], hosts)
    if reader.problems:
        raise SpecError(_unique(reader.problems))
    templates = None
    if top["templates"] is not None:
        templates = (path.parent / top["templates"]).resolve()
        if not templates.is_dir():
            raise SpecError([Problem(root.loc, "templates", f"{templates} is not a directory")])
    return Inventory(path, photon, top["server"], tuple(hosts), templates, top["vsphere"])


def _resolve_installer(
    reader: Reader, root: Node, photon: Photon, imported: Mapping[str, ImportedInstaller]
) -> Photon:
    """Settle ``photon.installer``: ``auto`` takes the imported ISO's; explicit must agree."""
    found = imported.get(photon.release)
    loc = _value_loc(root, "photon", "installer")
    if photon.installer == AUTO:
        if found is None:
            return Photon(photon.release, ASSUMED_WITHOUT_ISO, "assumed")
        if found.rules is None:
            reader.fail(
                loc,
                "photon.installer",
                f"auto, but the installer of the imported Photon {photon.release} ISO is "
                + (f"{found.found}, older than photonkick supports" if found.found else "unknown")
                + f" ({found.where})",
                f"set photon.installer to one of {', '.join(INSTALLER_VERSIONS)}",
            )
            return Photon(photon.release, ASSUMED_WITHOUT_ISO, "assumed")
        return Photon(photon.release, found.rules, "iso")
    if found is not None and found.rules is not None and found.rules != photon.installer:
        reader.fail(
            loc,
            "photon.installer",
            f"the spec says installer {photon.installer}, but the imported Photon "
            f"{photon.release} ISO has installer {found.found} ({found.where})",
            f"set photon.installer: auto (or {found.rules}), or import the ISO you will boot",
        )
    return photon


def _check_layers(reader: Reader, defaults: Node | None, profiles: Node | None) -> dict[str, Map]:
    """Check defaults and each profile on their own; return them keyed '' and by name."""
    layers: dict[str, Map] = {}
    named: list[tuple[str, str, Node]] = []
    if defaults is not None:
        named.append(("", "defaults", defaults))
    if profiles is not None:
        if isinstance(profiles, Map):
            named += [(k, f"profiles.{k}", v) for k, v in profiles.items.items()]
        else:
            reader.fail(profiles.loc, "profiles", "expected a mapping of profile names")
    for key, where, node in named:
        if isinstance(node, Scalar) and node.value is None:
            node = Map({}, node.loc)
        if not isinstance(node, Map):
            reader.fail(node.loc, where, "expected a mapping of host keys")
            continue
        for only in PER_HOST_ONLY:
            if only in node.items:
                reader.fail(node.key_locs[only], f"{where}.{only}", "can only be set on a host")
        partial = Map(
            {k: v for k, v in node.items.items() if k not in PER_HOST_ONLY}, node.loc, node.key_locs
        )
        fields = {k: Field(f.parse, f.default) for k, f in HOST_FIELDS.items()}
        try:
            read_map(reader, partial, where, fields)
        except Invalid:
            pass
        layers[key] = partial
    return layers


def _build_hosts(
    reader: Reader, hosts_node: Node | None, layers: dict[str, Map], photon: Photon
) -> list[Host]:
    if hosts_node is None:
        return []
    if not isinstance(hosts_node, Seq):
        reader.fail(hosts_node.loc, "hosts", "expected a list of hosts")
        return []
    hosts: list[Host] = []
    names: dict[str, int] = {}
    macs: dict[str, int] = {}
    for i, node in enumerate(hosts_node.items):
        where = f"hosts[{i}]"
        if not isinstance(node, Map):
            reader.fail(node.loc, where, "expected a mapping of host keys")
            continue
        merged = _merge_layers(reader, node, where, layers)
        host = build_host(reader, merged, where)
        if host is None:
            continue
        if _check_host(reader, host, merged, where, photon, names, macs, i):
            hosts.append(host)
    return hosts


def _merge_layers(reader: Reader, node: Map, where: str, layers: dict[str, Map]) -> Map:
    merged: Node = layers.get("", Map({}, node.loc))
    profile_node = node.items.get("profile")
    profile_list: list[tuple[str, Node]] = []
    if isinstance(profile_node, Scalar) and isinstance(profile_node.value, str):
        profile_list = [(profile_node.value, profile_node)]
    elif isinstance(profile_node, Seq):
        profile_list = [(str(n.value), n) for n in profile_node.items if isinstance(n, Scalar)]
    for name, pnode in profile_list:
        if name not in layers or name == "":
            known = ", ".join(k for k in layers if k) or "none defined"
            reader.fail(
                pnode.loc, f"{where}.profile", f"unknown profile {name!r}", f"profiles: {known}"
            )
            continue
        merged = merge_nodes(merged, layers[name])
    result = merge_nodes(merged, node)
    assert isinstance(result, Map)
    return result


def merge_nodes(base: Node, over: Node) -> Node:
    """Deep-merge mappings; any other value (lists included) in ``over`` replaces ``base``."""
    if isinstance(base, Map) and isinstance(over, Map):
        items = dict(base.items)
        key_locs = dict(base.key_locs)
        for key, value in over.items.items():
            items[key] = merge_nodes(base.items[key], value) if key in base.items else value
            key_locs[key] = over.key_locs[key]
        return Map(items, over.loc, key_locs)
    return over


def _check_host(
    reader: Reader,
    host: Host,
    node: Map,
    where: str,
    photon: Photon,
    names: dict[str, int],
    macs: dict[str, int],
    index: int,
) -> bool:
    ok = True
    lowered = host.name.lower()
    if lowered in names:
        reader.fail(
            node.items["name"].loc,
            f"{where}.name",
            f"{host.name!r} is already hosts[{names[lowered]}]",
        )
        ok = False
    names.setdefault(lowered, index)
    if host.mac is None and host.boot in NETWORK_BOOTS:
        reader.fail(node.loc, f"{where}.mac", f"is required for boot: {host.boot}")
        ok = False
    if host.boot == "http" and host.firmware != "efi":
        loc = node.items["boot"].loc if "boot" in node.items else node.loc
        reader.fail(
            loc, f"{where}.boot", "http (UEFI HTTP boot) needs firmware: efi", "use boot: pxe"
        )
        ok = False
    ok = _check_loader(reader, host, node, where) and ok
    if host.mac is not None:
        if host.mac in macs:
            reader.fail(
                node.items["mac"].loc,
                f"{where}.mac",
                f"{host.mac} is already hosts[{macs[host.mac]}]",
            )
            ok = False
        macs.setdefault(host.mac, index)
    if host.boot == "guestinfo" and photon.installer == "2.3":
        loc = node.items["boot"].loc if "boot" in node.items else node.loc
        reader.fail(
            loc,
            f"{where}.boot",
            "guestinfo kickstarts need installer 2.7 or newer",
            _assumed_hint(photon) or "use boot: iso or pxe with installer 2.3",
        )
        ok = False
    ok = _check_raw_kickstart(reader, host, node, where, photon) and ok
    ok = _check_password_schemes(reader, host, node, where, photon) and ok
    ok = _check_kernel_pin(reader, host, node, where, photon) and ok
    return ok


def _check_kernel_pin(reader: Reader, host: Host, node: Map, where: str, photon: Photon) -> bool:
    """No pinned kernel version where the installer adds the unpinned kernel anyway.

    Installer 2.7 and later append ``linux_flavor`` to the packages unless that exact name is
    listed, so ``linux-esx=6.1.10`` would go to tdnf with an unpinned ``linux-esx`` beside it."""
    if photon.installer == "2.3":
        return True
    for index, package in enumerate(host.packages):
        name, pinned, version = package.partition("=")
        if name != host.linux_flavor or not pinned:
            continue
        reader.fail(
            _value_loc(node, "packages", index),
            f"{where}.packages[{index}]",
            f"installer {photon.installer} adds {name} without a version beside "
            f"{name}={version}, so the kernel it installs may not be the pinned one",
            _assumed_hint(photon) or f"list {name} without a version",
        )
        return False
    return True


LOADER_FIRMWARE = {"grub": "efi", "pxelinux": "bios"}
"""Loaders that run on one firmware only."""


def _check_loader(reader: Reader, host: Host, node: Map, where: str) -> bool:
    """A loader the host's firmware can run, and that its boot mode hands out at all."""
    if host.loader == "auto":
        return True
    loc = node.items["loader"].loc
    needs = LOADER_FIRMWARE.get(host.loader)
    if needs is not None and host.firmware != needs:
        other = "grub or ipxe" if needs == "bios" else "pxelinux or ipxe"
        reader.fail(
            loc,
            f"{where}.loader",
            f"{host.loader} needs firmware: {needs} (this host has firmware: {host.firmware})",
            f"use loader: {other}, or auto",
        )
        return False
    if host.boot == "http" and host.loader != "ipxe":
        reader.fail(
            loc,
            f"{where}.loader",
            f"boot: http always loads iPXE (snponly.efi over HTTP), never {host.loader}",
            "use boot: pxe to choose the loader, or leave loader out",
        )
        return False
    return True


def _assumed_hint(photon: Photon) -> str | None:
    """Why the installer version was assumed, when the user did not choose it."""
    if photon.installer_from != "assumed":
        return None
    return (
        f"photon.installer is auto and no Photon {photon.release} ISO is imported, so "
        f"installer {photon.installer} is assumed; run photonkick import-iso PHOTON.iso, or "
        "set photon.installer"
    )


def _value_loc(node: Node, *keys: str | int) -> Location:
    """The location of the value at ``keys`` below ``node``, or of the deepest node found."""
    for key in keys:
        if isinstance(node, Map) and isinstance(key, str) and key in node.items:
            node = node.items[key]
        elif isinstance(node, Seq) and isinstance(key, int) and key < len(node.items):
            node = node.items[key]
        else:
            break
    return node.loc


def crypt_scheme(hashed: str) -> str | None:
    """The crypt(3) scheme id of a hash (``$6$...`` -> ``6``); None for ``*`` or ``!``."""
    return hashed.split("$")[1] if hashed.startswith("$") else None


def _check_password_schemes(
    reader: Reader, host: Host, node: Map, where: str, photon: Photon
) -> bool:
    """Hashes the release's libc can verify: a user with any other can never log in."""
    allowed = CRYPT_SCHEMES[photon.release]
    hashes: list[tuple[tuple[str | int, ...], Secret | None]] = [
        (("root", "password_hash"), host.root.password_hash)
    ]
    hashes += [(("users", i, "password_hash"), u.password_hash) for i, u in enumerate(host.users)]
    ok = True
    for keys, hashed in hashes:
        scheme = crypt_scheme(hashed.reveal()) if hashed is not None else None
        if scheme is None or scheme in allowed:
            continue
        key_path = where + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys)
        reader.fail(
            _value_loc(node, *keys),
            key_path,
            f"Photon {photon.release} cannot verify ${scheme}$ hashes, so this password never "
            "works",
            "use one of "
            + ", ".join(f"${s}$" for s in allowed)
            + "; make one with: openssl passwd -6",
        )
        ok = False
    return ok


def _check_raw_kickstart(reader: Reader, host: Host, node: Map, where: str, photon: Photon) -> bool:
    if not host.kickstart:
        return True
    ks_node = node.items.get("kickstart", node)
    ok = True
    known = KNOWN_KEYS[photon.installer]
    for key, _ in host.kickstart:
        loc = ks_node.key_locs.get(key, ks_node.loc) if isinstance(ks_node, Map) else node.loc
        if key in FORBIDDEN_KEYS:
            reader.fail(loc, f"{where}.kickstart.{key}", "not allowed", FORBIDDEN_KEYS[key])
            ok = False
        elif key not in known:
            reader.fail(
                loc,
                f"{where}.kickstart.{key}",
                f"installer {photon.installer} does not know this key",
                _assumed_hint(photon),
            )
            ok = False
        else:
            ok = _check_raw_value(reader, host, ks_node, f"{where}.kickstart", key) and ok
    return ok


def _check_raw_value(reader: Reader, host: Host, ks_node: Node, where: str, key: str) -> bool:
    """Raw keys photonkick combines with its own: ``disks`` and ``partitions``."""
    value = dict(host.kickstart)[key]
    if key == "disks":
        if not isinstance(value, dict) or not all(
            isinstance(d, dict) and isinstance(d.get("device"), str) for d in value.values()
        ):
            reader.fail(
                _value_loc(ks_node, key), f"{where}.disks", "expected {id: {device: /dev/...}}"
            )
            return False
        if "default" in value:
            reader.fail(
                _value_loc(ks_node, key, "default"),
                f"{where}.disks.default",
                "the default disk is the host key 'disk'",
                "photonkick writes it; give only the extra disks here",
            )
            return False
    if key == "partitions" and host.firmware == "efi" and isinstance(value, list):
        parts = [
            (p.get("mountpoint"), p.get("size")) if isinstance(p, dict) else (None, None)
            for p in value
        ]
        problem = efi_partition_problem(parts)
        if problem is not None:
            index, message = problem
            reader.fail(
                _value_loc(ks_node, key, index),
                f"{where}.partitions[{index}]",
                message,
                EFI_PARTITION_HINT,
            )
            return False
    return True


def _unique(problems: list[Problem]) -> list[Problem]:
    """Drop repeats: a problem in ``defaults`` would otherwise come back once per host."""
    seen: set[tuple[object, str, str]] = set()
    out = []
    for p in problems:
        key = (p.location, p.message, p.key_path.rsplit(".", 1)[-1])
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
