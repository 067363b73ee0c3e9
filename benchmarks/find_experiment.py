"""The §6.1 `find /` experiment at full size (docs/model.md). Run:
PYTHONPATH=. .venv/bin/python benchmarks/find_experiment.py"""
import core

for design in core.DESIGNS:
    m = core.Machine(nodes=1, mem_mib=1024, cpus=16, design=design)
    m.mkdir("/a")
    m.write("/a", "memory.high", "32M")
    t = m.spawn("/a")
    with t.syscall():
        t.create_dentries(1)
    t.read_file(16 << 20)
    for _ in range(400):
        with t.syscall():
            for _ in range(10):
                t.create_dentries(100)
    mt = m.metrics()
    print(f"{design}: peak over high {mt['overshoot_high_peak_pages'] * 4:.0f} KiB, "
          f"at syscall exit {mt['overshoot_high_syscall_peak_pages'] * 4:.0f} KiB, "
          f"events {m.events('/a')}")
