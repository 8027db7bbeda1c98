"""The one PVC configuration file (DESIGN D12): YAML, validated on load into typed settings.

Every daemon and the CLI's `local` connection read the same file. A missing or bad key stops
the program with one message naming the key and the file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pvc.core.errors import ConfigError

DEFAULT_CONFIG_FILE = "/etc/pvc/pvc.conf"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterSettings(_Section):
    name: str
    coordinator_nodes: list[str] = Field(min_length=1)
    all_nodes: list[str] = Field(default_factory=list)
    # The cluster key (pvc.core.secrets): a Fernet key sealing the secrets PVC keeps in ZooKeeper
    # (fence credentials). The same root-only (0600) file on every node; only node
    # configurations hold it. Needed by nodes with a secret to seal or a sealed fence to run.
    key_file: str = "/etc/pvc/cluster.key"

    @field_validator("coordinator_nodes", "all_nodes")
    @classmethod
    def _names(cls, nodes: list[str]) -> list[str]:
        for node in nodes:
            if not NAME_RE.match(node):
                raise ValueError(f"'{node}' is not a valid node name")
        return nodes


ZK_PASSWORD_MIN_LENGTH = 16


class ZooKeeperAuth(_Section):
    """Digest credentials, the same on every node: each znode PVC creates gets an ACL that only
    they open, and pvcnoded/pvcapid protect older world-open znodes at start (pvc.core.schema)."""
    scheme: Literal["digest"] = "digest"
    username: str = Field(min_length=1, pattern=r"^[^:\s]+$")   # digest ids are user:hash
    password: str = Field(min_length=ZK_PASSWORD_MIN_LENGTH)


class ZooKeeperSettings(_Section):
    hosts: list[str] = Field(min_length=1, description="host:port of every ensemble member")
    root: str = "/pvc"
    # The self-fence bound and the start of dead-node detection (docs/architecture.md, "Failover
    # timing"): ZooKeeper's minSessionTimeout (2 ticks) must allow it, e.g. tickTime <= 2000 ms.
    session_timeout: float = Field(default=4.0, gt=0.5, le=60)
    auth: ZooKeeperAuth | None = None
    # Digest ACLs on every znode (DESIGN D14). On unless turned off here by name; off, anyone who
    # reaches ZooKeeper's port can read and rewrite the whole cluster.
    acl: bool = True
    # ZooKeeper's Prometheus metrics provider port, proxied at /api/v1/metrics/zookeeper.
    metrics_port: int = Field(default=9141, gt=0, lt=65536)

    @model_validator(mode="after")
    def _acl(self) -> ZooKeeperSettings:
        if self.acl and self.auth is None:
            raise ValueError("ZooKeeper ACLs are on by default and need credentials: set zookeeper.auth "
                             "{username, password} (the same on every node; password at least "
                             f"{ZK_PASSWORD_MIN_LENGTH} characters), or zookeeper.acl: false to run "
                             "without ACLs")
        if not self.acl and self.auth is not None:
            raise ValueError("zookeeper.acl is false but zookeeper.auth is set: credentials turn "
                             "ACLs on; remove one of the two")
        return self

    @field_validator("root")
    @classmethod
    def _root(cls, root: str) -> str:
        if not root.startswith("/") or (len(root) > 1 and root.endswith("/")):
            raise ValueError("must be an absolute path like /pvc without a trailing slash")
        return root


class TimerSettings(_Section):
    keepalive_interval: float = Field(default=5.0, gt=0, le=60)
    vm_shutdown_timeout: int = Field(default=180, gt=0)
    monitoring_interval: int = Field(default=15, gt=0)


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    file: str | None = None
    stdout: bool = True
    zookeeper: bool = True
    node_log_lines: int = Field(default=2000, ge=10, le=20000)
    console_log_lines: int = Field(default=1000, ge=10, le=20000)
    # Bounds on what guests and pvc write to disk (D14): console logs are copy-truncated past
    # console_log_max_bytes keeping console_log_backups copies; `file` rotates likewise.
    console_log_max_bytes: int = Field(default=1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024)
    console_log_backups: int = Field(default=2, ge=0, le=20)
    file_max_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024)
    file_backups: int = Field(default=5, ge=0, le=50)


API_TOKEN_MIN_LENGTH = 32


class ApiToken(_Section):
    description: str = ""
    token: str

    @field_validator("token")
    @classmethod
    def _long_enough(cls, token: str) -> str:
        # The message never repeats the token: configuration errors end up in logs.
        if len(token) < API_TOKEN_MIN_LENGTH:
            raise ValueError(f"a token must be at least {API_TOKEN_MIN_LENGTH} characters long "
                             f"(this one has {len(token)}); generate one with "
                             "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`")
        return token


class ApiAuthentication(_Section):
    enabled: bool = True
    secret_key: str = ""          # upstream's cookie-signing key: accepted, unused (server-side sessions)
    source: Literal["token"] = "token"
    # Listening beyond loopback without authentication must be asked for by name.
    allow_insecure_listen: bool = False
    session_lifetime: int = Field(default=43200, ge=60)       # seconds from login
    session_idle_timeout: int = Field(default=3600, ge=60)    # seconds since the last request


class ApiListen(_Section):
    address: str = "127.0.0.1"
    port: int = Field(default=7370, gt=0, lt=65536)

    @property
    def is_loopback(self) -> bool:
        """True when only this host can connect (127.0.0.0/8, ::1 or localhost)."""
        if self.address == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.address.strip("[]")).is_loopback
        except ValueError:
            return False


class ApiSSL(_Section):
    """TLS for the API, on by default (D14). On a cluster the installer (or the lab) makes one CA
    and one API certificate valid for every node and the floating address and puts them at these
    paths on every coordinator; a missing certificate and key are generated by pvcapid at start
    (from the CA here, itself generated if missing): the fallback for a single hand-made node."""
    enabled: bool = True
    certificate: str | None = "/etc/pvc/ssl/api.crt"
    private_key: str | None = "/etc/pvc/ssl/api.key"
    # The CA that signed `certificate`: what clients verify against (the `local` connection too).
    ca_certificate: str | None = "/etc/pvc/ssl/ca.crt"
    # Used only to issue a missing API certificate; keep it off the nodes once they have theirs.
    ca_key: str | None = "/etc/pvc/ssl/ca.key"

    @model_validator(mode="after")
    def _files(self) -> ApiSSL:
        if self.enabled and not (self.certificate and self.private_key):
            raise ValueError("certificate and private_key are required when ssl is enabled")
        return self


class ApiSettings(_Section):
    listen: ApiListen = ApiListen()
    authentication: ApiAuthentication = ApiAuthentication()
    token: list[ApiToken] = Field(default_factory=list)
    # Root-only file of tokens (one a line), read when `token` is empty; pvcapid generates it.
    token_file: str = "/etc/pvc/api-token"
    ssl: ApiSSL = ApiSSL()
    # Request body caps in bytes (413 above them); uploads of disk images and OVAs get their own.
    max_body_size: int = Field(default=1024 * 1024, ge=4096)
    max_upload_size: int = Field(default=1024 ** 4, ge=4096)
    # /api/v1/metrics*: "token" asks for the API token like every route; "none" opens them to
    # anyone who reaches the API, as upstream (only on a trusted monitoring network).
    metrics_auth: Literal["none", "token"] = "token"


class WorkerSettings(_Section):
    concurrency: int = Field(default=3, ge=1, le=64)
    task_retention_days: int = Field(default=7, ge=1)
    # Resource limits of each provisioner script sandbox (its own cgroup, issue #13): processes
    # (root ignores RLIMIT_NPROC), memory without swap (scratch tmpfs pages count too), CPU
    # weight (100 = a normal service), and the size of each scratch tmpfs (/tmp, /run, /var...).
    sandbox_pids_max: int = Field(default=512, ge=16, le=1_000_000)
    sandbox_memory_max: str = "4G"
    sandbox_cpu_weight: int = Field(default=20, ge=1, le=10000)
    sandbox_tmp_size: str = "2G"

    @field_validator("sandbox_memory_max", "sandbox_tmp_size")
    @classmethod
    def _sandbox_size(cls, value: str) -> str:
        from pvc.core.units import parse_size

        try:
            size = parse_size(value, "size")
        except Exception as exc:
            raise ValueError(str(exc).removeprefix("size: ")) from None
        if size < 16 * 1024 * 1024:
            raise ValueError(f"'{value}' is below the minimum of 16M")
        return value


class SubsystemSettings(_Section):
    enable_hypervisor: bool = True
    enable_networking: bool = True
    enable_storage: bool = True
    enable_worker: bool = True
    enable_api: bool = True
    enable_prometheus: bool = True


class PathSettings(_Section):
    dynamic_directory: str = "/run/pvc"
    system_log_directory: str = "/var/log/pvc"
    console_log_directory: str = "/var/log/libvirt"
    ceph_directory: str = "/etc/ceph"
    # Node health check plugins (upstream's interface): every file here runs each pass.
    plugin_directory: str = "/usr/share/pvc/plugins"


class DomainPolicyAllow(_Section):
    """Named exceptions to the domain XML policy (pvc.core.domainxml.policy); all off by default."""
    host_disks: list[str] = Field(default_factory=list)            # files/directories usable as disks
    libvirt_volume_pools: list[str] = Field(default_factory=list)  # <disk type='volume'> pools
    network_disk_protocols: list[str] = Field(default_factory=list)  # besides rbd, e.g. ["iscsi"]
    hostdev: bool = False                                          # any <hostdev>
    hostdev_pci: list[str] = Field(default_factory=list)           # e.g. SR-IOV VFs: ["0000:3b:02.1"]
    qemu_commandline: bool = False                                 # any qemu: namespace element
    filesystem_sources: list[str] = Field(default_factory=list)   # <filesystem> source directories
    direct_devices: list[str] = Field(default_factory=list)       # <interface type='direct'> devices
    chardev_paths: list[str] = Field(default_factory=list)        # file/dev/pipe/unix chardev paths
    user_networking: bool = False                                  # <interface type='user'> (slirp)


class DomainPolicySettings(_Section):
    """What domain XML may open on a node (DESIGN D14); refusals name the `allow` key to set."""
    emulators: list[str] = Field(default_factory=lambda: [
        "/usr/bin/qemu-system-x86_64", "/usr/bin/kvm", "/usr/bin/qemu-system-i386",
        "/usr/bin/qemu-system-aarch64", "/usr/libexec/qemu-kvm"])
    kernel_directories: list[str] = Field(default_factory=lambda: ["/var/lib/pvc/kernels"])
    firmware_directories: list[str] = Field(default_factory=lambda: [
        "/usr/share/OVMF", "/usr/share/ovmf", "/usr/share/AAVMF", "/usr/share/qemu",
        "/usr/share/seabios", "/usr/share/qemu-efi-aarch64"])
    nvram_directories: list[str] = Field(default_factory=lambda: ["/var/lib/libvirt/qemu/nvram"])
    log_directories: list[str] = Field(default_factory=lambda: ["/var/log/libvirt"])
    allow: DomainPolicyAllow = DomainPolicyAllow()


class HypervisorSettings(_Section):
    libvirt_uri: str = "qemu:///system"
    domain_policy: DomainPolicySettings = DomainPolicySettings()
    # This node's address on the migration network. Unset: no VM can live-migrate to this node
    # (other nodes get a clear error); set: published in the node document with the URI below.
    migration_address: str | None = None
    # libvirt URI other nodes' libvirtds dial for peer-to-peer migration; {address} is replaced.
    # TLS by default (D14): every node's libvirtd needs listen_tls = 1 and libvirt's standard
    # files from the cluster CA: /etc/pki/CA/cacert.pem (the CA), /etc/pki/libvirt/servercert.pem
    # and private/serverkey.pem (this node, its migration address in the certificate), and
    # clientcert.pem and private/clientkey.pem (what this node presents when it dials a peer).
    # `?pkipath=DIR` in the URI points a client at another directory (the lab does). Plain
    # "qemu+tcp://{address}/system" sends libvirt's control traffic unauthenticated: ask for it by name.
    migration_uri_template: str = "qemu+tls://{address}/system"
    # Encrypt QEMU's migration stream too (the guest's memory; VIR_MIGRATE_TLS): each node's
    # qemu.conf needs migrate_tls_x509_cert_dir (default /etc/pki/qemu) with ca-cert.pem,
    # server-cert.pem, server-key.pem, client-cert.pem and client-key.pem from the cluster CA.
    migration_tls: bool = True


class StorageSettings(_Section):
    ceph_config_file: str = "/etc/ceph/ceph.conf"
    ceph_keyring_file: str = "/etc/ceph/ceph.client.admin.keyring"
    timeout: float = Field(default=5.0, gt=0)
    # The Ceph user VMs' disks authenticate as, and the libvirt secret holding its key (the same
    # UUID on every node; unset: derived from the cluster's fsid, so nodes agree by themselves).
    client_user: str = "admin"
    secret_uuid: str | None = None
    # How this node runs OSD daemons: systemd units (real nodes) or directly, detached, with a
    # pid file in osd_pid_directory (the lab, and hosts without systemd).
    osd_service: Literal["systemd", "direct"] = "systemd"
    osd_data_directory: str = "/var/lib/ceph/osd"
    osd_pid_directory: str | None = None
    # The storage benchmark's test volume size and seconds per test (upstream: 64G, 75 s).
    benchmark_size: str = "64G"
    benchmark_runtime: int = Field(default=75, ge=1, le=3600)
    # Where VM snapshot exports and imports may read and write (absolute directories; a path is
    # resolved with realpath and must lie under one of them; autobackup's root is added to these).
    export_roots: list[str] = Field(default_factory=lambda: [
        "/srv", "/mnt", "/media", "/var/backups", "/backup", "/backups", "/tmp"])

    @field_validator("export_roots")
    @classmethod
    def _export_roots(cls, roots: list[str]) -> list[str]:
        for root in roots:
            if not root.startswith("/") or ".." in root.split("/"):
                raise ValueError(f"'{root}' must be an absolute path without '..'")
        return roots


class BgpSettings(_Section):
    """EVPN for managed networks: FRR's BGP carries the VXLAN flood lists and MAC routes."""
    asn: int = Field(ge=1, le=4294967295)
    # BGP neighbours (route reflectors or upstream routers); empty: every other PVC node's
    # cluster address, a full iBGP mesh.
    peers: list[str] = Field(default_factory=list)

    @field_validator("peers")
    @classmethod
    def _peers(cls, peers: list[str]) -> list[str]:
        for peer in peers:
            try:
                ipaddress.ip_address(peer)
            except ValueError:
                raise ValueError(f"'{peer}' is not an IP address") from None
        return peers


