"""PyVmomiDriver against the vSphere simulator, as a standalone ESXi host and as a vCenter.

Results are checked through a second, independent pyVmomi session (``Inspector``), not
through the driver's own reads. Guest-side state (Tools, IP) is injected through the
simulator's ``SET.*`` ExtraConfig keys, which play the part of the guest.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from photonkick.server.vsphere import (
    DriverError,
    DriverTimeout,
    Placement,
    VmRequest,
    VmState,
)
from photonkick.server.vsphere._certs import fingerprint, pin_path
from photonkick.server.vsphere._pyvmomi import PyVmomiDriver

if TYPE_CHECKING:
    from vcsim_fixture import Vcsim


MAC = "00:50:56:3f:00:01"
GIB = 1024**3


def request(name: str = "photon-1", **changes: Any) -> VmRequest:
    values: dict[str, Any] = {"name": name, "mac": MAC} | changes
    return VmRequest(**values)


def placement_for(sim: Vcsim, **fields: str) -> Placement:
    """The vCenter model has a cluster and a standalone host: pick the cluster."""
    if sim.model == "vcenter":
        fields.setdefault("cluster", "DC0_C0")
    return Placement(**fields)


def connect(sim: Vcsim, pin_dir: Path | None = None, **options: Any) -> PyVmomiDriver:
    """Log in to the simulator; ``options`` go to ``PyVmomiDriver.connect``."""
    options.setdefault("placement", placement_for(sim))
    password = options.pop("password", sim.password)
    return PyVmomiDriver.connect(
        sim.host, sim.user, password, port=sim.port, pin_dir=pin_dir, **options
    )


class Inspector:
    """An independent session that reads (and, for guest simulation, writes) the inventory."""

    def __init__(self, sim: Vcsim) -> None:
        self.sim = sim
        context = ssl.create_default_context(cadata=sim.cert_pem)
        self.si = SmartConnect(
            host=sim.host, port=sim.port, user=sim.user, pwd=sim.password, sslContext=context
        )
        self.content = self.si.RetrieveContent()

    def vms(self) -> list[Any]:
        view = self.content.viewManager.CreateContainerView(
            self.content.rootFolder, [vim.VirtualMachine], True
        )
        try:
            return list(view.view)
        finally:
            view.Destroy()

    def vm(self, name: str) -> Any:
        found = [vm for vm in self.vms() if vm.name == name]
        assert len(found) == 1, f"{len(found)} VMs called {name!r}"
        return found[0]

    def datacenter(self) -> Any:
        return next(e for e in self.content.rootFolder.childEntity if isinstance(e, vim.Datacenter))

    def reconfigure(self, vm: Any, **spec: Any) -> None:
        WaitForTask(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(**spec)))

    def act_as_guest(self, vm: Any, **guest: str) -> None:
        """Report guest state the way VMware Tools would, through the SET.* keys."""
        options = [vim.option.OptionValue(key=f"SET.guest.{k}", value=v) for k, v in guest.items()]
        self.reconfigure(vm, extraConfig=options)

    def folder_get(self, path: str, *, cookie: bool) -> tuple[int, bytes]:
        dc = self.datacenter().name
        conn = http.client.HTTPSConnection(
            self.sim.host,
            self.sim.port,
            context=ssl.create_default_context(cadata=self.sim.cert_pem),
        )
        session = self.si._stub.GetSessionId()
        headers = {"Cookie": f'vmware_soap_session="{session}"'} if cookie else {}
        conn.request("GET", f"/folder/{path}?dcPath={dc}&dsName=LocalDS_0", headers=headers)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response.status, body


def effective_extra_config(vm: Any) -> dict[str, str]:
    """ExtraConfig as the guest sees it: the last value of each key; empty means unset."""
    values: dict[str, str] = {}
    for option in vm.config.extraConfig:
        values[option.key] = option.value
    return {key: value for key, value in values.items() if value != ""}


def devices(vm: Any, kind: Any) -> list[Any]:
    return [d for d in vm.config.hardware.device if isinstance(d, kind)]


@pytest.fixture
def sim(vcsim: Vcsim) -> Vcsim:
    """The per-test simulator, once per model (ESXi, vCenter)."""
    return vcsim


@pytest.fixture
def driver(sim: Vcsim, tmp_path: Path) -> Iterator[PyVmomiDriver]:
    with connect(sim, tmp_path / "pins") as d:
        yield d


@pytest.fixture
def inspector(sim: Vcsim) -> Iterator[Inspector]:
    inspector = Inspector(sim)
    yield inspector
    Disconnect(inspector.si)


# -- requests (no simulator) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mac": "00:50:56:AA:00:01"}, "must look like"),
        ({"mac": "00:50:56:3F:00:01"}, "lower case"),
        ({"firmware": "uefi"}, "firmware 'uefi'"),
        ({"boot": "iso"}, "boot iso needs an iso"),
        ({"iso": "photon.iso"}, "must be a datastore path"),
        ({"cpus": 0}, "cpus must be at least 1, not 0"),
        ({"name": "a/b"}, "without /"),
    ],
)
def test_bad_requests_are_refused_before_any_call(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(DriverError, match="VM request") as caught:
        request(**changes)
    assert message in str(caught.value)


def test_static_mac_range() -> None:
    from photonkick.kickstarts.warnings import is_vmware_static_mac as is_static_mac

    assert is_static_mac("00:50:56:00:00:00")
    assert is_static_mac("00:50:56:3f:ff:ff")
    assert not is_static_mac("00:50:56:40:00:00")
    assert not is_static_mac("00:0c:29:00:00:01")


def test_boot_order_follows_the_boot_mode() -> None:
    assert request().boot_order == ("ethernet", "disk")
    assert request(boot="iso", iso="[ds] iso/p.iso").boot_order == ("cdrom", "disk")
    assert request(boot="guestinfo", iso="[ds] iso/p.iso").boot_order == ("cdrom", "disk")


# -- create --------------------------------------------------------------------------------


def test_create_builds_the_photon_vm(driver: PyVmomiDriver, inspector: Inspector) -> None:
    extra = {"guestinfo.ready_url": "http://192.0.2.1:8080/ready/tok1"}
    handle = driver.create(request(extra_config=extra))

    vm = inspector.vm("photon-1")
    assert handle.ref == vm._moId
    config = vm.config
    assert config.guestId == "vmwarePhoton64Guest"
    assert config.firmware == "efi"
    assert config.version == "vmx-19"
    assert (config.hardware.numCPU, config.hardware.numCoresPerSocket) == (2, 1)
    assert config.hardware.memoryMB == 2048
    assert vm.runtime.powerState == "poweredOff"

    [scsi] = devices(vm, vim.vm.device.VirtualSCSIController)
    assert isinstance(scsi, vim.vm.device.ParaVirtualSCSIController)
    [disk] = devices(vm, vim.vm.device.VirtualDisk)
    assert disk.controllerKey == scsi.key
    assert disk.backing.thinProvisioned is True
    assert disk.backing.diskMode == "persistent"
    assert disk.capacityInKB * 1024 == 40 * GIB
    assert disk.backing.fileName.startswith("[LocalDS_0] photon-1/")

    [sata] = devices(vm, vim.vm.device.VirtualAHCIController)
    [cdrom] = devices(vm, vim.vm.device.VirtualCdrom)
    assert cdrom.controllerKey == sata.key
    assert not isinstance(cdrom.backing, vim.vm.device.VirtualCdrom.IsoBackingInfo)

    [nic] = devices(vm, vim.vm.device.VirtualEthernetCard)
    assert isinstance(nic, vim.vm.device.VirtualVmxnet3)
    assert nic.addressType.lower() == "manual"
    assert nic.macAddress == MAC
    assert nic.connectable.startConnected is True

    boot = config.bootOptions
    assert [type(b) for b in boot.bootOrder] == [
        vim.vm.BootOptions.BootableEthernetDevice,
        vim.vm.BootOptions.BootableDiskDevice,
    ]
    assert [b.deviceKey for b in boot.bootOrder] == [nic.key, disk.key]
    assert boot.bootRetryEnabled is True
    assert boot.bootRetryDelay == 10_000
    assert not boot.efiSecureBootEnabled
    assert effective_extra_config(vm)["guestinfo.ready_url"] == extra["guestinfo.ready_url"]


def test_create_for_an_iso_install_with_bios(driver: PyVmomiDriver, inspector: Inspector) -> None:
    iso = "[LocalDS_0] iso/photon.iso"
    driver.create(
        request(firmware="bios", boot="guestinfo", iso=iso, cpus=4, memory_mb=4096, disk_gb=16)
    )

    vm = inspector.vm("photon-1")
    assert vm.config.firmware == "bios"
    assert (vm.config.hardware.numCPU, vm.config.hardware.memoryMB) == (4, 4096)
    [disk] = devices(vm, vim.vm.device.VirtualDisk)
    assert disk.capacityInKB * 1024 == 16 * GIB
    [cdrom] = devices(vm, vim.vm.device.VirtualCdrom)
    assert cdrom.backing.fileName == iso
    assert cdrom.connectable.startConnected is True
    order = vm.config.bootOptions.bootOrder
    assert isinstance(order[0], vim.vm.BootOptions.BootableCdromDevice)
    assert isinstance(order[1], vim.vm.BootOptions.BootableDiskDevice)
    assert order[1].deviceKey == disk.key
    assert not vm.config.bootOptions.efiSecureBootEnabled


def test_a_taken_name_is_refused(driver: PyVmomiDriver, inspector: Inspector) -> None:
    driver.create(request())
    with pytest.raises(DriverError, match="already exists") as caught:
        driver.create(request(mac="00:50:56:3f:00:02"))
    assert caught.value.fault == "DuplicateName"
    assert [vm.name for vm in inspector.vms()] == ["photon-1"]


def test_a_failed_create_leaves_no_vm(
    sim: Vcsim, start_vcsim: Any, tmp_path: Path, driver: PyVmomiDriver
) -> None:
    # This simulator refuses every reconfiguration of new VMs, so the step after CreateVM
    # (setting the boot order) fails once the VM exists.
    broken = start_vcsim(sim.model, disable_methods=("ReconfigVM_Task",))
    with connect(broken, tmp_path / "broken-pins") as broken_driver:
        with pytest.raises(DriverError) as caught:
            broken_driver.create(request())
        assert caught.value.fault == "MethodDisabled"
        assert broken_driver.find("photon-1") is None
    inspector = Inspector(broken)
    assert inspector.vms() == []
    Disconnect(inspector.si)

    with pytest.raises(DriverError, match="no datastore 'missing'"):
        driver.create(request(datastore="missing"))
    assert driver.find("photon-1") is None


def test_find(driver: PyVmomiDriver) -> None:
    assert driver.find("photon-1") is None
    handle = driver.create(request())
    assert driver.find("photon-1") == handle


def test_find_refuses_to_guess_between_two_vms_of_one_name(
    start_vcsim: Any, tmp_path: Path
) -> None:
    sim = start_vcsim("vcenter")  # only a vCenter allows one name in two folders
    inspector = Inspector(sim)
    dc = inspector.datacenter()
    cluster = next(e for e in dc.hostFolder.childEntity if e.name == "DC0_C0")
    for folder_name in ("a", "b"):
        folder = dc.vmFolder.CreateFolder(folder_name)
        spec = vim.vm.ConfigSpec(name="twin", files=vim.vm.FileInfo(vmPathName="[LocalDS_0]"))
        WaitForTask(folder.CreateVM_Task(config=spec, pool=cluster.resourcePool))
    Disconnect(inspector.si)
    with connect(sim, tmp_path) as driver:
        with pytest.raises(DriverError, match="2 VMs are called 'twin'"):
            driver.find("twin")
        with pytest.raises(DriverError, match="2 VMs are called 'twin'"):
            driver.create(request("twin"))


# -- power, boot order, destroy ------------------------------------------------------------


def test_power_on_and_off(driver: PyVmomiDriver, inspector: Inspector) -> None:
    handle = driver.create(request())
    driver.power_on(handle)
    assert inspector.vm("photon-1").runtime.powerState == "poweredOn"
    assert driver.state(handle).power == "on"
    driver.power_on(handle)  # already on: nothing to do
    driver.power_off(handle)
    assert inspector.vm("photon-1").runtime.powerState == "poweredOff"
    driver.power_off(handle)  # already off: nothing to do
    assert driver.state(handle) == VmState(power="off")


def test_boot_from_disk_after_install_keeps_the_other_boot_options(
    driver: PyVmomiDriver, inspector: Inspector
) -> None:
    handle = driver.create(request())
    driver.set_boot_order(handle, ["disk"])

    vm = inspector.vm("photon-1")
    [disk] = devices(vm, vim.vm.device.VirtualDisk)
    [entry] = vm.config.bootOptions.bootOrder
    assert isinstance(entry, vim.vm.BootOptions.BootableDiskDevice)
    assert entry.deviceKey == disk.key
    assert vm.config.bootOptions.bootRetryEnabled is True
    assert vm.config.bootOptions.bootRetryDelay == 10_000
    with pytest.raises(DriverError, match="must be ethernet, cdrom or disk"):
        driver.set_boot_order(handle, ["floppy"])  # type: ignore[list-item]


def test_destroy_a_running_vm(driver: PyVmomiDriver, inspector: Inspector) -> None:
    handle = driver.create(request())
    driver.power_on(handle)
    driver.destroy(handle)
    assert driver.find("photon-1") is None
    assert inspector.vms() == []
    driver.destroy(handle)  # already gone


def test_rebuild_with_the_same_name_and_mac(driver: PyVmomiDriver, inspector: Inspector) -> None:
    first = driver.create(request())
    driver.destroy(first)
    second = driver.create(request())
    assert second.ref != first.ref
    vm = inspector.vm("photon-1")
    [nic] = devices(vm, vim.vm.device.VirtualEthernetCard)
    assert nic.macAddress == MAC
    assert [v.name for v in inspector.vms()] == ["photon-1"]


# -- ISO and guestinfo ---------------------------------------------------------------------


def test_upload_then_attach_and_detach_an_iso(
    driver: PyVmomiDriver, inspector: Inspector, tmp_path: Path
) -> None:
    image = tmp_path / "photon.iso"
    image.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    handle = driver.create(request())

    target = driver.upload(image, "iso/photon.iso")
    assert target == "[LocalDS_0] iso/photon.iso"
    assert inspector.folder_get("iso/photon.iso", cookie=True) == (200, image.read_bytes())
    assert inspector.folder_get("iso/photon.iso", cookie=False)[0] == 401  # sessions only

    image.write_bytes(b"second version")
    driver.upload(image, "iso/photon.iso")  # replaces
    assert inspector.folder_get("iso/photon.iso", cookie=True) == (200, b"second version")

    driver.attach_iso(handle, target)
    [cdrom] = devices(inspector.vm("photon-1"), vim.vm.device.VirtualCdrom)
    assert cdrom.backing.fileName == target
    assert cdrom.connectable.startConnected is True

    driver.detach_iso(handle)
    [cdrom] = devices(inspector.vm("photon-1"), vim.vm.device.VirtualCdrom)
    assert not isinstance(cdrom.backing, vim.vm.device.VirtualCdrom.IsoBackingInfo)
    assert cdrom.connectable.startConnected is False


def test_upload_refuses_paths_outside_the_datastore(driver: PyVmomiDriver, tmp_path: Path) -> None:
    image = tmp_path / "x.iso"
    image.write_bytes(b"x")
    for bad in ("../x.iso", "/abs/x.iso", ""):
        with pytest.raises(DriverError, match="relative datastore path"):
            driver.upload(image, bad)
    with pytest.raises(DriverError, match="no datastore 'nope'"):
        driver.upload(image, "iso/x.iso", datastore="nope")


def test_small_files_listed_read_and_deleted(driver: PyVmomiDriver, inspector: Inspector) -> None:
    assert driver.list_files("isos", "*.iso") == {}  # no such folder yet
    assert driver.read_file("isos/a.iso.sha256") is None
    assert driver.write_file(b"abc  3\n", "isos/a.iso.sha256") == "[LocalDS_0] isos/a.iso.sha256"
    driver.write_file(b"x" * 5000, "isos/a.iso")
    driver.write_file(b"y", "isos/b-build1.iso")
    assert inspector.folder_get("isos/a.iso.sha256", cookie=True) == (200, b"abc  3\n")
    assert driver.read_file("isos/a.iso.sha256") == b"abc  3\n"
    assert driver.read_file("isos/a.iso", limit=10) == b"x" * 10
    assert driver.list_files("isos", "*.iso") == {"a.iso": 5000, "b-build1.iso": 1}
    assert driver.list_files("isos", "b-build*.iso") == {"b-build1.iso": 1}
    assert driver.datastore_path("isos/a.iso") == "[LocalDS_0] isos/a.iso"
    driver.delete_file("isos/b-build1.iso")
    driver.delete_file("isos/b-build1.iso")  # already gone: fine
    assert inspector.folder_get("isos/b-build1.iso", cookie=True)[0] == 404
    assert driver.list_files("isos", "*.iso") == {"a.iso": 5000}


def test_a_set_stop_check_ends_task_waits(driver: PyVmomiDriver, inspector: Inspector) -> None:
    """Every call that waits for a task asks the stop check; True ends the wait at once."""
    handle = driver.create(request())
    with pytest.raises(DriverError, match="stopped"):
        driver.set_boot_order(handle, ["disk"], stop=lambda: True)
    with pytest.raises(DriverError, match="stopped"):
        driver.power_on(handle, stop=lambda: True)
    with pytest.raises(DriverError, match="stopped"):
        driver.create(request("photon-2"), stop=lambda: True)
    driver.set_boot_order(handle, ["disk"], stop=lambda: False)


def test_guestinfo_set_and_clear(driver: PyVmomiDriver, inspector: Inspector) -> None:
    handle = driver.create(
        request(extra_config={"guestinfo.ready_url": "http://h/ready/t1", "keep.me": "yes"})
    )
    driver.set_guestinfo(handle, {"guestinfo.kickstart.url": "http://h/ks/a.json"})
    assert driver.guestinfo(handle) == {
        "guestinfo.ready_url": "http://h/ready/t1",
        "guestinfo.kickstart.url": "http://h/ks/a.json",
    }

    driver.clear_guestinfo(handle, ["guestinfo.ready_url"])
    assert driver.guestinfo(handle) == {"guestinfo.kickstart.url": "http://h/ks/a.json"}
    seen = effective_extra_config(inspector.vm("photon-1"))
    assert "guestinfo.ready_url" not in seen
    assert seen["guestinfo.kickstart.url"] == "http://h/ks/a.json"
    assert seen["keep.me"] == "yes"

    with pytest.raises(DriverError, match="not a guestinfo"):
        driver.set_guestinfo(handle, {"keep.me": "no"})


# -- waiting -------------------------------------------------------------------------------


def test_wait_for_tools_and_ip(driver: PyVmomiDriver, inspector: Inspector) -> None:
    handle = driver.create(request())
    driver.power_on(handle)
    assert driver.state(handle) == VmState(power="on", tools_running=False, ip=None)
    vm = inspector.vm("photon-1")

    def guest_boots() -> None:
        time.sleep(0.3)
        inspector.act_as_guest(vm, toolsRunningStatus="guestToolsRunning")
        time.sleep(0.3)
        inspector.act_as_guest(vm, ipAddress="192.0.2.10")

    guest = threading.Thread(target=guest_boots)
    started = time.monotonic()
    guest.start()
    try:
        assert driver.wait_for(handle, lambda s: s.tools_running, timeout=10).tools_running
        ready = driver.wait_for(handle, lambda s: s.ip is not None, timeout=10)
    finally:
        guest.join()
    assert time.monotonic() - started >= 0.6
    assert ready == VmState(power="on", tools_running=True, ip="192.0.2.10")
    assert driver.state(handle) == ready


def test_wait_for_returns_at_once_when_the_state_is_there(sim: Vcsim, tmp_path: Path) -> None:
    # With 10 s wait slices, anything but the initial property dump would take 10 s.
    with connect(sim, tmp_path, wait_slice=10) as driver:
        handle = driver.create(request())
        started = time.monotonic()
        assert driver.wait_for(handle, lambda s: s.power == "off", timeout=30).power == "off"
        assert time.monotonic() - started < 5


def test_wait_for_times_out(driver: PyVmomiDriver) -> None:
    handle = driver.create(request())
    started = time.monotonic()
    with pytest.raises(DriverTimeout, match="timed out after 1.5 s"):
        driver.wait_for(handle, lambda s: s.ip is not None, timeout=1.5)
    assert 1.5 <= time.monotonic() - started < 8


def test_wait_for_stops_when_asked(driver: PyVmomiDriver) -> None:
    handle = driver.create(request())
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    started = time.monotonic()
    with pytest.raises(DriverError, match="stopped") as caught:
        driver.wait_for(handle, lambda s: s.ip is not None, timeout=60, stop=stop)
    timer.join()
    assert not isinstance(caught.value, DriverTimeout)
    assert time.monotonic() - started < 8


# -- connecting: credentials and certificates ----------------------------------------------


def test_bad_credentials_carry_the_fault_message(sim: Vcsim, tmp_path: Path) -> None:
    with pytest.raises(DriverError) as caught:
        connect(sim, tmp_path, password="wrong")
    assert caught.value.fault == "InvalidLogin"
    assert caught.value.fault_message == "Login failure"
    assert "Login failure" in str(caught.value)
    assert f"{sim.host}:{sim.port}" in str(caught.value)


def test_certificate_is_pinned_on_first_use_and_reused(sim: Vcsim, tmp_path: Path) -> None:
    pin = pin_path(tmp_path, sim.host, sim.port)
    assert not pin.exists()
    connect(sim, tmp_path).close()
    assert fingerprint(pin.read_text()) == fingerprint(sim.cert_pem)
    assert pin.stat().st_mode & 0o077 == 0
    stamp = pin.stat().st_mtime_ns
    with connect(sim, tmp_path) as driver:
        assert driver.is_vcenter == (sim.model == "vcenter")
    assert pin.stat().st_mtime_ns == stamp


def test_a_changed_certificate_is_refused(sim: Vcsim, start_vcsim: Any, tmp_path: Path) -> None:
    connect(sim, tmp_path).close()
    pinned = pin_path(tmp_path, sim.host, sim.port).read_text()
    sim.stop()
    # The same address now answers with another certificate.
    impostor = start_vcsim(sim.model, listen=f"{sim.host}:{sim.port}")
    assert fingerprint(impostor.cert_pem) != fingerprint(pinned)
    with pytest.raises(DriverError, match="changed since it was pinned") as caught:
        connect(impostor, tmp_path)
    message = str(caught.value)
    assert fingerprint(pinned) in message and fingerprint(impostor.cert_pem) in message
    assert pin_path(tmp_path, sim.host, sim.port).read_text() == pinned


def test_ca_file_verification(sim: Vcsim, start_vcsim: Any, tmp_path: Path) -> None:
    own = tmp_path / "own.pem"
    own.write_text(sim.cert_pem)
    connect(sim, ca_file=own).close()

    other = tmp_path / "other.pem"
    other.write_text(start_vcsim(sim.model).cert_pem)
    with pytest.raises(DriverError, match="TLS verification of .* failed"):
        connect(sim, ca_file=other)


def test_verification_is_on_by_default(sim: Vcsim) -> None:
    with pytest.raises(DriverError, match="TLS verification of .* failed.*pin the host"):
        connect(sim)


def test_insecure_only_when_asked_and_with_a_warning(
    sim: Vcsim, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="photonkick.server.vsphere"):
        connect(sim, insecure=True).close()
    assert "verification is OFF" in caplog.text
    with pytest.raises(DriverError, match="cannot be combined"):
        connect(sim, Path("pins"), insecure=True)


# -- placement -----------------------------------------------------------------------------


def test_vcenter_placement_in_a_folder_and_pool(start_vcsim: Any, tmp_path: Path) -> None:
    sim = start_vcsim("vcenter")
    inspector = Inspector(sim)
    dc = inspector.datacenter()
    folder = dc.vmFolder.CreateFolder("photon").CreateFolder("lab")
    cluster = next(e for e in dc.hostFolder.childEntity if e.name == "DC0_C0")
    allocation = {"reservation": 0, "limit": -1, "expandableReservation": True}
    shares = vim.SharesInfo(level="normal")
    spec = vim.ResourceConfigSpec(
        cpuAllocation=vim.ResourceAllocationInfo(shares=shares, **allocation),
        memoryAllocation=vim.ResourceAllocationInfo(shares=shares, **allocation),
    )
    pool = cluster.resourcePool.CreateResourcePool("builds", spec)
    placement = placement_for(sim, folder="photon/lab", resource_pool="builds", network="DC0_DVPG0")
    with connect(sim, tmp_path, placement=placement) as driver:
        driver.create(request())
    vm = inspector.vm("photon-1")
    assert vm.parent == folder
    assert vm.resourcePool == pool
    [nic] = devices(vm, vim.vm.device.VirtualEthernetCard)
    portgroup = next(n for n in dc.network if n.name == "DC0_DVPG0")
    assert isinstance(
        nic.backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo
    )
    assert nic.backing.port.portgroupKey == portgroup.key
    Disconnect(inspector.si)

    with connect(sim, tmp_path, placement=Placement()) as driver:
        with pytest.raises(
            DriverError, match=r"offers 2 of kind cluster or host \(DC0_C0, DC0_H0\)"
        ):
            driver.create(request("other"))
    with connect(sim, tmp_path, placement=Placement(cluster="DC0_H0")) as driver:
        driver.create(request("on-a-standalone-host"))  # a host outside any cluster
    with connect(sim, tmp_path, placement=placement_for(sim, folder="nope")) as driver:
        with pytest.raises(DriverError, match="folder vm has no folder 'nope'"):
            driver.create(request("lost"))


def test_esx_placement_needs_no_settings(start_vcsim: Any, tmp_path: Path) -> None:
    sim = start_vcsim("esx")
    with connect(sim, tmp_path, placement=Placement()) as driver:
        assert not driver.is_vcenter
        driver.create(request())
    inspector = Inspector(sim)
    vm = inspector.vm("photon-1")
    assert vm.parent == inspector.datacenter().vmFolder
    [nic] = devices(vm, vim.vm.device.VirtualEthernetCard)
    assert nic.backing.deviceName == "VM Network"
    Disconnect(inspector.si)
