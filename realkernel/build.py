"""Building what the guest runs: the cgroup selftests and our driver as static programs,
the kmemreq module against the downloaded headers, and the initramfs (a newc cpio archive
written here, so no cpio tool is needed) with busybox, those programs and the modules the
guest loads (brd for the RAM disk, ext4 for its ext2 filesystem)."""
import hashlib
import shutil
import stat
import subprocess
from pathlib import Path

from realkernel.errors import RealKernelError

GUEST = Path(__file__).parent / "guest"
SELFTESTS = ("test_kmem", "test_memcontrol")
# kernel modules the init loads (their dependencies: _module_closure)
GUEST_MODULES = ("brd", "crc32c_generic", "ext4")    # ext4 needs a crc32c (a softdep)
# stdout line-buffered in every selftest: forked children would otherwise repeat the
# parent's buffered lines when they exit (the output is a pipe to the console, not a tty)
_LINEBUF_C = ("#include <stdio.h>\n__attribute__((constructor)) static void rk_linebuf(void)"
              " { setvbuf(stdout, NULL, _IOLBF, 0); }\n")


def _run(cmd, what, **kw):
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)
    except FileNotFoundError:
        raise RealKernelError(f"{what}: {cmd[0]} not found") from None
    except subprocess.CalledProcessError as e:
        lines = [ln for ln in (e.stderr + e.stdout).splitlines() if "error" in ln.lower()]
        last = lines or (e.stderr + e.stdout).strip().splitlines() or [f"exit {e.returncode}"]
        raise RealKernelError(f"{what} failed: {last[0].strip()}") from None


def _sources_digest(*paths):
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:12]


def build_dir(kernel):
    """The build folder of this kernel and these guest sources (a change rebuilds)."""
    digest = _sources_digest(*sorted(GUEST.glob("*.[ch]")), __file__)
    path = kernel["tree"].parent / f"build-{kernel['version']}-{digest}"
    path.mkdir(exist_ok=True)
    return path


def static_program(out, sources, what, includes=()):
    """gcc -static, WITHOUT -O2: gcc would drop the selftests' untouched allocations
    (a malloc whose memory is only written) and their OOM subtests would then pass no
    memory through the memcg at all."""
    if out.exists():
        return out
    cmd = ["gcc", "-static", "-w", "-o", str(out), *map(str, sources)]
    cmd += [f"-I{inc}" for inc in includes]
    _run(cmd, what)
    return out


def selftest_programs(kernel, dest):
    src = kernel["selftests"] / "cgroup"
    linebuf = dest / "linebuf.c"
    linebuf.write_text(_LINEBUF_C)
    return [static_program(dest / name, [src / f"{name}.c", src / "cgroup_util.c", linebuf],
                           f"building the selftest {name}") for name in SELFTESTS]


def kreplay_program(dest):
    return static_program(dest / "kreplay", [GUEST / "kreplay.c"], "building kreplay",
                          includes=[GUEST])


def kmemreq_module(kernel, dest):
    """Build kmemreq.ko against the downloaded headers. The amd64 headers' Makefile only
    includes the -common one by its absolute path under /usr/src, which is not installed:
    run the unpacked -common Makefile directly from the amd64 folder instead."""
    ko = dest / "kmemreq.ko"
    if ko.exists():
        return ko
    mod = dest / "module"
    mod.mkdir(exist_ok=True)
    for name in ("kmemreq.c", "kmemreq.h"):
        shutil.copy(GUEST / name, mod / name)
    (mod / "Kbuild").write_text("obj-m := kmemreq.o\n")
    build = kernel["build"]
    common = build.parent / build.name.replace("-amd64", "-common")
    _run(["make", "-f", str(common / "Makefile"), "-C", str(build), f"M={mod}", "modules"],
         "building the kmemreq module")
    shutil.copy(mod / "kmemreq.ko", ko)
    return ko


def _module_closure(kernel, names):
    """The .ko files of `names` and everything they depend on, dependencies first
    (`modinfo -F depends`, as the unpacked tree has no modules.dep)."""
    root = kernel["modules"] / "kernel"
    by_name = {p.name[:-3].replace("-", "_"): p for p in root.rglob("*.ko")}
    order = []

    def visit(name):
        path = by_name.get(name.replace("-", "_"))
        if path is None:
            raise RealKernelError(f"kernel module {name} is not in {root}")
        if path in order:
            return
        try:
            deps = subprocess.run(["modinfo", "-F", "depends", str(path)], check=True,
                                  capture_output=True, text=True).stdout.strip()
        except FileNotFoundError:
            raise RealKernelError("modinfo not found: apt-get install kmod (make system-deps)") \
                from None
        for dep in filter(None, deps.split(",")):
            visit(dep)
        order.append(path)

    for name in names:
        visit(name)
    return order


def busybox():
    path = shutil.which("busybox")
    if path is None or not _is_static(path):
        raise RealKernelError("a static busybox is needed: apt-get install busybox-static "
                              "(make system-deps)")
    return Path(path)


def _is_static(path):
    """No dynamic loader named in the ELF's first page (its PT_INTERP)."""
    return b"ld-linux" not in Path(path).read_bytes()[:4096]


class Cpio:
    """A newc cpio archive, the format the kernel unpacks into its initramfs."""

    def __init__(self):
        self.parts, self.ino, self.dirs = [], 1, set()

    def _entry(self, name, mode, data=b""):
        self.ino += 1
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        head = b"070701" + b"".join(b"%08X" % f for f in fields)
        blob = head + name.encode() + b"\0"
        blob += b"\0" * (-len(blob) % 4) + data
        self.parts.append(blob + b"\0" * (-len(blob) % 4))

    def dir(self, name):
        """The folder and its parents (the kernel does not create missing parents)."""
        parent = name.rpartition("/")[0]
        if parent and parent not in self.dirs:
            self.dir(parent)
        if name not in self.dirs:
            self.dirs.add(name)
            self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name, data, mode=0o755):
        parent = name.rpartition("/")[0]
        if parent:
            self.dir(parent)
        self._entry(name, stat.S_IFREG | mode, data)

    def bytes(self):
        self._entry("TRAILER!!!", 0)
        return b"".join(self.parts)


def initramfs(kernel, out, init_script, files):
    """Write the initramfs: /init (the script), /bin/busybox, /lib/rk/*.ko (GUEST_MODULES
    and their dependencies, their load order in /lib/rk/order), and `files` {guest path:
    host path or bytes}."""
    cpio = Cpio()
    for d in ("bin", "dev", "proc", "sys", "tmp", "mnt", "lib", "lib/rk", "etc"):
        cpio.dir(d)
    cpio.file("init", init_script.encode())
    # test_memcg_sock's client resolves "localhost" (getaddrinfo, from the "files" source)
    cpio.file("etc/hosts", b"127.0.0.1 localhost\n::1 localhost\n", 0o644)
    cpio.file("etc/nsswitch.conf", b"hosts: files\n", 0o644)
    cpio.file("bin/busybox", busybox().read_bytes())
    mods = []
    for ko in _module_closure(kernel, GUEST_MODULES):
        cpio.file(f"lib/rk/{ko.name}", ko.read_bytes(), 0o644)
        mods.append(f"/lib/rk/{ko.name}")
    cpio.file("lib/rk/order", "".join(m + "\n" for m in mods).encode(), 0o644)
    for guest_path, src in files.items():
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        cpio.file(guest_path.lstrip("/"), data)
    out.write_bytes(cpio.bytes())