class SriovDevice(_Section):
    """One SR-IOV PF the node sets up at start (upstream's `sriov_device` entry)."""
    phy: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,15}$")
    mtu: int | None = Field(default=None, ge=68, le=65535)
    vfcount: int = Field(default=0, ge=0, le=4096)

    @model_validator(mode="before")
    @classmethod
    def _device(cls, data: object) -> object:
        # upstream's code reads `phy`; its sample configuration says `device`: both are accepted.
        if isinstance(data, dict) and "device" in data and "phy" not in data:
            return {("phy" if k == "device" else k): v for k, v in data.items()}
        return data


class NetworkingSettings(_Section):
    """Where this node's client networks attach (DESIGN D8; facts in pvc-facts §5)."""
    # The underlay for managed (VXLAN) networks, and this node's VTEP address on it (default: the
    # first IPv4 address of the device). VXLAN devices get cluster_mtu - 50 (- 70 over IPv6).
    cluster_device: str = "eth0"
    cluster_address: str | None = None
    cluster_mtu: int | None = Field(default=None, ge=1280, le=65535)
    # The 802.1Q trunk for bridged networks (vlan<vni> sub-interfaces of it).
    bridge_device: str = "eth1"
    bridge_mtu: int | None = Field(default=None, ge=1280, le=65535)
    # Where managed networks' traffic leaves the cluster (masqueraded); default cluster_device.
    upstream_device: str | None = None
    # CIDR held by the primary on upstream_device: the cluster DNS view answers there.
    floating_address: str | None = None
    # The MAC every primary puts on its gateway bridges (default: derived from the cluster
    # name), so guests keep their ARP entry for the gateway across a primary change.
    gateway_mac: str | None = None
    vxlan_port: int = Field(default=4789, gt=0, lt=65536)
    bgp: BgpSettings | None = None
    metadata_address: str = "169.254.169.254"
    metadata_port: int = Field(default=80, gt=0, lt=65536)
    dns_port: int = Field(default=53, gt=0, lt=65536)
    # Resolvers the networks' dnsmasq forwards other names to; empty: answer only the cluster's
    # own names (nothing from the host's /etc/resolv.conf leaks in).
    upstream_dns: list[str] = Field(default_factory=list)
    # kernel: real 802.1Q sub-interfaces. lab-switch: a veth named vlan<vni> into a per-VLAN
    # bridge in the lab's switch namespace (lab_switch_netns), for kernels without 802.1Q.
    vlan_backend: Literal["kernel", "lab-switch"] = "kernel"
    lab_switch_netns: str | None = None
    # Guest isolation (DESIGN D14): guests never reach the nodes' own addresses and networks
    # (derived), nor these networks (BMCs, management, ...); the API only through the floating
    # address, and only when guest_api_access is set. guest_port_guard: anti-spoofing on VM taps.
    guest_denied_networks: list[str] = Field(default_factory=list)
    guest_api_access: bool = False
    guest_port_guard: bool = True
    # SR-IOV (upstream's guest_networking.sriov_enable / sriov_device): the PFs whose VF count
    # and MTU the node sets at start, and whose VFs it publishes for VMs (macvtap or hostdev).
    sriov_enable: bool = False
    sriov_device: list[SriovDevice] = Field(default_factory=list)

    @field_validator("cluster_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"'{value}' is not an IP address") from None
        return value

    @field_validator("upstream_dns")
    @classmethod
    def _resolvers(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"'{value}' is not an IP address") from None
        return values

    @field_validator("guest_denied_networks")
    @classmethod
    def _denied(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"guest_denied_networks: '{value}' is not a network (a.b.c.d/nn)") from None
        return values

    @field_validator("floating_address")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_interface(value)
            except ValueError:
                raise ValueError(f"'{value}' is not an address with prefix length (a.b.c.d/nn)") from None
            if "/" not in value:
                raise ValueError(f"'{value}' needs a prefix length (a.b.c.d/nn)")
        return value

    @field_validator("gateway_mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        if value is not None:
            if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", value) or int(value[:2], 16) & 1:
                raise ValueError(f"'{value}' is not a unicast MAC address")
            return value.lower()
        return value

    @model_validator(mode="after")
    def _lab(self) -> NetworkingSettings:
        if self.vlan_backend == "lab-switch" and not self.lab_switch_netns:
            raise ValueError("vlan_backend lab-switch needs lab_switch_netns")
        return self


class IpmiSettings(_Section):
    """This node's BMC, published so the primary can power it off. `{node}` in hostname is
    replaced by the node name. The password comes from here or from password_file and is handed
    to ipmitool through its environment, never on its command line."""
    hostname: str = "{node}-lom"
    username: str = "admin"
    password: str | None = None
    password_file: str | None = None
    interface: str = "lanplus"
    power_on_after: bool = True


class FencingActions(_Section):
    successful_fence: Literal["migrate", "none"] = "migrate"
    failed_fence: Literal["migrate", "none"] = "none"


class FencingSettings(_Section):
    """High availability (DESIGN D10). A node that loses its ZooKeeper session destroys its VMs
    once the session must have expired (self-fence); the primary declares a node dead `margin`
    seconds after its session is gone (or when its keepalive is `fence_intervals` intervals old
    while the session lives: a hung daemon), fences it with `agent`, blocklists its Ceph client
    and restarts its VMs elsewhere."""
    enabled: bool = True
    agent: Literal["none", "ipmi", "lab"] = "none"
    # covers how late a cut-off node's self-fence may end after its session expired (ms: it is
    # timed to the bound; docs/architecture.md, "Failover timing")
    margin: float = Field(default=1.0, ge=0.5, le=300)
    fence_intervals: int = Field(default=6, ge=2, le=100)
    agent_timeout: float = Field(default=30.0, gt=0, le=600)
    self_fence: bool = True
    # A hardware watchdog (e.g. /dev/watchdog) petted while the ZooKeeper session is healthy, so
    # a node whose daemon hangs or dies is reset even though it can no longer fence itself.
    watchdog_device: str | None = None
    watchdog_timeout: int = Field(default=30, ge=5, le=600)
    blocklist_expire: int = Field(default=7 * 86400, ge=60)
    # The primary lease (docs/architecture.md, "HA guards"): seconds the primary's HA loop may go
    # without renewing it before another coordinator deposes it; unset: keepalive interval x
    # fence_intervals, the bound of a hung daemon.
    lease_timeout: float | None = Field(default=None, ge=2, le=600)
    # The brake: when more than brake_share of the cluster's nodes die within brake_window
    # seconds, none is fenced (FENCING_BRAKE) until they come back or an operator acknowledges
    # the fault. 1 turns the brake off.
    brake_share: float = Field(default=0.5, gt=0, le=1)
    brake_window: float = Field(default=10.0, ge=1, le=3600)
    actions: FencingActions = FencingActions()
    ipmi: IpmiSettings = IpmiSettings()
    # agent lab: the lab whose fence tool (`pvc-lab fence`) stands in for a BMC.
    lab_name: str | None = None

    @model_validator(mode="after")
    def _agent(self) -> FencingSettings:
        if self.agent == "lab" and not self.lab_name:
            raise ValueError("agent lab needs lab_name")
        if self.ipmi.password and self.ipmi.password_file:
            raise ValueError("ipmi: give password or password_file, not both")
        return self


class HealthSettings(_Section):
    """Node health checks (pvc.node.health): each plugin runs in its own process every
    timer.monitoring_interval seconds and is killed after its timeout (a deduction and a fault).
    plugin_config adds keys to the plugins' `self.config` (documented by each shipped plugin,
    e.g. nics_expected_speed {device: Mb/s}, fs_warn_percent, load_factor)."""
    plugin_timeout: float = Field(default=10.0, gt=0, le=300)
    plugin_timeouts: dict[str, float] = Field(default_factory=dict)   # per plugin name
    plugin_config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("plugin_timeouts")
    @classmethod
    def _timeouts(cls, values: dict[str, float]) -> dict[str, float]:
        for name, value in values.items():
            if not 0 < value <= 300:
                raise ValueError(f"plugin_timeouts.{name}: {value} is not in (0, 300] seconds")
        return values


class FaultSettings(_Section):
    """Cluster faults (pvc.cluster.faults): resolved faults are kept this long, then the primary
    deletes them."""
    fault_retention_days: float = Field(default=7, ge=0)


class MigrationSettings(_Section):
    target_selector: Literal["mem", "memprov", "load", "vcpus", "vms"] = "mem"


def _recipients(values: list[str]) -> list[str]:
    """Report addresses: plain addresses (a comma-separated entry is split)."""
    from pvc.core.autobackup import split_recipients

    try:
        return split_recipients(values)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def _calendar(value: str | None) -> str | None:
    """A systemd calendar expression of the subset pvc.core.calendar accepts."""
    if value is not None:
        from pvc.core.calendar import CalendarError, parse

        try:
            parse(value)
        except CalendarError as exc:
            raise ValueError(str(exc)) from None
    return value


class AutobackupScheduleCounts(_Section):
    """Upstream's backup_schedule: a full every `full_interval` runs, `full_retention` fulls kept."""
    full_interval: int = Field(ge=1)
    full_retention: int = Field(ge=1)


class AutobackupMount(_Section):
    """Commands run (no shell; split as a shell would, quotes allowed) around a run;
    `{backup_root_path}` is replaced. Unmount always runs, even after a failure."""
    enabled: bool = False
    mount_cmds: list[str] = Field(default_factory=list)
    unmount_cmds: list[str] = Field(default_factory=list)


class AutobackupCalendar(_Section):
    """Built-in schedule (ours): systemd calendar expressions evaluated by the primary, e.g.
    normal "Tue..Sun *-*-* 0:0:00" and forced_full "Mon *-*-* 0:0:00" (pvc-ansible's timers)."""
    normal: str | None = None
    forced_full: str | None = None
    email_recipients: list[str] = Field(default_factory=list)   # report of every scheduled run

    @field_validator("normal", "forced_full")
    @classmethod
    def _expr(cls, value: str | None) -> str | None:
        return _calendar(value)

    @field_validator("email_recipients")
    @classmethod
    def _mail(cls, values: list[str]) -> list[str]:
        return _recipients(values)


class AutobackupSettings(_Section):
    """`autobackup:` (upstream's keys; the section's presence enables the feature)."""
    backup_root_path: str
    backup_root_suffix: str = ""
    backup_tags: list[str] = Field(min_length=1)
    backup_schedule: AutobackupScheduleCounts
    auto_mount: AutobackupMount = AutobackupMount()
    # ours
    schedule: AutobackupCalendar | None = None
    failed_retention_days: int = Field(default=30, ge=1)     # failed catalogue entries kept this long
    stale_after: int | None = Field(default=None, ge=60)     # seconds; default 2x the schedule's gap
    min_free_bytes: int = Field(default=1024 ** 3, ge=0)     # refuse a VM when less would be left

    @field_validator("backup_root_path")
    @classmethod
    def _root(cls, value: str) -> str:
        if not value.startswith("/") or value.rstrip("/") == "":
            raise ValueError(f"'{value}' must be an absolute directory other than /")
        return value.rstrip("/")

    @field_validator("backup_root_suffix")
    @classmethod
    def _suffix(cls, value: str) -> str:
        if value and (not value.startswith("/") or ".." in value.split("/")):
            raise ValueError(f"'{value}' must start with / (e.g. /mycluster) and contain no '..'")
        return value.rstrip("/")

    @property
    def target(self) -> str:
        """Where VM directories go: backup_root_path + backup_root_suffix."""
        return self.backup_root_path + self.backup_root_suffix


class MirrorDestination(_Section):
    """A PVC cluster automirror sends to. `key` is its API key: a secret (never logged, never in a
    task's arguments: the task reads it from this file)."""
    address: str
    port: int = Field(default=7370, gt=0, lt=65536)
    prefix: str = "/api/v1"
    key: str | None = None
    ssl: bool = True
    verify_ssl: bool = True
    pool: str | None = None
    ca_file: str | None = None       # ours: the CA the destination's certificate must be signed by

    @property
    def uri(self) -> str:
        scheme = "https" if self.ssl else "http"
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{scheme}://{host}:{self.port}{self.prefix}"


class AutomirrorSettings(_Section):
    """`automirror:` (upstream's keys; the section's presence enables the feature)."""
    destinations: dict[str, MirrorDestination] = Field(min_length=1)
    default_destination: str
    mirror_tags: list[str] = Field(min_length=1)
    keep_snapshots: int = Field(ge=1)
    schedule: str | None = None                              # ours: e.g. "*-*-* 00/4:00:00"
    schedule_email_recipients: list[str] = Field(default_factory=list)   # report of scheduled runs
    schedule_email_errors_only: bool = False

    @field_validator("schedule")
    @classmethod
    def _expr(cls, value: str | None) -> str | None:
        return _calendar(value)

    @field_validator("schedule_email_recipients")
    @classmethod
    def _mail(cls, values: list[str]) -> list[str]:
        return _recipients(values)

    @model_validator(mode="after")
    def _default(self) -> AutomirrorSettings:
        if self.default_destination not in self.destinations:
            raise ValueError(f"default_destination '{self.default_destination}' is not one of the "
                             f"destinations ({', '.join(sorted(self.destinations))})")
        return self


class NodeSettings(_Section):
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, name: str | None) -> str | None:
        if name is not None and not NAME_RE.match(name):
            raise ValueError(f"'{name}' is not a valid node name")
        return name


class Settings(_Section):
    cluster: ClusterSettings
    zookeeper: ZooKeeperSettings
    node: NodeSettings = NodeSettings()
    timer: TimerSettings = TimerSettings()
    logging: LoggingSettings = LoggingSettings()
    api: ApiSettings = ApiSettings()
    worker: WorkerSettings = WorkerSettings()
    subsystem: SubsystemSettings = SubsystemSettings()
    path: PathSettings = PathSettings()
    hypervisor: HypervisorSettings = HypervisorSettings()
    storage: StorageSettings = StorageSettings()
    networking: NetworkingSettings = NetworkingSettings()
    migration: MigrationSettings = MigrationSettings()
    fencing: FencingSettings = FencingSettings()
    faults: FaultSettings = FaultSettings()
    health: HealthSettings = HealthSettings()
    autobackup: AutobackupSettings | None = None
    automirror: AutomirrorSettings | None = None
    source: str = Field(default="", exclude=True, description="file this was loaded from")

    @property
    def node_name(self) -> str:
        return self.node.name or socket.gethostname().split(".")[0]

    @property
    def is_coordinator(self) -> bool:
        return self.node_name in self.cluster.coordinator_nodes


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "missing":
        return f"missing key '{key}'"
    if kind == "extra_forbidden":
        return f"unknown key '{key}'"
    message = error["msg"].removeprefix("Value error, ")
    return f"key '{key}': {message}"


def config_path(path: str | None = None) -> str:
    return path or os.environ.get("PVC_CONFIG_FILE") or DEFAULT_CONFIG_FILE


def load_config(path: str | None = None) -> Settings:
    """Load and validate; raise ConfigError with one line naming the file and the key."""
    path = config_path(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file: {exc.strerror}") from None
    return parse_config(text, path)


def parse_config(text: str, path: str = "<string>") -> Settings:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a YAML mapping of sections")
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors())
        raise ConfigError(f"{path}: invalid configuration: {problems}") from None
    return settings.model_copy(update={"source": path})
