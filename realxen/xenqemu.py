"""Boot Debian's Xen and a Linux PV dom0 inside QEMU, run the real-Xen scenarios in dom0.

This is the host half of ``make test-xen`` (docs/real-xen.md). One *boot* starts QEMU
(TCG, ``-cpu qemu64``) with Xen as the multiboot kernel and Linux + a small initramfs as
dom0; dom0's root is this machine's ``/`` over virtio-9p (read-only, with a tmpfs overlay),
so the daemon under test runs straight from the checkout's ``.venv``. A second 9p share,
the boot's output folder, carries the settings into dom0 and every log and result out.
In dom0, ``dom0/stage2.sh`` installs the daemon as the host's xenstored through Debian's
``launch-xenstore`` and runs the named scenarios one after another; each scenario leaves
``scenarios/<name>/status`` (its exit status) and ``scenarios/<name>/log`` behind.

Images (Xen, the kernel, the two initramfs) are built once per set of inputs and cached
under ``$PXS_XEN_CACHE`` (default ``/var/tmp/pyxenstored-realxen``); the cache key covers
the build inputs, so editing ``guest/init.sh`` or upgrading a package rebuilds them. The
initramfs archives are written here (``newc`` cpio) rather than by an external ``cpio``.

Nothing here is imported by the product or by ``make test``.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import platform
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent

#: Debian packages the suite needs, and one file each that shows the package is there.
PACKAGES = {
    "qemu-system-x86": "/usr/bin/qemu-system-x86_64",
    "xen-hypervisor-4.17-amd64": "/boot/xen-4.17-amd64.gz",
    "xen-utils-4.17": "/usr/lib/xen-4.17/bin/xenstored",
    "xenstore-utils": "/usr/bin/xenstore",
    "linux-image-amd64": "/usr/share/doc/linux-image-amd64",
    "busybox-static": "/bin/busybox",
}

#: kernel modules dom0's initramfs loads before it can reach its root over 9p and talk to Xen
DOM0_MODULES = (
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "overlay",
    "xen-evtchn",
    "xen-gntdev",
    "xen-gntalloc",
    "xen-privcmd",
    "xenfs",
)
#: the frontends a guest loads (devices scenario)
GUEST_MODULES = ("xen-blkfront", "xen-netfront")
#: the xenstore client verbs a guest has (links to Debian's multi-call ``xenstore``)
GUEST_XENSTORE_VERBS = ("read", "write", "ls", "list", "rm", "exists", "watch", "chmod")

#: what glibc loads at run time for pthread_cancel (ldd does not list it)
LIBGCC = ("/lib/x86_64-linux-gnu/libgcc_s.so.1",)

#: the daemons a boot can serve with; the value is what /etc/default/xencommons names
DAEMONS = ("pyxenstored", "cxenstored")
#: scenarios in the order one boot runs them (later ones rely on nothing earlier ones left)
SCENARIOS = ("smoke", "tool", "liveconfig", "devices", "bootstorm", "liveupdate", "crash")
#: scenarios that only pyxenstored can pass (C xenstored does not survive its own crash)
PYXENSTORED_ONLY = frozenset({"crash"})

#: dom0's status when the boot never reached the scenarios (the only case retried)
NEVER_RAN = 125


def why_not_here() -> str | None:
    """Why the suite cannot run on this machine, or None when it can."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return f"needs Linux on x86_64 (this is {sys.platform} on {platform.machine()})"
    if os.geteuid() != 0:
        return "needs root (QEMU's 9p export of / must read every file; apt-get installs)"
    missing = missing_packages()
    if missing and shutil.which("apt-get") is None:
        return f"needs Debian packages {' '.join(missing)} and there is no apt-get"
    return None


def missing_packages() -> list[str]:
    return [pkg for pkg, path in PACKAGES.items() if not os.path.exists(path)]


