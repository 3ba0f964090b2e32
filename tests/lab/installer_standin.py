"""The stand-in guest as an installer: its own log, the kickstart's ``preinstall``, RPMs.

:func:`installer_initrd` appends an overlay to the stand-in's initrd (the kernel unpacks
both archives). The guest's ``/init`` sources the overlay's ``/etc/pk-installer.sh`` once
it has the kickstart and before it writes its install marker. That script does what
photon-os-installer 2.7 does, as far as photonkick can see it:

* runs the kickstart's ``preinstall`` lines (taken from the kickstart photonkick serves,
  one JSON string a line) with ``sh``, as the installer does before it touches the disk;
  photonkick's lines start its log shipper there;
* writes ``/var/log/installer.log`` in the installer logger's format
  (``%(asctime)s - %(message)s``): the commands it would run, each logged as
  ``running [...]`` by its command runner (partitioning with ``sgdisk``, the boot loader
  with ``mk-setup-grub.sh``) and ``running tdnf ... install ...`` by its tdnf wrapper, then
  ``Executing: m_postinstall``;
* downloads each RPM of :data:`lab.installer_standin.RPMS` from the kickstart's repo;
* without a disk, fails where the installer does (``sgdisk -Z`` cannot open the device):
  ``Command failed``, the exception and its traceback, as ``logger.exception`` writes them;
  it then leaves the shipper a few rounds to send them and powers off.

The shipper is photonkick's own shell script; busybox has no ``curl``, so the overlay adds
a ``curl`` that does what the shipper asks of it with busybox ``wget``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lab.guest import Guest, initrd_overlay

#: The stand-in's step: logs in the installer's format, runs preinstall, fetches RPMs.
INSTALLER = r"""
pylib=/usr/lib/python3.11/site-packages/photon_installer
ilog() { echo "$(date '+%Y-%m-%d %H:%M:%S'),000 - $*" >> /var/log/installer.log; }
jlist() {
    # The JSON string list under key $1 of /tmp/ks.json (photonkick writes one per line).
    awk -v key="  \"$1\": [" '
        $0 == key { on = 1; next }
        on && /^  \]/ { exit }
        on {
            s = $0; sub(/^ *"/, "", s); sub(/",?$/, "", s); out = ""
            while ((i = index(s, "\\")) > 0) {
                c = substr(s, i + 1, 1)
                if (c == "n") c = "\n"; else if (c == "t") c = "\t"
                out = out substr(s, 1, i - 1) c; s = substr(s, i + 2)
            }
            print out s
        }' /tmp/ks.json
}
mkdir -p /var/log
: > /var/log/installer.log
ilog "Installer started (photonkick lab stand-in)"
jlist preinstall > /tmp/preinstall.sh
if [ -s /tmp/preinstall.sh ]; then
    ilog "Running preinstall"
    sh /tmp/preinstall.sh </dev/null >/tmp/preinstall.out 2>&1 || fail "preinstall failed"
    log "preinstall ran ($(wc -l < /tmp/preinstall.sh) lines)"
fi
sleep 1
target=$disk
[ -n "$target" ] || target=$(grep -o '"device": "[^"]*"' /tmp/ks.json | head -n 1 \
    | sed 's/.*"\([^"]*\)"$/\1/')
ilog "running ['sgdisk', '-Z', '$target']"
if [ -z "$disk" ] || ! dd if="$disk" of=/tmp/sector0 bs=512 count=1 2>/dev/null \
    || ! dd if=/tmp/sector0 of="$disk" bs=512 count=1 conv=notrunc 2>/dev/null; then
    ilog "Command failed: ['sgdisk', '-Z', '$target']"
    ilog "Error code: 2"
    ilog "Problem opening $target for reading! Error is 2."
    ilog "Exception(\"failed clearing disk '$target'\")"
    {
        echo "Traceback (most recent call last):"
        echo "  File \"$pylib/installer.py\", line 1917, in _partition_disks"
        echo "    raise Exception(f\"failed clearing disk '{device}'\")"
        echo "Exception: failed clearing disk '$target'"
    } >> /var/log/installer.log
    log "partitioning failed, shipping the log"
    sleep 10
    fail "installer failed in partitioning"
fi
sleep 1
packages=$(jlist packages | tr '\n' ' ')
tdnf="tdnf -j -y --installroot /mnt/photon-root"
ilog "running $tdnf install filesystem"
ilog "running $tdnf -c /mnt/tdnf.conf --setopt=reposdir=/mnt install ${packages% }"
n=0
for rpm in $(cat /etc/pk-rpms); do
    fetch /tmp/pkg.rpm "$repo/$rpm" || fail "package fetch $repo/$rpm"
    ilog "Installing: ${rpm##*/}"
    n=$((n + 1))
done
rm -f /tmp/pkg.rpm
log "packages fetched: $n"
ilog "running ['$pylib/mk-setup-grub.sh', '-w', '/mnt/photon-root/boot', '$disk']"
sleep 1
ilog "Executing: m_postinstall"
sleep 1
ilog "Installation complete"
# Two shipper rounds (3 s apart): every line reaches photonkick before "installed".
sleep 7
"""

#: ``curl`` as photonkick's log shipper calls it, done with busybox ``wget``; prints the
#: HTTP status (``000`` when there was no answer) like ``curl -w '%{http_code}'``.
CURL = r"""#!/bin/sh
file=/dev/null
header=""
url=""
while [ $# -gt 0 ]; do
    case "$1" in
        --data-binary) file=${2#@}; shift ;;
        -H) header=$2; shift ;;
        -o|-w|-X|--max-time) shift ;;
        -*) ;;
        *) url=$1 ;;
    esac
    shift
done
if timeout 20 wget -q -O /dev/null --header "$header" --post-file "$file" "$url" 2>/tmp/curl.err
then
    printf 200
else
    code=$(grep -o 'HTTP/1\.[01] [0-9][0-9][0-9]' /tmp/curl.err | head -n 1 | cut -d' ' -f2)
    printf '%s' "${code:-000}"
fi
"""


def installer_initrd(guest: Guest, rpms: list[str], dest: Path) -> Guest:
    """``guest`` whose initrd (written to ``dest``) also acts as the installer, fetching
    ``rpms`` (paths under the repo) as its packages."""
    overlay = initrd_overlay(
        {
            "etc/pk-installer.sh": (INSTALLER.encode(), 0o644),
            "etc/pk-rpms": ("".join(f"{r}\n" for r in rpms).encode(), 0o644),
            "bin/curl": (CURL.encode(), 0o755),
        }
    )
    dest.write_bytes(guest.initrd.read_bytes() + overlay)
    return replace(guest, initrd=dest)
