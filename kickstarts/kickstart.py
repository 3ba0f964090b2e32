"""Build a host's Photon kickstart as data; ``dumps`` makes the strict JSON the installer reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jinja2

from photonkick.kickstarts.errors import RenderError
from photonkick.kickstarts.host_secrets import container_env_path, secrets_fragment
from photonkick.kickstarts.installer import (
    DISKS_SINCE,
    KERNEL_SUBPACKAGES,
    KNOWN_KEYS,
    LINUX_FLAVORS,
)
from photonkick.kickstarts.network import network_config
from photonkick.kickstarts.secrets import REDACTED
from photonkick.kickstarts.spec import Container, Host, Inventory
from photonkick.kickstarts.tokens import callback_base, host_token
from photonkick.templates import render, systemd_quote

FIRSTBOOT_UNIT = "photonkick-firstboot.service"
RESTART_POLICY = {
    "always": "always",
    "unless-stopped": "always",
    "on-failure": "on-failure",
    "no": "no",
}
"""Docker restart policies as systemd Restart= values (systemd owns the container's life)."""


@dataclass(frozen=True)
class BuildInfo:
    """What makes one build of a host unique: its number and the state directory's secret."""

    build: int
    secret: bytes

    def token(self, host: str) -> str:
        """The host's token for this build."""
        return host_token(self.secret, host, self.build)


@dataclass(frozen=True)
class _View:
    """Whether tokens (and embedded secrets) are shown or replaced by a placeholder."""

    redact: bool


def build_kickstart(
    host: Host,
    inventory: Inventory,
    build: BuildInfo,
    *,
    redact: bool = False,
    embed_secrets: bool = False,
) -> dict[str, Any]:
    """The kickstart for one host as a dict of installer keys.

    It carries no secret: its postinstall fetches them once from photonkick (see
    ``photonkick.kickstarts.host_secrets``). ``embed_secrets`` puts them in the kickstart
    instead, for installs where photonkick cannot be reached. With ``redact`` the tokens (and
    embedded secrets) are replaced by a placeholder, for showing to people.
    """
    view = _View(redact)
    token = REDACTED if redact else build.token(host.name)
    base = callback_base(inventory.server.url, host.name, token)
    raw = dict(host.kickstart)
    ks: dict[str, Any] = {
        "hostname": host.name,
        **disk_keys(host.disk, inventory.photon.installer, raw.pop("disks", None)),
        "bootmode": "efi" if host.firmware == "efi" else "bios",
        "packages": packages(host),
        "linux_flavor": host.linux_flavor,
        "network": network_config(host),
        "postinstall": _postinstall(host, inventory, build, view, base, embed_secrets).splitlines(),
    }
    if host.partitions:
        ks["partitions"] = [_partition(p) for p in host.partitions]
    if host.boot in ("iso", "guestinfo"):  # both boot the installer from the CD-ROM
        ks["eject_cdrom"] = True
    ks.update(raw)
    unknown = set(ks) - KNOWN_KEYS[inventory.photon.installer]
    if unknown:
        raise RenderError(
            f"{host.name}: installer {inventory.photon.installer} does not know "
            f"kickstart keys {sorted(unknown)}"
        )
    return ks


def disk_keys(device: str, installer: str, extra_disks: Any = None) -> dict[str, Any]:
    """The install disk in the form the installer version reads without complaint.

    2.7 and later read ``disks`` (``disk`` logs that it will be deprecated, and both together
    are refused); 2.3 knows only ``disk``. Extra disks from a raw ``disks`` key join ours.
    """
    if installer not in DISKS_SINCE:
        # A raw ``disks`` stays, so the known-keys check below refuses it by name.
        return {"disk": device} if extra_disks is None else {"disk": device, "disks": extra_disks}
    return {"disks": {"default": {"device": device}, **(extra_disks or {})}}


def kernel_flavor_of(package: str) -> str | None:
    """The kernel flavor a package belongs to (``linux-esx-devel`` -> ``linux-esx``), or None."""
    name = package.split("=", 1)[0]
    if name in LINUX_FLAVORS:
        return name
    for flavor in sorted(LINUX_FLAVORS, key=len, reverse=True):
        if name.startswith(flavor + "-") and name[len(flavor) + 1 :] in KERNEL_SUBPACKAGES:
            return flavor
    return None


def packages(host: Host) -> list[str]:
    """The host's packages with exactly one kernel, plus what photonkick's own scripts need.

    The chosen ``linux_flavor`` is always listed and the other flavors' packages are dropped:
    installer 2.3 neither adds the flavor nor keeps any other kernel, so a list naming only
    another flavor would install none. Then curl for the callbacks, docker when enabled, sudo
    when a user gets a sudo rule.
    """
    names = [p for p in host.packages if kernel_flavor_of(p) in (None, host.linux_flavor)]
    given = {p.split("=", 1)[0] for p in names}
    needed = [host.linux_flavor, "curl"]
    if host.docker:
        needed.append("docker")
    if any(u.sudo for u in host.users):
        needed.append("sudo")
    return names + [p for p in needed if p not in given]


def dumps(kickstart: dict[str, Any]) -> str:
    """Canonical strict JSON (installer 2.3 and Photon 3 read nothing else)."""
    return json.dumps(kickstart, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def _partition(part: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"filesystem": part.filesystem}
    if part.mountpoint:
        out["mountpoint"] = part.mountpoint
    if part.size is not None:
        out["size"] = part.size
    if part.sizepercent is not None:
        out["sizepercent"] = part.sizepercent
    if part.lvm:
        out["lvm"] = {"vg_name": part.lvm[0], "lv_name": part.lvm[1]}
    if part.fs_options:
        out["fs_options"] = part.fs_options
    return out


def _users(host: Host) -> list[dict[str, Any]]:
    users = []
    for user in host.users:
        # Every user starts locked ('*'); the secrets part of the script sets real hashes.
        password_hash = "*"
        no_password = user.password_hash is None and user.password is None
        rule = f"{user.name} ALL=(ALL) {'NOPASSWD: ' if no_password else ''}ALL"
        users.append(
            {
                "name": user.name,
                "groups": user.groups,
                "ssh_keys": user.ssh_keys,
                "shell": user.shell,
                "sudo": user.sudo,
                "sudo_rule": rule,
                "password_hash": password_hash,
            }
        )
    return users


def _container_view(c: Container) -> dict[str, Any]:
    args = ["/usr/bin/docker", "run", "--rm", "--name", c.name]
    for port in c.ports:
        args += ["-p", port]
    for vol in c.volumes:
        args += ["-v", vol]
    if c.env:
        args += ["--env-file", container_env_path(c.name)]
    args += [c.image, *c.command]
    return {
        "name": c.name,
        "image": c.image,
        "unit": f"photonkick-container-{c.name}.service",
        "systemd_restart": RESTART_POLICY[c.restart],
        "exec_start": " ".join(systemd_quote(a) for a in args),
        "host_dirs": [v.split(":", 1)[0] for v in c.volumes if v.startswith("/")],
    }


def _file(path: str, content: str, mode: str) -> dict[str, Any]:
    if not content.endswith("\n"):
        content += "\n"
    return {"path": path, "content": content, "mode": mode}


def _postinstall(
    host: Host, inventory: Inventory, build: BuildInfo, view: _View, base: str, embed: bool
) -> str:
    user_dir = inventory.templates
    containers = [_container_view(c) for c in host.containers]
    ctx: dict[str, Any] = {
        "host": host,
        "build": build.build,
        "callback_base": base,
        "docker": host.docker,
        "update": host.update,
        "containers": containers,
        "registries": host.registries,
    }
    try:
        files = [
            _file(
                "/usr/local/libexec/photonkick/firstboot",
                render("kickstart/firstboot.sh.j2", user_dir, **ctx),
                "0700",
            ),
            _file(
                f"/etc/systemd/system/{FIRSTBOOT_UNIT}",
                render("kickstart/photonkick-firstboot.service.j2", user_dir, **ctx),
                "0644",
            ),
        ]
        for cv in containers:
            files.append(
                _file(
                    f"/etc/systemd/system/{cv['unit']}",
                    render("kickstart/container.service.j2", user_dir, c=cv),
                    "0644",
                )
            )
        return render(
            "kickstart/postinstall.sh.j2",
            user_dir,
            **ctx,
            secrets=secrets_fragment(
                host,
                inventory.server.url,
                build.secret,
                build.build,
                embed=embed,
                redact=view.redact,
            ),
            users=_users(host),
            root_login=host.root.allow_login,
            root_hash="*",
            files=files,
            units=[FIRSTBOOT_UNIT],
            extra_lines=host.postinstall,
        )
    except jinja2.TemplateError as exc:
        where = getattr(exc, "filename", None) or getattr(exc, "name", None) or "template"
        raise RenderError(f"{host.name}: cannot render {where}: {exc}") from exc