def install_packages(log: Path) -> None:
    """apt-get the missing packages (nothing is downloaded at boot time)."""
    missing = missing_packages()
    if not missing:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with log.open("ab") as out:
        subprocess.run(["apt-get", "update", "-q"], stdout=out, stderr=out, check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            stdout=out,
            stderr=out,
            check=True,
            env=env,
        )
    still = missing_packages()
    if still:
        raise RuntimeError(f"apt-get did not install {still}; see {log}")


# -- images ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Images:
    folder: Path
    kernel_version: str

    @property
    def xen(self) -> Path:
        return self.folder / "xen"

    @property
    def kernel(self) -> Path:
        return self.folder / "vmlinuz"

    @property
    def dom0_initrd(self) -> Path:
        return self.folder / "dom0.cpio.gz"

    @property
    def guest_initrd(self) -> Path:
        return self.folder / "guest.cpio.gz"

    @property
    def tool_initrd(self) -> Path:
        """The guest initramfs plus Python and pyxenstored (the ``tool`` scenario's guest);
        named by the digest of what it holds of the checkout, so editing the package
        rebuilds only this image."""
        return self.folder / f"tool-{tool_digest()}.cpio.gz"


def kernel_version() -> str:
    versions = sorted(
        (v for v in os.listdir("/lib/modules") if v.endswith("-amd64")),
        key=lambda v: [int(p) if p.isdigit() else p for p in v.replace("-", ".").split(".")],
    )
    if not versions:
        raise RuntimeError("no -amd64 kernel modules in /lib/modules (linux-image-amd64)")
    return versions[-1]


