"""python -m realkernel selftests | replay SPEC.yaml... (docs/realkernel.md)."""
import argparse
import sys
from pathlib import Path

import yaml

import core
import realkernel
from realkernel import compare
from realkernel.build import SELFTESTS
from realkernel.errors import RealKernelError

MIXES = Path(__file__).resolve().parent.parent / "configs" / "mixes"


def _table(header, rows):
    rows = [tuple("" if v is None else (f"{v:g}" if isinstance(v, float) else str(v)) for v in r)
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _setup(args, spec=None):
    over = {k: v for k, v in (("cpus", args.cpus), ("nodes", args.nodes),
                              ("mem_mib", args.mem_mib), ("timeout_s", args.timeout)) if v}
    return realkernel.setup_for(spec, **over) if spec is not None else realkernel.Setup(**over)


def _header(out, setup):
    uptime, release = (out["boot"] or "? ?").split()[:2]
    print(f"Linux {release} ({out['kernel']}, Debian 12) under qemu/{out['accel']}: {setup.cpus} "
          f"vCPUs, {setup.nodes} NUMA nodes, {setup.mem_mib} MiB; jobs started {uptime} s after "
          f"power-on (guest clock); {out['seconds']:.0f} s wall in all")


def cmd_selftests(args):
    names = args.tests.split(",")
    bad = [n for n in names if n not in SELFTESTS]
    if bad:
        print(f"realkernel: --tests: unknown {', '.join(bad)}; known: {', '.join(SELFTESTS)}",
              file=sys.stderr)
        return 2
    setup = _setup(args)
    out = realkernel.run(setup, selftests=names)
    _header(out, setup)
    model = {} if args.no_model else compare.model_mirror_outcomes(names)
    print(_table(("selftest", "subtest", "Linux 6.1", "model mirror", f"model {compare.MODERN}"),
                 compare.selftest_table(out["selftests"], model)))
    for name, lines in out["selftest_notes"].items():
        print(f"\n{name} printed (the quantities behind a failed check):")
        print("\n".join(f"  {line}" for line in lines))
    return 0


def cmd_replay(args):
    traces = []
    for path in args.spec:
        try:
            spec = yaml.safe_load(open(path))
            if isinstance(spec.get("mix"), str):          # a shipped mix by name
                spec["mix"] = yaml.safe_load(open(MIXES / f"{spec['mix']}.yaml"))
            if args.entries:
                spec.setdefault("length", {})["kernel_entries"] = args.entries
            core.validate_spec(spec)
        except (OSError, yaml.YAMLError, core.SpecError, ValueError) as e:
            print(f"realkernel: {path}: {e}", file=sys.stderr)
            return 2
        traces.append((spec, args.seed))
    setup = _setup(args, traces[0][0])
    out = realkernel.run(setup, traces=traces)
    _header(out, setup)
    for (spec, seed), linux, raw in zip(traces, out["streams"], out["raw"]):
        stream = raw["stream"]
        model, outcomes = compare.model_run(spec, seed, args.design)
        agree, total, lf, mf = compare.request_agreement(stream, raw["results"], outcomes)
        print(f"\n{spec.get('mix', {}).get('name', 'custom')} seed {seed}: {stream.entries} kernel "
              f"entries, {len(stream.requests)} requests, {stream.frees} frees; memory.max "
              f"{spec['cgroup'].get('max', 'max')}, high {spec['cgroup'].get('high', 'max')}")
        print(f"per request: Linux and the model ({args.design}) agree on ok/failed for "
              f"{agree} of {total} (failed: Linux {lf}, model {mf}); task kills on Linux: "
              f"{raw['kills']}")
        rows = [r for r in compare.metric_rows(model, linux)
                if args.all or r[2] != "not observable"]
        print(_table(("metric", f"model {args.design}", "Linux 6.1"), rows))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m realkernel", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("selftests", "replay"):
        s = sub.add_parser(name)
        s.add_argument("--cpus", type=int)
        s.add_argument("--nodes", type=int)
        s.add_argument("--mem-mib", type=int)
        s.add_argument("--timeout", type=float, help="seconds for the whole boot")
        if name == "selftests":
            s.add_argument("--tests", default=",".join(SELFTESTS))
            s.add_argument("--no-model", action="store_true", help="skip the model's mirrors")
        else:
            s.add_argument("spec", nargs="+", help="workload spec YAML (docs/workload-spec.md); "
                           "`mix: NAME` takes configs/mixes/NAME.yaml")
            s.add_argument("--seed", type=int, default=1)
            s.add_argument("--entries", type=int, help="override length.kernel_entries")
            s.add_argument("--design", default=compare.MODERN, choices=core.DESIGNS)
            s.add_argument("--all", action="store_true", help="list unobservable metrics too")
    args = p.parse_args(argv)
    try:
        return (cmd_selftests if args.cmd == "selftests" else cmd_replay)(args)
    except RealKernelError as e:
        print(f"realkernel: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
