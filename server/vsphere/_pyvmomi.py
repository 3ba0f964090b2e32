"""PyVmomiDriver: ``VmDriver`` for a standalone ESXi host or a vCenter, over pyVmomi.

The only module that imports pyVmomi. pyVmomi's generated stubs leave its constructors
untyped and every property Optional, so the API is handled as dynamic (``Any``) here and
values are checked where they are read; nothing ``Any`` leaves this module.
"""

from __future__ import annotations

import http.client
import logging
import math
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, Any, get_args
from urllib.parse import quote, urlencode

import pyVmomi
from pyVim import connect as pyvim_connect

from photonkick.server.vsphere import (
    GUESTINFO_PREFIX,
    BootDevice,
    DriverError,
    DriverTimeout,
    Placement,
    PowerState,
    Stop,
    VmDriver,
    VmHandle,
    VmRequest,
    VmState,
    is_datastore_path,
)
from photonkick.server.vsphere._certs import Trust, handshake_eof

vim: Any = pyVmomi.vim
vmodl: Any = pyVmomi.vmodl
_smart_stub_adapter: Any = pyvim_connect.SmartStubAdapter

log = logging.getLogger("photonkick.server.vsphere")

HARDWARE_VERSION = "vmx-19"
BOOT_RETRY_DELAY_MS = 10_000
_STATE_PATHS = (
    "runtime.powerState",
    "runtime.question",
    "guest.toolsRunningStatus",
    "guest.ipAddress",
)
_POWER: dict[str, PowerState] = {"poweredOn": "on", "poweredOff": "off", "suspended": "suspended"}
_DEFAULT_NETWORK = "VM Network"


def _fault_error(what: str, fault: Any) -> DriverError:
    """A DriverError that carries the fault's type name and its own message."""
    name = str(getattr(fault, "_wsdlName", type(fault).__name__))
    text = str(getattr(fault, "msg", "") or "")
    if not text:
        for message in getattr(fault, "faultMessage", None) or ():
            text = str(getattr(message, "message", "") or "")
            if text:
                break
    text = text or name
    detail = name
    if prop := getattr(fault, "invalidProperty", None):
        detail += f" on {prop}"
    return DriverError(f"{what}: {text} ({detail})", fault=name, fault_message=text)


@contextmanager
def _calls(what: str) -> Iterator[None]:
    """Turn faults and transport errors raised inside the block into DriverError."""
    try:
        yield
    except vmodl.MethodFault as fault:
        raise _fault_error(what, fault) from fault
    except (OSError, http.client.HTTPException) as exc:
        raise DriverError(f"{what}: {exc}") from exc


def _vm_state(values: Mapping[str, Any]) -> VmState:
    question = values.get("runtime.question")
    ip = values.get("guest.ipAddress")
    return VmState(
        power=_POWER.get(str(values.get("runtime.powerState")), "off"),
        tools_running=str(values.get("guest.toolsRunningStatus")) == "guestToolsRunning",
        ip=str(ip) if ip else None,
        question=str(question.text) if question is not None else None,
    )


_SPEC_KEYS = {
    "datacenter": "vsphere.datacenter",
    "cluster or host": "vsphere.cluster",
    "resource pool": "vsphere.resource_pool",
    "folder": "vsphere.folder",
    "datastore": "vsphere.datastore (or the host's vm.datastore)",
    "network": "vsphere.network (or the host's vm.network)",
}
"""The spec key that chooses each kind of placement object, named in errors."""


def _one(kind: str, where: str, wanted: str | None, found: Sequence[tuple[Any, str]]) -> Any:
    """The one object called ``wanted`` (or the only one there is when ``wanted`` is None)."""
    names = ", ".join(sorted(name for _, name in found)) or "none"
    key = _SPEC_KEYS[kind]
    if wanted is None:
        if len(found) == 1:
            return found[0][0]
        raise DriverError(
            f"{key}: {where} offers {len(found)} of kind {kind} ({names}): choose one"
        )
    matches = [obj for obj, name in found if name == wanted]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DriverError(f"{key}: {where} has no {kind} {wanted!r} (there are: {names})")
    raise DriverError(f"{key}: {where} has {len(matches)} of kind {kind} called {wanted!r}")


