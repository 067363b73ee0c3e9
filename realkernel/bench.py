"""One boot of the real kernel: the init script, the jobs it runs (selftests, streams), and
the parsing of their tagged console lines."""
import re
import tempfile
from pathlib import Path

from realkernel import build, qemu
from realkernel.errors import RealKernelError
from realkernel.fetch import fetch
from realkernel.stream import parse_results

# Stage 1 (the initramfs) loads the modules, makes an ext2 filesystem on a brd RAM disk and
# switches root to it; stage 2 runs the jobs there. The root must be a real filesystem:
# the initramfs (ramfs) keeps no negative dentries, which test_kmem_basic counts in "/".
INIT = r"""#!/bin/busybox sh
export PATH=/bin
if [ "$1" != stage2 ]; then
  /bin/busybox --install -s /bin
  mount -t proc proc /proc
  mount -t sysfs sysfs /sys
  mount -t devtmpfs devtmpfs /dev
  for m in $(cat /lib/rk/order); do
    case $m in
      */brd.ko) insmod $m rd_nr=1 rd_size={rd_kib} ;;
      *) insmod $m ;;
    esac || {{ echo "@@RK error insmod $m failed"; poweroff -f; }}
  done
  mke2fs -q /dev/ram0 >/dev/null || echo "@@RK error mke2fs /dev/ram0 failed"
  mount -t ext2 /dev/ram0 /mnt 2>&1 || {{ echo "@@RK error mounting ext2 on /dev/ram0 failed"; poweroff -f; }}
  mkdir -p /mnt/proc /mnt/sys /mnt/dev /mnt/tmp /mnt/neg
  cp -a /bin /lib /etc /init /mnt/
  [ -d /streams ] && cp -a /streams /mnt/
  for d in proc sys dev; do mount --move /$d /mnt/$d; done
  exec switch_root /mnt /init stage2
fi
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up                       # test_memcg_sock talks to itself over TCP
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
echo "@@RK boot $(cut -d' ' -f1 /proc/uptime) $(uname -r) cpus=$(nproc) nodes=$(ls -d /sys/devices/system/node/node* | wc -l)"
cd /
{job}
echo "@@RK done"
poweroff -f
"""

SELFTEST_JOB = """echo "@@RK selftest_begin {name}"
/bin/{name} 2>&1 | sed 's/^/@@RK st {name} /'
echo "@@RK selftest_end {name}"
"""

# a workload cgroup per stream; the data file for page-cache reads is written from the root
# cgroup and dropped from the page cache, so the workload's reads charge it anew
STREAM_JOB = """echo "@@RK stream_begin {i}"
for c in w{i} s{i}; do mkdir /sys/fs/cgroup/$c; echo 0 > /sys/fs/cgroup/$c/memory.swap.max 2>/dev/null; done
{controls}
dd if=/dev/zero of=/data{i} bs=64k count={data_chunks} 2>/dev/null
sync; echo 3 > /proc/sys/vm/drop_caches
/bin/kreplay /streams/{i} /data{i} {cgroups}
for c in w{i} s{i}; do
  for f in memory.current memory.peak; do echo "@@RK cg $c $f $(cat /sys/fs/cgroup/$c/$f)"; done
  sed "s/^/@@RK cg $c events /" /sys/fs/cgroup/$c/memory.events
  sed "s/^/@@RK cg $c stat /" /sys/fs/cgroup/$c/memory.stat
done
rm -f /data{i}
echo "@@RK stream_end {i}"
"""

# kselftest TAP: "ok 3 test_x", "not ok 4 test_y", "ok 5 # SKIP test_z" (ksft_test_result_skip)
TAP_RE = re.compile(r"^(not ok|ok) \d+ (?:# (SKIP|XFAIL) )?(\S+)")


def _cg_value(value):
    return "max" if value in (None, "max") else str(value)


def _controls(i, stream):
    """The cgroup files of a workload, as the model's build_workload_machine writes them."""
    cg = stream.spec["cgroup"]
    lines = []
    for key in ("low", "high", "max"):
        value = cg[key]
        lines.append(f"echo {_cg_value(value)} > /sys/fs/cgroup/w{i}/memory.{key}")
    sib = stream.spec["sibling"]
    if sib["tasks"]:
        lines.append(f"echo {_cg_value(sib['max'])} > "
                     f"/sys/fs/cgroup/s{i}/memory.max")
    return "\n".join(lines)


