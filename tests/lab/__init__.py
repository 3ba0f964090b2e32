"""The ``lab`` tier: real QEMU VMs network-booting in a private network namespace.

* :mod:`lab.guest` builds the stand-in installer (Debian kernel + busybox initramfs) and
  a disk template that boots it again under SeaBIOS and OVMF.
* :mod:`lab.netlab` makes the namespace (bridge at 192.0.2.1/24, taps, no route out),
  runs dnsmasq (DHCP only) and tftpd-hpa in it, and watches DHCP/TFTP requests.
* :mod:`lab.qemu` starts VMs on the taps (SeaBIOS or OVMF, virtio-net or vmxnet3).

A test of the real boot server follows ``test_lab_smoke``, with the server spawned in the
namespace instead of the stand-in::

    with netlab(len(hosts), tmp) as lab:
        lab.watch()
        lab.start_dnsmasq(clients, BootFiles(bios="lpxelinux.0", ipxe=chain, ipxe_uefi=True))
        serve = lab.spawn(["photonkick", "serve", ...], tmp / "serve.log")
        lab.wait_listening(8080, 30, proc=serve)
        vms = run_vms(lab, specs, accel, timeout=180, parallel=2)

The guest reports over HTTP exactly like an install: it needs ``ks=`` (an http URL of a
kickstart JSON with ``hostname`` and the ``pk_report() { curl ... "<base>/$1" ...`` line)
and ``repos=`` (it GETs ``<repos>/repodata/repomd.xml``) on its kernel command line, and
POSTs ``<base>/installed``, then after a disk boot ``<base>/firstboot`` and ``<base>/ready``.
"""
