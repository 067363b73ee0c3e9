"""Booting the kernel under qemu: hardware KVM where /dev/kvm can run a stock kernel, else
TCG; vCPUs, memory and NUMA nodes as asked; the guest's results come back as tagged lines
("@@RK key value...") on the serial console. A hard timeout, a kernel panic or qemu dying
each end the boot with one RealKernelError line - never a hang."""
import dataclasses
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

from realkernel.errors import RealKernelError

QEMU = "qemu-system-x86_64"
TAG = "@@RK "
PANIC_RE = re.compile(r"Kernel panic - not syncing: (.*)")
ACCEL_ENV = "REALKERNEL_ACCEL"          # kvm | tcg: skip the detection


@dataclasses.dataclass(frozen=True)
class Setup:
    """The guest machine: like core.Machine's nodes/mem_mib/cpus. `timeout_s` bounds one
    boot from qemu's start to its exit."""
    cpus: int = 2
    mem_mib: int = 2048
    nodes: int = 2
    timeout_s: float = 600.0
    ramdisk_mib: int = 256              # the brd disk holding the guest's ext2 filesystem

    def __post_init__(self):
        if not (1 <= self.nodes <= self.cpus and 1 <= self.cpus <= 64):
            raise RealKernelError(f"setup: need 1 <= nodes <= cpus <= 64, got nodes={self.nodes} "
                                  f"cpus={self.cpus}")
        if self.mem_mib < 256 * self.nodes:
            raise RealKernelError(f"setup: mem_mib must be at least 256 per node, "
                                  f"got {self.mem_mib}")


def kvm_usable():
    """(usable, why). /dev/kvm must be openable and the CPU must have vmx or svm: on a nested
    hypervisor without them (the kvm_pvm machines here) /dev/kvm exists but a stock kernel
    dies in its decompressor or with 'KVM internal error: emulation failure'."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "no usable /dev/kvm"
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        flags = ""
    if not re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M):
        return False, ("/dev/kvm is a nested hypervisor without vmx/svm and cannot run a stock "
                       "kernel")
    return True, "hardware virtualization (vmx/svm) and /dev/kvm"


def choose_accel(log=print):
    forced = os.environ.get(ACCEL_ENV)
    if forced:
        if forced not in ("kvm", "tcg"):
            raise RealKernelError(f"{ACCEL_ENV}: must be kvm or tcg, got {forced!r}")
        return forced
    ok, why = kvm_usable()
    if not ok:
        log(f"realkernel: {why}; using TCG (software emulation, much slower)")
    return "kvm" if ok else "tcg"


def _node_cpus(setup):
    """CPUs of each node: contiguous blocks, node of CPU i = i * nodes // cpus - the mapping
    the model's task_new() uses."""
    per = [[] for _ in range(setup.nodes)]
    for cpu in range(setup.cpus):
        per[cpu * setup.nodes // setup.cpus].append(cpu)
    return per


def find_qemu():
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise RealKernelError(f"{QEMU} not found on PATH: apt-get install qemu-system-x86 "
                              "(make system-deps)")
    return qemu


def qemu_command(setup, kernel, initrd, accel, append=""):
    qemu = find_qemu()
    if accel == "kvm":
        cmd = [qemu, "-accel", "kvm", "-cpu", "host"]
    else:
        cmd = [qemu, "-accel", "tcg,thread=multi", "-cpu", "max"]
    sockets = setup.nodes if setup.cpus % setup.nodes == 0 else 1
    cmd += ["-smp", f"{setup.cpus},sockets={sockets}", "-m", f"{setup.mem_mib}M"]
    sizes = [setup.mem_mib // setup.nodes] * setup.nodes
    sizes[-1] += setup.mem_mib - sum(sizes)
    for node, (cpus, size) in enumerate(zip(_node_cpus(setup), sizes)):
        cmd += ["-object", f"memory-backend-ram,id=m{node},size={size}M",
                "-numa", f"node,nodeid={node},cpus={cpus[0]}-{cpus[-1]},memdev=m{node}"]
    cmdline = f"console=ttyS0 panic=-1 quiet loglevel=1 rdinit=/init {append}".strip()
    cmd += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
            "-display", "none", "-serial", "stdio", "-no-reboot", "-nodefaults"]
    return cmd


@dataclasses.dataclass
class Console:
    """What a boot printed: the tagged lines as (key, rest) in order, and every line."""
    tagged: list
    lines: list
    seconds: float

    def values(self, key):
        return [rest for k, rest in self.tagged if k == key]

    def value(self, key, default=None):
        vals = self.values(key)
        return vals[-1] if vals else default


def boot(cmd, timeout_s, echo=False):
    """Run qemu until the guest says "@@RK done" and powers off. Raises RealKernelError
    (one line) on a timeout, a kernel panic, a guest error line or qemu exiting early."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as e:
        raise RealKernelError(f"cannot start {cmd[0]}: {e.strerror}") from None
    lines_q = queue.Queue()

    def reader():
        for raw in proc.stdout:
            lines_q.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        lines_q.put(None)

    threading.Thread(target=reader, daemon=True).start()
    lines, tagged, panic, done = [], [], None, False

    def partial():      # what the guest said so far: a boot that ends early keeps it
        return Console(tagged, lines, time.monotonic() - start)

    try:
        while True:
            left = timeout_s - (time.monotonic() - start)
            if left <= 0:
                raise RealKernelError(f"guest timed out after {timeout_s:.0f} s "
                                      f"(last line: {_last(lines)!r})", partial())
            try:
                line = lines_q.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line is None:
                break
            lines.append(line)
            if echo:
                print(line, file=sys.stderr)
            m = PANIC_RE.search(line)
            if m and panic is None:
                panic = m.group(1).strip()
            pos = line.find(TAG)
            if pos >= 0:
                key, _, rest = line[pos + len(TAG):].partition(" ")
                if key == "error":
                    raise RealKernelError(f"guest: {rest}", partial())
                tagged.append((key, rest))
                done = done or key == "done"
        proc.wait(timeout=max(1.0, timeout_s - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
        raise RealKernelError(f"qemu did not exit within {timeout_s:.0f} s", partial()) from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if panic is not None:
        raise RealKernelError(f"kernel panic: {panic}", partial())
    if not done:
        raise RealKernelError(f"qemu exited ({proc.returncode}) before the guest finished "
                              f"(last line: {_last(lines)!r})", partial())
    return Console(tagged, lines, time.monotonic() - start)


def _last(lines):
    return next((ln for ln in reversed(lines) if ln.strip()), "")