class Cpio:
    """A ``newc`` cpio archive built in memory (what the kernel unpacks as an initramfs)."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 1
        self._dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes, mtime: int = 0) -> None:
        fields = [self._ino, mode, 0, 0, 1, mtime, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        self._ino += 1
        head = b"070701" + b"".join(b"%08X" % f for f in fields)
        blob = head + name.encode() + b"\0"
        blob += b"\0" * (-len(blob) % 4)
        self._out.write(blob + data + b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        name = name.strip("/")
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub and sub not in self._dirs:
                self._dirs.add(sub)
                self._entry(sub, stat.S_IFDIR | 0o755, b"")

    def file(self, name: str, data: bytes, mode: int = 0o644, mtime: int = 0) -> None:
        name = name.strip("/")
        self.directory(os.path.dirname(name))
        self._entry(name, stat.S_IFREG | mode, data, mtime)

    def symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        self.directory(os.path.dirname(name))
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def copy(self, host_path: str, name: str | None = None) -> None:
        """A host file (links followed), keeping its permission bits and its modification
        time (the kernel restores it, so Python's timestamp-checked .pyc files stay valid)."""
        path = Path(host_path)
        st = path.stat()
        self.file(name or host_path, path.read_bytes(), stat.S_IMODE(st.st_mode), int(st.st_mtime))

    def gzipped(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"")
        return gzip.compress(self._out.getvalue(), compresslevel=1)


def module_files(kver: str, names: Iterable[str]) -> list[str]:
    """Each module with its dependencies, in load order, without repeats."""
    out: list[str] = []
    for name in names:
        shown = subprocess.run(
            ["modprobe", "-S", kver, "--show-depends", name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in shown.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "insmod" and words[1] not in out:
                out.append(words[1])
    return out


def shared_libraries(binary: str) -> list[str]:
    """The shared objects ``binary`` loads (ldd), the dynamic loader included."""
    listed = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs: list[str] = []
    for line in listed.splitlines():
        words = line.split()
        if "=>" in words and len(words) > words.index("=>") + 1:
            target = words[words.index("=>") + 1]
            if target.startswith("/"):
                libs.append(target)
        elif words and words[0].startswith("/"):
            libs.append(words[0])
    return libs


def _add_modules(archive: Cpio, kver: str, names: Sequence[str]) -> None:
    files = module_files(kver, names)
    for path in files:
        archive.copy(path, "mods/" + os.path.basename(path))
    archive.file("mods/order", "".join(os.path.basename(p) + "\n" for p in files).encode())


def _dom0_initrd(kver: str) -> bytes:
    archive = Cpio()
    for d in ("proc", "sys", "dev", "mnt/host", "mnt/rw", "mnt/root"):
        archive.directory(d)
    archive.copy("/bin/busybox")
    _add_modules(archive, kver, DOM0_MODULES)
    archive.file("init", (HERE / "dom0" / "init").read_bytes(), 0o755)
    return archive.gzipped()


def _guest_archive(kver: str) -> Cpio:
    archive = Cpio()
    for d in ("proc", "sys", "dev", "tmp"):
        archive.directory(d)
    archive.copy("/bin/busybox")
    archive.copy("/usr/bin/xenstore")
    for lib in shared_libraries("/usr/bin/xenstore"):
        archive.copy(lib)
    for verb in GUEST_XENSTORE_VERBS:
        archive.symlink(f"bin/xenstore-{verb}", "/usr/bin/xenstore")
    _add_modules(archive, kver, GUEST_MODULES)
    archive.file("init", (HERE / "guest" / "init.sh").read_bytes(), 0o755)
    return archive


def _guest_initrd(kver: str) -> bytes:
    return _guest_archive(kver).gzipped()


# -- the tool guest: Python and pyxenstored in the initramfs ----------------------------------
#: standard library folders a pyxenstore run never imports (left out of the tool guest)
STDLIB_SKIP = frozenset(
    {
        "test",
        "tests",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "distutils",
        "pydoc_data",
        "site-packages",
        "venv",
        "sqlite3",
        "curses",
        "dbm",
    }
)
#: extension modules left out (they pull in big libraries pyxenstore has no use for)
DYNLOAD_SKIP = (
    "_tkinter",
    "_sqlite3",
    "_ssl",
    "_hashlib",
    "readline",
    "_curses",
    "_dbm",
    "_gdbm",
    "nis",
    "_crypt",
    "_uuid",
    "_lzma",
    "_bz2",
    "_ctypes",
)
#: where the guest finds the differential's files
TOOL_DIR = "tooldiff"
#: the files of the checkout the tool guest holds (besides src/pyxenstored)
TOOL_FILES = (CHECKOUT / "tests" / "tool" / "cases.py", HERE / "guest" / "tooldiff.py")


def _package_files() -> list[Path]:
    root = CHECKOUT / "src" / "pyxenstored"
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def tool_digest() -> str:
    """What the tool image holds of the checkout and of the interpreter, as a short digest."""
    digest = hashlib.sha256(f"{sys.version} {sys.base_prefix}\n".encode())
    for path in [*_package_files(), *TOOL_FILES]:
        digest.update(f"{path.relative_to(CHECKOUT)}\n".encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _unchecked_pyc(source: bytes, filename: str) -> bytes:
    """A hash-based .pyc that Python uses without checking its source (PEP 552): the
    package's sources in the image are never edited, and compiling them in the guest
    would cost seconds under TCG on every start."""
    import importlib.util
    import marshal

    code = compile(source, filename, "exec", dont_inherit=True)
    flags = 0b01  # hash-based, not checked
    return (
        importlib.util.MAGIC_NUMBER
        + flags.to_bytes(4, "little")
        + importlib.util.source_hash(source)
        + marshal.dumps(code)
    )


def _add_stdlib(archive: Cpio, stdlib: Path, pyc_tag: str) -> None:
    """The standard library less STDLIB_SKIP, with the interpreter's own timestamp .pyc
    files (valid because the archive keeps the sources' modification times)."""
    for folder, dirs, files in os.walk(stdlib):
        here = Path(folder)
        if here.name == "__pycache__":
            for name in files:
                if name.endswith(f".{pyc_tag}.pyc"):
                    archive.copy(str(here / name))
            continue
        dirs[:] = [d for d in dirs if d not in STDLIB_SKIP and not d.startswith("config-")]
        for name in files:
            if here.name == "lib-dynload" and name.startswith(DYNLOAD_SKIP):
                continue
            if name.endswith((".py", ".so")) or here.name == "lib-dynload":
                archive.copy(str(here / name))


def _add_stripped(archive: Cpio, lib: str) -> None:
    """A shared library, without its debugging symbols when ``strip`` is there (libpython
    carries some 18 MB of them; the guest has 384 MB)."""
    strip = shutil.which("strip")
    if strip is None:
        archive.copy(lib)
        return
    tmp = Path(f"/tmp/pxs-strip-{os.getpid()}")
    try:
        subprocess.run([strip, "--strip-debug", "-o", str(tmp), lib], check=True)
        archive.file(lib, tmp.read_bytes(), stat.S_IMODE(os.stat(lib).st_mode))
    finally:
        tmp.unlink(missing_ok=True)


def _tool_initrd(kver: str) -> bytes:
    """The guest initramfs plus this interpreter (at its host path, so its run path and
    prefix hold), its pruned standard library, xenstore-control, the pyxenstored package
    as site-packages and the differential's files under /tooldiff."""
    import sysconfig

    archive = _guest_archive(kver)
    # glibc dlopens libgcc_s for pthread_cancel, which xenstore-watch calls when it exits
    # after -n events: without it the C watch aborts ("libgcc_s.so.1 must be installed"),
    # which the differential's watch case would see. (The other guests keep the plain
    # image: their scripts do not depend on xenstore-watch's exit status.)
    for lib in LIBGCC:
        if os.path.exists(lib):
            archive.copy(lib)
    tag = sys.implementation.cache_tag
    interpreter = os.path.realpath(
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    archive.copy(interpreter)
    archive.symlink("bin/python3", interpreter)
    libs = set(shared_libraries(interpreter))
    stdlib = Path(
        sysconfig.get_paths(vars={"installed_base": sys.base_prefix, "base": sys.base_prefix})[
            "stdlib"
        ]
    )
    _add_stdlib(archive, stdlib, tag)
    for module in (stdlib / "lib-dynload").glob("*.so"):
        if not module.name.startswith(DYNLOAD_SKIP):
            libs.update(shared_libraries(str(module)))
    control = "/usr/lib/xen-4.17/bin/xenstore-control"
    if os.path.exists(control):
        archive.copy(control)
        libs.update(shared_libraries(control))
    already = set(shared_libraries("/usr/bin/xenstore"))
    for lib in sorted(libs - already):
        if "libpython" in lib:
            _add_stripped(archive, lib)
        else:
            archive.copy(lib)
    site = stdlib / "site-packages"
    root = CHECKOUT / "src"
    for path in _package_files():
        name = str(site / path.relative_to(root))
        data = path.read_bytes()
        archive.file(name, data)
        if path.suffix == ".py":
            pyc = Path(name).parent / "__pycache__" / f"{path.stem}.{tag}.pyc"
            archive.file(str(pyc), _unchecked_pyc(data, name))
    for path in TOOL_FILES:
        archive.file(f"{TOOL_DIR}/{path.name}", path.read_bytes())
    archive.file(
        "bin/pyxenstore",
        f"#!{interpreter}\nimport sys\nfrom pyxenstored.tool.main import run\n"
        "sys.exit(run())\n".encode(),
        0o755,
    )
    return archive.gzipped()


def _xen_gz() -> Path:
    found = sorted(Path("/boot").glob("xen-4.*-amd64.gz"))
    if not found:
        raise RuntimeError("no /boot/xen-4.*-amd64.gz (xen-hypervisor-4.17-amd64)")
    return found[-1]


def build_images(cache: Path) -> Images:
    """The boot images for this machine's packages and these scripts (cached by key)."""
    kver = kernel_version()
    xen_gz = _xen_gz()
    inputs = [
        Path(__file__),
        HERE / "dom0" / "init",
        HERE / "guest" / "init.sh",
        xen_gz,
        Path(f"/boot/vmlinuz-{kver}"),
        Path("/bin/busybox"),
        Path("/usr/bin/xenstore"),
        Path(f"/lib/modules/{kver}/modules.dep"),
    ]
    digest = hashlib.sha256()
    for path in inputs:
        st = path.stat()
        digest.update(f"{path} {st.st_size} {st.st_mtime_ns}\n".encode())
        if path.suffix in (".py", ".sh") or path.name == "init":
            digest.update(path.read_bytes())
    folder = cache / "images" / digest.hexdigest()[:16]
    images = Images(folder, kver)
    if images.guest_initrd.exists():
        _build_tool_initrd(images)
        return images
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "xen").write_bytes(gzip.decompress(xen_gz.read_bytes()))
    shutil.copyfile(f"/boot/vmlinuz-{kver}", tmp / "vmlinuz")
    (tmp / "dom0.cpio.gz").write_bytes(_dom0_initrd(kver))
    (tmp / "guest.cpio.gz").write_bytes(_guest_initrd(kver))
    (tmp / "inputs.txt").write_text(f"kernel {kver}\nxen {xen_gz.name}\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    _build_tool_initrd(images)
    return images


def _build_tool_initrd(images: Images) -> None:
    """The tool guest's image for this checkout, unless it is there (older ones removed)."""
    target = images.tool_initrd
    if target.exists():
        return
    for old in images.folder.glob("tool-*.cpio.gz"):
        old.unlink()
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.write_bytes(_tool_initrd(images.kernel_version))
    tmp.rename(target)


# -- one boot -------------------------------------------------------------------------------
@dataclasses.dataclass
class Boot:
    """The outcome of one QEMU boot."""

    out: Path
    status: int  # dom0's suite status; NEVER_RAN when dom0 never ran it; 124 on time-out
    wall: float
    attempts: int = 1

    def scenario_status(self, name: str) -> int | None:
        path = self.out / "scenarios" / name / "status"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def scenario_log(self, name: str) -> str:
        path = self.out / "scenarios" / name / "log"
        try:
            return path.read_text(errors="replace")
        except OSError:
            return f"(no log at {path})"

    def figures(self, name: str) -> dict[str, str]:
        """``key=value`` lines a scenario wrote to ``scenarios/<name>/figures``."""
        path = self.out / "scenarios" / name / "figures"
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return {}
        return dict(line.split("=", 1) for line in lines if "=" in line)


@dataclasses.dataclass
class BootSettings:
    daemon: str = "pyxenstored"
    scenarios: Sequence[str] = SCENARIOS
    timeout: float = 900.0
    memory_mib: int = 3072
    cpus: int = 2
    dom0_mem: str = "1024M"
    guests: int = 8  # in the bootstorm
    extra: dict[str, str] = dataclasses.field(default_factory=dict)


def _qemu_command(images: Images, out: Path, s: BootSettings) -> list[str]:
    xen_args = (
        "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all "
        f"dom0_mem={s.dom0_mem},max:{s.dom0_mem} dom0_max_vcpus={s.cpus}"
    )
    dom0_args = "console=hvc0 earlyprintk=xen quiet"
    return [
        "qemu-system-x86_64",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "qemu64",
        "-m",
        str(s.memory_mib),
        "-smp",
        str(s.cpus),
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-kernel",
        str(images.xen),
        "-append",
        xen_args,
        "-initrd",
        f"{images.kernel} {dom0_args},{images.dom0_initrd}",
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={out},mount_tag=pxsout,security_model=none",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _write_settings(out: Path, images: Images, s: BootSettings) -> None:
    run = out / ".run"
    run.mkdir(parents=True, exist_ok=True)
    values = {
        "PXS_HOME": str(HERE),
        "PXS_CHECKOUT": str(CHECKOUT),
        "PXS_OUT": "/pxs/out",
        "PXS_DAEMON": s.daemon,
        "PXS_SCENARIOS": " ".join(s.scenarios),
        "PXS_GUEST_KERNEL": str(images.kernel),
        "PXS_GUEST_INITRD": str(images.guest_initrd),
        "PXS_GUEST_TOOL_INITRD": str(images.tool_initrd),
        "PXS_GUESTS": str(s.guests),
        **s.extra,
    }
    text = "".join(f"export {k}={_shell_quote(v)}\n" for k, v in values.items())
    (run / "env.sh").write_text(text)


def _pump(stream: io.BufferedReader, log: Path, t0: float, echo: bool) -> None:
    with log.open("w") as f:
        for raw in stream:
            line = f"{time.monotonic() - t0:8.2f} {raw.decode('utf-8', 'replace').rstrip()}\n"
            f.write(line)
            f.flush()
            if echo and not line[9:].startswith(("(XEN)", "(d")):
                sys.stderr.write(line)


def boot_once(images: Images, out: Path, s: BootSettings, echo: bool = False) -> Boot:
    if "," in str(out) or "," in str(images.folder):
        raise ValueError("QEMU's option syntax allows no commas in the output or cache paths")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _write_settings(out, images, s)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        _qemu_command(images, out, s),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    pump = threading.Thread(target=_pump, args=(proc.stdout, out / "serial.log", t0, echo))
    pump.start()
    try:
        proc.wait(timeout=s.timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        timed_out = True
    pump.join(timeout=10)
    wall = time.monotonic() - t0
    status_file = out / ".run" / "status"
    if status_file.exists() and status_file.read_text().strip():
        status = int(status_file.read_text().strip())
    elif timed_out:
        status = 124
    else:
        status = NEVER_RAN
    return Boot(out, status, wall)


def reached_suite(boot: Boot) -> bool:
    """Did dom0 start the suite (so any failure is the daemon's or a scenario's)?"""
    return (boot.out / ".run" / "started").exists()


def boot(images: Images, out: Path, s: BootSettings, echo: bool = False) -> Boot:
    """One boot; retried once only if dom0 never reached the suite (never otherwise)."""
    result = boot_once(images, out, s, echo)
    if reached_suite(result):
        return result
    first = out.with_name(out.name + "-attempt1")
    shutil.rmtree(first, ignore_errors=True)
    out.rename(first)
    again = boot_once(images, out, s, echo)
    again.attempts = 2
    return again


def main(argv: Sequence[str] | None = None) -> int:
    """``python realxen/xenqemu.py [--daemon D] [--scenarios a,b] [--out DIR]``: one boot."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--daemon", choices=DAEMONS, default="pyxenstored")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--out", type=Path)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--guests", type=int, default=8)
    p.add_argument("--quiet", action="store_true", help="do not echo dom0's console")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PXS_NAME=VALUE",
        help="a setting handed to dom0 (e.g. PXS_XENSTORED_ARGS='-T /var/log/xen/trace')",
    )
    args = p.parse_args(argv)
    reason = why_not_here()
    if reason:
        print(f"realxen: cannot run here: {reason}", file=sys.stderr)
        return 77
    cache = Path(os.environ.get("PXS_XEN_CACHE", "/var/tmp/pyxenstored-realxen"))
    cache.mkdir(parents=True, exist_ok=True)
    install_packages(cache / "apt.log")
    images = build_images(cache)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or cache / "out" / f"{args.daemon}-{stamp}-{os.getpid()}"
    settings = BootSettings(
        daemon=args.daemon,
        scenarios=args.scenarios.split(","),
        timeout=args.timeout,
        guests=args.guests,
        extra=dict(item.split("=", 1) for item in args.set),
    )
    result = boot(images, out.resolve(), settings, echo=not args.quiet)
    for name in settings.scenarios:
        print(f"{name}: status {result.scenario_status(name)} {result.figures(name)}")
    print(f"boot status {result.status} in {result.wall:.0f} s, output {result.out}")
    return 0 if result.status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
