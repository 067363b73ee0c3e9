"""Getting Debian 12's Linux 6.1: the kernel image, the headers to build a module against,
and the memcg selftests' sources - fetched with `apt-get download` into a cache outside
the repository and unpacked with `dpkg -x`, never installed into the host.

The ABI (e.g. 6.1.0-57) changes with Debian point releases, so it is resolved at run time
from the `linux-image-amd64` metapackage; image and headers must carry the same version.
"""
import os
import re
import subprocess
from pathlib import Path

from realkernel.errors import RealKernelError

CACHE_ENV = "KMEMCG_SWEEP_CACHE"
# the selftests' sources, and what they include (cgroup_util.h includes ../kselftest.h,
# cgroup_util.c ../clone3/clone3_selftests.h)
SELFTEST_PATHS = ("tools/testing/selftests/cgroup", "tools/testing/selftests/kselftest.h",
                  "tools/testing/selftests/clone3/clone3_selftests.h")


def cache_dir():
    """Where downloads and builds live: $KMEMCG_SWEEP_CACHE, else ~/.cache/kmemcg-sweep."""
    path = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "kmemcg-sweep")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(cmd, what, **kw):
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout
    except FileNotFoundError:
        raise RealKernelError(f"{what}: {cmd[0]} not found (needs Debian's apt and dpkg)") from None
    except subprocess.CalledProcessError as e:
        last = (e.stderr or e.stdout or "").strip().splitlines()
        raise RealKernelError(f"{what} failed: {last[-1] if last else 'exit %d' % e.returncode}") \
            from None


def resolve_abi():
    """The current kernel ABI of Debian 12's amd64 flavour, e.g. '6.1.0-57'. Runs
    `apt-get update` once if apt knows no linux-image-amd64 yet."""
    for attempt in (0, 1):
        try:
            out = _run(["apt-cache", "depends", "linux-image-amd64"], "apt-cache depends")
        except RealKernelError:
            out = ""
        m = re.search(r"Depends: linux-image-(\d+\.\d+\.\d+-\d+)-amd64\b", out)
        if m:
            return m.group(1)
        if attempt == 0:
            _run(["apt-get", "update", "-qq"], "apt-get update")
    raise RealKernelError("apt knows no linux-image-amd64: is this Debian 12 with main enabled?")


def package_names(abi):
    return {"image": f"linux-image-{abi}-amd64", "headers": f"linux-headers-{abi}-amd64",
            "common": f"linux-headers-{abi}-common", "kbuild": "linux-kbuild-6.1",
            "source": "linux-source-6.1"}


def _download(name, debs):
    """The .deb of package `name` in `debs`, downloaded unless already there."""
    have = sorted(debs.glob(f"{name}_*.deb"))
    if have:
        return have[-1]
    _run(["apt-get", "download", "-q", name], f"download of {name}", cwd=debs)
    have = sorted(debs.glob(f"{name}_*.deb"))
    if not have:
        raise RealKernelError(f"download of {name} refused: no .deb arrived in {debs}")
    return have[-1]


def deb_version(deb):
    return _run(["dpkg-deb", "-f", str(deb), "Version"], f"reading {deb.name}").strip()


def check_versions(image_deb, headers_deb):
    """Image and headers must be the very same build: a module built against other headers
    is refused by the kernel (vermagic, symbol CRCs)."""
    vi, vh = deb_version(image_deb), deb_version(headers_deb)
    if vi != vh:
        raise RealKernelError(f"ABI mismatch: {image_deb.name} is {vi} but {headers_deb.name} "
                              f"is {vh}; remove the stale .deb from {image_deb.parent}")
    return vi


def _unpack(deb, dest):
    stamp = dest / f".{deb.name}.unpacked"
    if not stamp.exists():
        _run(["dpkg-deb", "-x", str(deb), str(dest)], f"unpacking {deb.name}")
        stamp.touch()


def _unpack_selftests(deb, dest):
    """Only the cgroup selftests of the 139 MB source package: the tarball inside the .deb is
    streamed through tar, which keeps just SELFTEST_PATHS."""
    stamp = dest / f".{deb.name}.selftests-{len(SELFTEST_PATHS)}"
    if stamp.exists():
        return
    inner = "./usr/src/linux-source-6.1.tar.xz"
    paths = [f"linux-source-6.1/{p}" for p in SELFTEST_PATHS]
    cmd = (f"dpkg-deb --fsys-tarfile '{deb}' | tar -xO '{inner}' | "
           f"tar -xJ -C '{dest}' {' '.join(paths)}")
    _run(["bash", "-o", "pipefail", "-c", cmd], f"extracting the selftests from {deb.name}")
    stamp.touch()


def fetch(abi=None):
    """Download (once) and unpack everything; returns a dict of paths:
    vmlinuz, modules (lib/modules/<release>), build (the amd64 headers), selftests, version."""
    root = cache_dir()
    abi = abi or resolve_abi()
    debs = root / "debs"
    debs.mkdir(exist_ok=True)
    names = package_names(abi)
    got = {key: _download(name, debs) for key, name in names.items()}
    version = check_versions(got["image"], got["headers"])
    tree = root / f"linux-{version}"
    tree.mkdir(exist_ok=True)
    for key in ("image", "headers", "common", "kbuild"):
        _unpack(got[key], tree)
    _unpack_selftests(got["source"], tree)
    release = f"{abi}-amd64"
    return {"version": version, "release": release, "tree": tree,
            "vmlinuz": tree / "boot" / f"vmlinuz-{release}",
            "modules": tree / "lib" / "modules" / release,
            "build": tree / "usr" / "src" / f"linux-headers-{release}",
            "selftests": tree / "linux-source-6.1" / "tools" / "testing" / "selftests"}