class PyVmomiDriver:
    """A logged-in vSphere session that creates and drives photonkick's VMs.

    Build it with ``connect()``. It is safe to use from several threads; each wait uses its
    own property collector.
    """

    def __init__(
        self,
        stub: Any,
        content: Any,
        trust: Trust,
        placement: Placement,
        *,
        timeout: float,
        wait_slice: int = 1,
        task_timeout: float = 1800.0,
    ) -> None:
        self._stub = stub
        self._content = content
        self._trust = trust
        self._placement = placement
        self._timeout = timeout
        if wait_slice < 1:
            raise DriverError("wait_slice must be at least 1 second")
        self._slice = wait_slice
        self._task_timeout = task_timeout
        self._datacenter_obj: Any = None

    @classmethod
    def connect(
        cls,
        host: str,
        user: str,
        password: str,
        *,
        port: int = 443,
        placement: Placement | None = None,
        ca_file: Path | None = None,
        pin_dir: Path | None = None,
        insecure: bool = False,
        timeout: float = 60.0,
        wait_slice: int = 1,
        task_timeout: float = 1800.0,
    ) -> PyVmomiDriver:
        """Log in to an ESXi host or a vCenter over https.

        The server's certificate is verified against ``ca_file`` if given; else against the
        certificate pinned in ``pin_dir`` (fetched and stored on first use, and a changed
        certificate is refused); else against the system's CA store. ``insecure=True``
        skips verification, with a warning in the log.

        ``timeout`` bounds each network operation; waits block in server-side slices of
        ``wait_slice`` seconds (how quickly a stop flag is noticed), and a vSphere task may
        run for ``task_timeout`` seconds.
        """
        trust = Trust(
            host, port, ca_file=ca_file, pin_dir=pin_dir, insecure=insecure, timeout=timeout
        )
        where = f"{host}:{port}"
        try:
            stub = _smart_stub_adapter(
                host=host, port=port, sslContext=trust.context(), httpConnectionTimeout=timeout
            )
            content = vim.ServiceInstance("ServiceInstance", stub).RetrieveContent()
            content.sessionManager.Login(user, password, None)
        except ssl.SSLError as exc:
            raise trust.explain(exc) from exc
        except ConnectionResetError as exc:
            raise handshake_eof(where) from exc
        except vmodl.MethodFault as fault:
            raise _fault_error(f"logging in to {where} as {user!r} failed", fault) from fault
        except DriverError:
            raise
        except Exception as exc:  # pyVim reports an unusable server with a bare Exception
            raise DriverError(f"cannot connect to {where}: {exc}") from exc
        log.info("logged in to %s (%s) as %s", where, content.about.fullName, user)
        return cls(
            stub,
            content,
            trust,
            placement or Placement(),
            timeout=timeout,
            wait_slice=wait_slice,
            task_timeout=task_timeout,
        )

    def __enter__(self) -> PyVmomiDriver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def is_vcenter(self) -> bool:
        """True for a vCenter, False for a standalone ESXi host."""
        return str(self._content.about.apiType) == "VirtualCenter"

    def close(self) -> None:
        """Log out and drop the connections."""
        try:
            self._content.sessionManager.Logout()
        except (vmodl.MethodFault, OSError, http.client.HTTPException):
            pass
        finally:
            self._stub.DropConnections()

    # -- inventory -------------------------------------------------------------------------

    def find(self, name: str) -> VmHandle | None:
        """The VM called ``name`` anywhere in the datacenter, or None.

        Two VMs with that name (possible in different vCenter folders) are an error rather
        than a guess.
        """
        with _calls(f"looking up VM {name!r}"):
            found = self._named(self._datacenter().vmFolder, vim.VirtualMachine)
        matches = [vm for vm, vm_name in found if vm_name == name]
        if not matches:
            return None
        if len(matches) > 1:
            refs = ", ".join(sorted(str(vm._moId) for vm in matches))
            raise DriverError(
                f"{len(matches)} VMs are called {name!r} ({refs}): remove all but one"
            )
        return VmHandle(name, str(matches[0]._moId))

    def _vm(self, vm: VmHandle) -> Any:
        return vim.VirtualMachine(vm.ref, self._stub)

    def _named(self, root: Any, kind: Any) -> list[tuple[Any, str]]:
        """Every object of ``kind`` below ``root`` with its name, in one round trip."""
        pc = vmodl.query.PropertyCollector
        view = self._content.viewManager.CreateContainerView(root, [kind], True)
        try:
            spec = pc.FilterSpec(
                objectSet=[
                    pc.ObjectSpec(
                        obj=view,
                        skip=True,
                        selectSet=[
                            pc.TraversalSpec(
                                name="view", path="view", skip=False, type=vim.view.ContainerView
                            )
                        ],
                    )
                ],
                propSet=[pc.PropertySpec(type=kind, pathSet=["name"], all=False)],
            )
            return [(obj, str(values.get("name", ""))) for obj, values in self._retrieve(spec)]
        finally:
            view.Destroy()

    def _retrieve(self, spec: Any) -> list[tuple[Any, dict[str, Any]]]:
        collector = self._content.propertyCollector
        result = collector.RetrievePropertiesEx(
            [spec], vmodl.query.PropertyCollector.RetrieveOptions()
        )
        found: list[tuple[Any, dict[str, Any]]] = []
        while result is not None:
            for content in result.objects:
                found.append((content.obj, {p.name: p.val for p in content.propSet or ()}))
            if not result.token:
                break
            result = collector.ContinueRetrievePropertiesEx(result.token)
        return found

    def _properties(self, obj: Any, paths: Sequence[str]) -> dict[str, Any]:
        pc = vmodl.query.PropertyCollector
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=obj, skip=False)],
            propSet=[pc.PropertySpec(type=type(obj), pathSet=list(paths), all=False)],
        )
        found = self._retrieve(spec)
        return found[0][1] if found else {}

    def _path(self, entity: Any) -> str:
        """The inventory path of an entity below the root folder (``F0/DC0``)."""
        names: list[str] = []
        root = self._content.rootFolder
        while entity is not None and entity != root:
            names.append(str(entity.name))
            entity = entity.parent
        return "/".join(reversed(names))

    def _datacenter(self) -> Any:
        if self._datacenter_obj is None:
            found = self._named(self._content.rootFolder, vim.Datacenter)
            wanted = self._placement.datacenter
            if wanted is not None and "/" in wanted.strip("/"):
                found = [(dc, self._path(dc)) for dc, _ in found]
                wanted = wanted.strip("/")
            self._datacenter_obj = _one("datacenter", "the inventory", wanted, found)
        return self._datacenter_obj

    def _compute_resource(self) -> Any:
        dc = self._datacenter()
        found = self._named(dc.hostFolder, vim.ComputeResource)
        where = f"datacenter {dc.name}"
        return _one("cluster or host", where, self._placement.cluster, found)

    def _resource_pool(self, compute: Any) -> Any:
        pool = compute.resourcePool
        for part in (self._placement.resource_pool or "").strip("/").split("/"):
            if part:
                children = [(child, str(child.name)) for child in pool.resourcePool or ()]
                pool = _one("resource pool", f"resource pool {pool.name}", part, children)
        return pool

    def _folder(self) -> Any:
        folder = self._datacenter().vmFolder
        for part in (self._placement.folder or "").strip("/").split("/"):
            if part:
                children = [
                    (child, str(child.name))
                    for child in folder.childEntity or ()
                    if isinstance(child, vim.Folder)
                ]
                folder = _one("folder", f"folder {folder.name}", part, children)
        return folder

    def _datastore(self, compute: Any, wanted: str | None) -> Any:
        # A compute resource's datastores are the ones its hosts can reach (a standalone ESXi
        # datacenter can list stale datastore references).
        found = [(ds, str(ds.name)) for ds in compute.datastore or ()]
        return _one("datastore", f"compute resource {compute.name}", wanted, found)

    def _network(self, compute: Any, wanted: str | None) -> Any:
        found = [(net, str(net.name)) for net in compute.network or ()]
        if wanted is None and any(name == _DEFAULT_NETWORK for _, name in found):
            wanted = _DEFAULT_NETWORK
        return _one("network", f"compute resource {compute.name}", wanted, found)

    # -- create and destroy ----------------------------------------------------------------

    def create(self, request: VmRequest, *, stop: Stop | None = None) -> VmHandle:
        """Create the VM described by ``request``, powered off, with its install boot order.

        An existing VM with the same name is refused. If any step fails, a VM that was
        already made is destroyed again before the error is raised.
        """
        what = f"creating VM {request.name!r}"
        if self.find(request.name) is not None:
            raise DriverError(f"{what}: a VM with that name already exists", fault="DuplicateName")
        with _calls(what):
            compute = self._compute_resource()
            pool = self._resource_pool(compute)
            folder = self._folder()
            datastore = self._datastore(compute, request.datastore or self._placement.datastore)
            network = self._network(compute, request.network or self._placement.network)
            spec = self._config_spec(request, datastore, network)
            task = folder.CreateVM_Task(config=spec, pool=pool)
        try:
            vm = self._wait_task(task, what, stop)
        except DriverError:
            if stop is not None and stop():
                raise  # the task runs on: what it makes is the caller's to find later
            # A server may register the VM before failing: remove what carries the name.
            leftover = self.find(request.name)
            if leftover is not None:
                self._discard(leftover)
            raise
        handle = VmHandle(request.name, str(vm._moId))
        try:
            self.set_boot_order(handle, request.boot_order, stop=stop)
        except BaseException:
            self._discard(handle)
            raise
        log.info("created VM %s (%s) with MAC %s", request.name, handle.ref, request.mac)
        return handle

    def _discard(self, vm: VmHandle) -> None:
        try:
            self.destroy(vm)
        except DriverError as exc:
            log.error("could not remove the half-made VM %s (%s): %s", vm.name, vm.ref, exc)

    def _config_spec(self, request: VmRequest, datastore: Any, network: Any) -> Any:
        dev = vim.vm.device
        scsi = dev.ParaVirtualSCSIController(
            key=-101, busNumber=0, sharedBus=dev.VirtualSCSIController.Sharing.noSharing
        )
        disk = dev.VirtualDisk(
            key=-102,
            controllerKey=scsi.key,
            unitNumber=0,
            capacityInKB=request.disk_gb * 1024 * 1024,
            capacityInBytes=request.disk_gb * 1024**3,
            backing=dev.VirtualDisk.FlatVer2BackingInfo(
                fileName="", diskMode="persistent", thinProvisioned=True, datastore=datastore
            ),
        )
        sata = dev.VirtualAHCIController(key=-103, busNumber=0)
        cdrom = dev.VirtualCdrom(
            key=-104,
            controllerKey=sata.key,
            unitNumber=0,
            backing=_cdrom_backing(request.iso),
            connectable=_connect_info(request.iso is not None, powered_on=False),
        )
        nic = dev.VirtualVmxnet3(
            key=-105,
            addressType="manual",
            macAddress=request.mac,
            wakeOnLanEnabled=True,
            backing=self._nic_backing(network),
            connectable=_connect_info(True, powered_on=False),
        )
        add = dev.VirtualDeviceSpec.Operation.add
        changes = [dev.VirtualDeviceSpec(operation=add, device=d) for d in (scsi, sata, cdrom, nic)]
        changes.insert(1, dev.VirtualDeviceSpec(operation=add, fileOperation="create", device=disk))
        boot = vim.vm.BootOptions(
            bootRetryEnabled=True,
            bootRetryDelay=BOOT_RETRY_DELAY_MS,
            networkBootProtocol="ipv4",
        )
        if request.firmware == "efi":
            boot.efiSecureBootEnabled = False
        return vim.vm.ConfigSpec(
            name=request.name,
            guestId=request.guest_id,
            version=HARDWARE_VERSION,
            firmware=request.firmware,
            numCPUs=request.cpus,
            numCoresPerSocket=1,
            memoryMB=request.memory_mb,
            files=vim.vm.FileInfo(vmPathName=f"[{datastore.name}]"),
            bootOptions=boot,
            extraConfig=[
                vim.option.OptionValue(key=key, value=value)
                for key, value in request.extra_config.items()
            ],
            deviceChange=changes,
        )

    def _nic_backing(self, network: Any) -> Any:
        card = vim.vm.device.VirtualEthernetCard
        if isinstance(network, vim.dvs.DistributedVirtualPortgroup):
            return card.DistributedVirtualPortBackingInfo(
                port=vim.dvs.PortConnection(
                    portgroupKey=network.key,
                    switchUuid=network.config.distributedVirtualSwitch.uuid,
                )
            )
        if isinstance(network, vim.OpaqueNetwork):
            raise DriverError(f"network {network.name!r} is an opaque (NSX) network: not supported")
        return card.NetworkBackingInfo(deviceName=network.name, network=network)

    def destroy(self, vm: VmHandle, *, stop: Stop | None = None) -> None:
        """Power the VM off if it is on, then delete it and its files. A VM that is already
        gone counts as destroyed."""
        what = f"destroying VM {vm.name!r}"
        try:
            self.power_off(vm, stop=stop)
            with _calls(what):
                task = self._vm(vm).Destroy_Task()
            self._wait_task(task, what, stop)
        except DriverError as exc:
            if exc.fault != "ManagedObjectNotFound":
                raise
            log.info("VM %s (%s) was already gone", vm.name, vm.ref)
        else:
            log.info("destroyed VM %s (%s)", vm.name, vm.ref)

    # -- power and boot --------------------------------------------------------------------

    def power_on(self, vm: VmHandle, *, stop: Stop | None = None) -> None:
        """Power the VM on; a VM that is already on stays on."""
        self._power(vm, "on", stop)

    def power_off(self, vm: VmHandle, *, stop: Stop | None = None) -> None:
        """Power the VM off (hard); a VM that is already off stays off."""
        self._power(vm, "off", stop)

    def _power(self, vm: VmHandle, want: PowerState, stop: Stop | None) -> None:
        what = f"powering {want} VM {vm.name!r}"
        try:
            with _calls(what):
                obj = self._vm(vm)
                task = obj.PowerOnVM_Task() if want == "on" else obj.PowerOffVM_Task()
            self._wait_task(task, what, stop)
        except DriverError as exc:
            # InvalidPowerState: the VM is already in the wanted state (or a state that
            # cannot change, which the check below reports).
            if exc.fault != "InvalidPowerState" or self.state(vm).power != want:
                raise

    def set_boot_order(
        self, vm: VmHandle, devices: Sequence[BootDevice], *, stop: Stop | None = None
    ) -> None:
        """Replace the boot order with the VM's own device keys.

        The whole BootOptions object is sent back so retry and firmware flags survive on
        servers that replace rather than merge it.
        """
        what = f"setting the boot order of {vm.name!r} to {','.join(devices)}"
        if not devices or any(d not in get_args(BootDevice) for d in devices):
            raise DriverError(f"{what}: devices must be ethernet, cdrom or disk")
        options = vim.vm.BootOptions
        with _calls(what):
            obj = self._vm(vm)
            config = self._properties(obj, ("config.hardware.device", "config.bootOptions"))
            hardware = config.get("config.hardware.device") or ()
            order = []
            for device in devices:
                if device == "cdrom":
                    _device(hardware, vim.vm.device.VirtualCdrom, what)
                    order.append(options.BootableCdromDevice())
                elif device == "ethernet":
                    nic = _device(hardware, vim.vm.device.VirtualEthernetCard, what)
                    order.append(options.BootableEthernetDevice(deviceKey=nic.key))
                else:
                    disk = _device(hardware, vim.vm.device.VirtualDisk, what)
                    order.append(options.BootableDiskDevice(deviceKey=disk.key))
            boot = config.get("config.bootOptions") or options()
            boot.bootOrder = order
            task = obj.ReconfigVM_Task(spec=vim.vm.ConfigSpec(bootOptions=boot))
        self._wait_task(task, what, stop)

    # -- ISO and guestinfo -----------------------------------------------------------------

    def upload(self, local: Path, remote_path: str, *, datastore: str | None = None) -> str:
        """PUT a local file on a datastore through the server's ``/folder`` interface,
        authenticated by this session; returns ``[datastore] remote_path``."""
        try:
            size = local.stat().st_size
            with local.open("rb") as body:
                target = self._put(body, size, remote_path, datastore, f"uploading {local}")
        except OSError as exc:
            raise DriverError(f"uploading {local}: {exc}") from exc
        log.info("uploaded %s (%d bytes) to %s", local, size, target)
        return target

    def datastore_path(self, remote_path: str, *, datastore: str | None = None) -> str:
        """``[datastore] remote_path`` on the named datastore, or the only one there is."""
        return self._folder_url(remote_path, datastore, f"locating {remote_path}")[0]

    def write_file(self, data: bytes, remote_path: str, *, datastore: str | None = None) -> str:
        """PUT a small file on a datastore; returns ``[datastore] remote_path``."""
        return self._put(data, len(data), remote_path, datastore, f"writing {remote_path}")

    def read_file(
        self, remote_path: str, *, datastore: str | None = None, limit: int = 65536
    ) -> bytes | None:
        """GET the first ``limit`` bytes of a datastore file; None when it does not exist."""
        what = f"reading {remote_path}"
        target, url = self._folder_url(remote_path, datastore, what)
        what = f"{what} ({target})"
        status, reason, body = self._folder_request("GET", url, None, 0, what, limit)
        if status == 404:
            return None
        if status != 200:
            raise DriverError(f"{what}: HTTP {status} {reason}")
        return body

    def list_files(
        self, folder: str, pattern: str, *, datastore: str | None = None
    ) -> dict[str, int]:
        """Files in a datastore folder matching ``pattern``, with their sizes, through the
        datastore browser; an absent folder has none."""
        what = f"listing {folder}/{pattern}"
        with _calls(what):
            ds = self._datastore(self._compute_resource(), datastore or self._placement.datastore)
            spec = vim.host.DatastoreBrowser.SearchSpec(
                matchPattern=[pattern],
                details=vim.host.DatastoreBrowser.FileInfo.Details(fileSize=True),
            )
            task = ds.browser.SearchDatastore_Task(
                datastorePath=f"[{ds.name}] {folder}", searchSpec=spec
            )
        try:
            result = self._wait_task(task, what, None)
        except DriverError as exc:
            if exc.fault == "FileNotFound":
                return {}
            raise
        return {str(f.path): int(f.fileSize or 0) for f in getattr(result, "file", None) or ()}

    def delete_file(
        self, remote_path: str, *, datastore: str | None = None, stop: Stop | None = None
    ) -> None:
        """Delete a datastore file; one that is already gone counts as deleted."""
        what = f"deleting {remote_path}"
        with _calls(what):
            dc = self._datacenter()
            ds = self._datastore(self._compute_resource(), datastore or self._placement.datastore)
            target = f"[{ds.name}] {remote_path}"
            task = self._content.fileManager.DeleteDatastoreFile_Task(name=target, datacenter=dc)
        try:
            self._wait_task(task, f"deleting {target}", stop)
        except DriverError as exc:
            if exc.fault != "FileNotFound":
                raise
        else:
            log.info("deleted %s", target)

    def _folder_url(self, remote_path: str, datastore: str | None, what: str) -> tuple[str, str]:
        """The datastore path and the ``/folder`` URL of a file."""
        parts = PurePosixPath(remote_path).parts
        if not parts or parts[0] == "/" or ".." in parts:
            raise DriverError(f"{what}: {remote_path!r} must be a relative datastore path")
        with _calls(what):
            dc = self._datacenter()
            ds = self._datastore(self._compute_resource(), datastore or self._placement.datastore)
            query = urlencode({"dcPath": self._path(dc), "dsName": ds.name})
        return f"[{ds.name}] {remote_path}", f"/folder/{quote(remote_path)}?{query}"

    def _put(self, body: Any, size: int, remote_path: str, datastore: str | None, what: str) -> str:
        target, url = self._folder_url(remote_path, datastore, what)
        what = f"{what} to {target}"
        status, reason, detail = self._folder_request("PUT", url, body, size, what, 512)
        if status not in (200, 201, 204):
            text = detail.decode("utf-8", "replace").strip()
            raise DriverError(f"{what}: HTTP {status} {reason}" + (f": {text}" if text else ""))
        return target

    def _folder_request(
        self, method: str, url: str, body: Any, size: int, what: str, limit: int
    ) -> tuple[int, str, bytes]:
        """One request to the ``/folder`` interface in this session: status, reason and up
        to ``limit`` bytes of the answer."""
        with _calls(what):
            session = self._stub.GetSessionId()
        headers = {"Cookie": f'vmware_soap_session="{session}"'}
        if method == "PUT":
            headers |= {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        try:
            conn = http.client.HTTPSConnection(
                self._trust.host,
                self._trust.port,
                context=self._trust.context(),
                timeout=self._timeout,
            )
            try:
                conn.request(method, url, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, str(response.reason), response.read(limit)
            finally:
                conn.close()
        except ssl.SSLError as exc:
            raise self._trust.explain(exc) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise DriverError(f"{what}: {exc}") from exc

    def attach_iso(self, vm: VmHandle, iso: str, *, stop: Stop | None = None) -> None:
        """Insert the ISO at datastore path ``iso``; it stays inserted across power cycles."""
        if not is_datastore_path(iso):
            raise DriverError(f"{iso!r} is not a datastore path like [ds] iso/photon.iso")
        self._edit_cdrom(vm, iso, f"attaching {iso} to {vm.name!r}", stop)

    def detach_iso(self, vm: VmHandle, *, stop: Stop | None = None) -> None:
        """Empty the CD-ROM."""
        self._edit_cdrom(vm, None, f"emptying the CD-ROM of {vm.name!r}", stop)

    def _edit_cdrom(self, vm: VmHandle, iso: str | None, what: str, stop: Stop | None) -> None:
        with _calls(what):
            obj = self._vm(vm)
            values = self._properties(obj, ("config.hardware.device", "runtime.powerState"))
            cdrom = _device(
                values.get("config.hardware.device") or (), vim.vm.device.VirtualCdrom, what
            )
            cdrom.backing = _cdrom_backing(iso)
            powered_on = str(values.get("runtime.powerState")) == "poweredOn"
            cdrom.connectable = _connect_info(iso is not None, powered_on=powered_on)
            edit = vim.vm.device.VirtualDeviceSpec(operation="edit", device=cdrom)
            task = obj.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[edit]))
        self._wait_task(task, what, stop)

    def set_guestinfo(
        self, vm: VmHandle, values: Mapping[str, str], *, stop: Stop | None = None
    ) -> None:
        """Set ``guestinfo.*`` keys (readable in the guest with ``vmtoolsd --cmd info-get``)."""
        for key, value in values.items():
            if not key.startswith(GUESTINFO_PREFIX) or key == GUESTINFO_PREFIX:
                raise DriverError(f"{key!r} is not a guestinfo.* key")
            if not isinstance(value, str):
                raise DriverError(f"{key}: the value must be a string, not {value!r}")
        self._extra_config(vm, values, f"setting {', '.join(values)} on {vm.name!r}", stop)

    def clear_guestinfo(
        self, vm: VmHandle, keys: Iterable[str], *, stop: Stop | None = None
    ) -> None:
        """Remove ``guestinfo.*`` keys by setting them to the empty string."""
        self.set_guestinfo(vm, dict.fromkeys(keys, ""), stop=stop)

    def guestinfo(self, vm: VmHandle) -> dict[str, str]:
        """The VM's ``guestinfo.*`` keys with a non-empty value."""
        with _calls(f"reading the guestinfo of {vm.name!r}"):
            options = self._properties(self._vm(vm), ("config.extraConfig",))
        found: dict[str, str] = {}
        for option in options.get("config.extraConfig") or ():
            if str(option.key).startswith(GUESTINFO_PREFIX):
                found[str(option.key)] = str(option.value)  # a later entry wins
        return {key: value for key, value in found.items() if value}

    def _extra_config(
        self, vm: VmHandle, values: Mapping[str, str], what: str, stop: Stop | None
    ) -> None:
        if not values:
            return
        with _calls(what):
            spec = vim.vm.ConfigSpec(
                extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in values.items()]
            )
            task = self._vm(vm).ReconfigVM_Task(spec=spec)
        self._wait_task(task, what, stop)

    # -- state and waiting -----------------------------------------------------------------

    def state(self, vm: VmHandle) -> VmState:
        """Power state, Tools running status, IP address and pending question, read now."""
        with _calls(f"reading the state of {vm.name!r}"):
            return _vm_state(self._properties(self._vm(vm), _STATE_PATHS))

    def wait_for(
        self,
        vm: VmHandle,
        condition: Callable[[VmState], bool],
        *,
        timeout: float,
        stop: threading.Event | None = None,
    ) -> VmState:
        """Block until ``condition(state)`` holds, driven by the server's change updates.

        Raises DriverTimeout after ``timeout`` seconds, and DriverError when ``stop`` is
        set or the VM asks a question that ``condition`` does not accept.
        """

        def done(values: Mapping[str, Any]) -> bool:
            state = _vm_state(values)
            if condition(state):
                return True
            if state.question is not None:
                raise DriverError(f"VM {vm.name!r} waits for an answer to: {state.question}")
            return False

        values = self._watch(
            self._vm(vm),
            _STATE_PATHS,
            done,
            timeout=timeout,
            stop=stop.is_set if stop is not None else None,
            what=f"{vm.name!r}",
        )
        return _vm_state(values)

    def _wait_task(self, task: Any, what: str, stop: Stop | None) -> Any:
        """Wait for a task to finish; its result, or DriverError carrying its fault.

        ``stop`` is asked between waits of at most ``wait_slice`` seconds.
        """
        # Only these paths are read: a whole TaskInfo can carry an entity reference pyVmomi
        # refuses to parse (the simulator's FileManager tasks).
        values = self._watch(
            task,
            ("info.state", "info.error", "info.result"),
            lambda v: str(v.get("info.state")) in ("success", "error"),
            timeout=self._task_timeout,
            stop=stop,
            what=what,
        )
        if str(values.get("info.state")) == "error":
            raise _fault_error(what, values.get("info.error"))
        return values.get("info.result")

    def _watch(
        self,
        obj: Any,
        paths: Sequence[str],
        done: Callable[[Mapping[str, Any]], bool],
        *,
        timeout: float,
        stop: Stop | None,
        what: str,
    ) -> dict[str, Any]:
        """Follow ``paths`` of ``obj`` with WaitForUpdatesEx on a private property collector
        until ``done(values)``; slices of at most ``wait_slice`` seconds let the deadline and
        the stop flag be checked without polling the properties."""
        pc = vmodl.query.PropertyCollector
        deadline = time.monotonic() + timeout
        with _calls(f"waiting for {what}"):
            collector = self._content.propertyCollector.CreatePropertyCollector()
            try:
                collector.CreateFilter(
                    pc.FilterSpec(
                        objectSet=[pc.ObjectSpec(obj=obj, skip=False)],
                        propSet=[pc.PropertySpec(type=type(obj), pathSet=list(paths), all=False)],
                    ),
                    partialUpdates=False,
                )
                values: dict[str, Any] = {}
                version = ""
                while True:
                    if stop is not None and stop():
                        raise DriverError(f"waiting for {what}: stopped")
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise DriverTimeout(f"waiting for {what}: timed out after {timeout:g} s")
                    seconds = max(1, min(self._slice, math.ceil(remaining)))
                    update = collector.WaitForUpdatesEx(
                        version, pc.WaitOptions(maxWaitSeconds=seconds)
                    )
                    if update is None:
                        continue
                    version = update.version
                    for filter_update in update.filterSet or ():
                        for object_update in filter_update.objectSet or ():
                            for change in object_update.changeSet or ():
                                if str(change.op) in ("remove", "indirectRemove"):
                                    values.pop(str(change.name), None)
                                else:
                                    values[str(change.name)] = change.val
                    if not update.truncated and done(values):
                        return values
            finally:
                try:
                    collector.DestroyPropertyCollector()
                except (vmodl.MethodFault, OSError, http.client.HTTPException) as exc:
                    log.debug("could not destroy a property collector: %s", exc)


def _device(devices: Iterable[Any], kind: Any, what: str) -> Any:
    for device in devices:
        if isinstance(device, kind):
            return device
    raise DriverError(f"{what}: the VM has no {kind.__name__.rsplit('.', 1)[-1]}")


def _cdrom_backing(iso: str | None) -> Any:
    cdrom = vim.vm.device.VirtualCdrom
    if iso is None:
        return cdrom.RemotePassthroughBackingInfo(
            deviceName="", exclusive=False, useAutoDetect=False
        )
    return cdrom.IsoBackingInfo(fileName=iso)


def _connect_info(connect: bool, *, powered_on: bool) -> Any:
    return vim.vm.device.VirtualDevice.ConnectInfo(
        startConnected=connect, connected=connect and powered_on, allowGuestControl=True
    )


if TYPE_CHECKING:
    _implements_the_protocol: type[VmDriver] = PyVmomiDriver