def run_boot(setup, selftests=(), streams=(), log=print, append="", echo=False, init=None):
    """Boot once; run the named selftests, then the streams (realkernel.stream.Stream).
    Returns {"boot": ..., "seconds": ..., "accel": ..., "selftests": {name: [(subtest,
    outcome)]}, "streams": [{"results": [(status, usage)], "cgroups": {...}}]}.
    `init` replaces the whole init script (the error-path tests use it)."""
    qemu.find_qemu()                    # before any download: no qemu, no point
    kernel = fetch()
    accel = qemu.choose_accel(log)
    out_dir = build.build_dir(kernel)
    files = {}
    jobs = []
    for name in selftests:
        if name not in build.SELFTESTS:
            raise RealKernelError(f"unknown selftest {name!r}; known: {', '.join(build.SELFTESTS)}")
    if selftests:
        for prog in build.selftest_programs(kernel, out_dir):
            if prog.name in selftests:
                files[f"bin/{prog.name}"] = prog
        jobs += [SELFTEST_JOB.format(name=name) for name in selftests]
    if streams:
        files["bin/kreplay"] = build.kreplay_program(out_dir)
        files["lib/rk-extra/kmemreq.ko"] = build.kmemreq_module(kernel, out_dir)
        jobs.append("insmod /lib/rk-extra/kmemreq.ko || echo '@@RK error insmod kmemreq failed'")
        data_cap = (setup.ramdisk_mib - 64) * 256
        for i, stream in enumerate(streams):
            files[f"streams/{i}"] = stream.data
            data_pages = max(16, min(stream.read_pages, data_cap))
            cgroups = " ".join(f"/sys/fs/cgroup/{'w' if t < stream.spec['tasks'] else 's'}{i}"
                               for t in range(stream.nr_tasks))
            jobs.append(STREAM_JOB.format(i=i, controls=_controls(i, stream), cgroups=cgroups,
                                          data_chunks=(data_pages + 15) // 16))
    script = init if init is not None else INIT.format(rd_kib=setup.ramdisk_mib * 1024,
                                                       job="\n".join(jobs))
    with tempfile.TemporaryDirectory(prefix="realkernel-") as tmp:
        initrd = Path(tmp) / "initramfs.cpio"
        build.initramfs(kernel, initrd, script, files)
        cmd = qemu.qemu_command(setup, kernel["vmlinuz"], initrd, accel, append)
        try:
            console = qemu.boot(cmd, setup.timeout_s, echo=echo)
        except RealKernelError as err:      # keep the streams the guest finished before
            err.kernel = kernel["version"]
            if err.partial is not None:
                err.finished = finished_streams(err.partial)
            raise
    return {"kernel": kernel["version"], "accel": accel, "seconds": console.seconds,
            "boot": console.value("boot"), "console": console,
            "selftests": _selftest_results(console), "selftest_notes": _selftest_notes(console),
            "streams": _stream_results(console)}


def _selftest_results(console):
    """{selftest: [(subtest, "pass" | "fail" | "skip" | ...)]} from the kselftest TAP lines."""
    out = {}
    for rest in console.values("selftest_begin"):
        out[rest.strip()] = []
    for rest in console.values("st"):
        name, _, line = rest.partition(" ")
        m = TAP_RE.match(line)
        if m and name in out:
            outcome = "pass" if m.group(1) == "ok" else "fail"
            out[name].append((m.group(3), m.group(2).lower() if m.group(2) else outcome))
    return out


def _selftest_notes(console):
    """{selftest: [line]}: what the selftests printed besides their TAP results - the
    quantities they computed, which they print when a check fails."""
    out = {}
    for rest in console.values("st"):
        name, _, line = rest.partition(" ")
        if not TAP_RE.match(line) and not line.startswith(("TAP version", "1..", "# Totals")):
            out.setdefault(name, []).append(line)
    return out


def finished_streams(console):
    """The results of the streams a boot that ended early had finished (they run in order,
    so a prefix): each printed its stream_end line after its cgroup files."""
    return [s for s in _stream_results(console) if s.pop("ended")]


def _stream_results(console):
    """Per stream: the request results (hex lines between stream_begin/end) and the files
    of its cgroups."""
    streams, cur = [], None
    for key, rest in console.tagged:
        if key == "stream_begin":
            cur = {"hex": [], "cgroups": {}, "kills": 0, "ended": False}
            streams.append(cur)
        elif cur is None:
            continue
        elif key == "stream_end":
            cur["ended"] = True
        elif key == "r":
            cur["hex"].append(rest.strip())
        elif key == "replay_task_kills":
            cur["kills"] = int(rest)
        elif key == "cg":
            cg, _, rest = rest.partition(" ")
            files = cur["cgroups"].setdefault(cg, {"events": {}, "stat": {}})
            what, _, rest = rest.partition(" ")
            if what in ("events", "stat"):
                k, _, v = rest.partition(" ")
                files[what][k] = int(v)
            else:
                files[what] = int(rest)
    for s in streams:
        s["results"] = parse_results(s.pop("hex"))
    return streams      # "ended": the guest printed the stream's last line (stream_end)
