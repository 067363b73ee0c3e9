"""Config errors: every class names the YAML path and what is allowed, exits 2, starts nothing.

All cases run through the real ``sweep.cli.main`` in ONE fresh Python process (cheap), which
then reports whether Ray (or the runner) was ever imported and whether any child process was
spawned.  One more case runs the real ``python -m sweep`` command line with its own, empty
Ray temp folder, which must still be empty afterwards.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import yaml

import core
from sweep import config
from sweep_helpers import REPO, SMALL, cli_env, run_cli, write_config

MIXES = sorted(p.stem for p in (REPO / "configs" / "mixes").glob("*.yaml"))

# name: (changes to the YAML, extra CLI args, message prefix, substrings the message must contain)
CASES = {
    "unknown top-level key": ({"replicatons": 3}, [], "replicatons:",
                              ["did you mean 'replications'", "allowed: name, seed"]),
    "unknown nested key": ({"grid": {"nodez": [1]}}, [], "grid.nodez:",
                           ["in grid (did you mean 'nodes'?)", "allowed: limit, high, order, nodes, mix"]),
    "unknown key in an override": ({}, ["ray.chunk_second=1"], "ray.chunk_second:", ["'chunk_seconds'"]),
    "wrong type": ({"replications": "many"}, [], "replications:", ["expected an integer", "'many'"]),
    "wrong type in a list": ({}, ["grid.nodes=[1,two]"], "grid.nodes[1]:", ["expected an integer", "'two'"]),
    "section given as a scalar": ({"ray": 3}, [], "ray:", ["must be a section", "chunk_seconds", "max_retries"]),
    "null where a value is needed": ({}, ["replications=null"], "replications:", ["must not be null"]),
    "out of range (sweep key)": ({"replications": 0}, [], "replications:", ["1..100000", "got 0"]),
    "out of range (float)": ({}, ["ray.chunk_seconds=0"], "ray.chunk_seconds:", ["(0, 3600]"]),
    "out of range (checked by core)": ({}, ["grid.nodes=[1,64]"], "grid.nodes[1]:", ["64"]),
    "bad size (checked by core)": ({"grid": {"limit": ["64M", "lots"]}}, [], "grid.limit[1]:", ["lots"]),
    "bad ratio (checked by core)": ({"grid": {"high": 1.5}}, [], "grid.high:", ["1.5"]),
    "bad pinned workload value": ({"workload": {"tasks": -1}}, [], "workload.tasks:", ["-1"]),
    "unknown pinned workload key": ({"workload": {"machine": {"mem_mb": 512}}}, [],
                                    "workload.machine.mem_mb:", ["did you mean 'mem_mib'", "allowed: "]),
    "axis field pinned in workload": ({"workload": {"machine": {"nodes": 2}}}, [],
                                      "workload.machine.nodes:", ["set by grid.nodes"]),
    "unknown mix": ({}, ["grid.mix=[kernel,kernal]"], "grid.mix[1]:",
                    ["unknown mix 'kernal'", "did you mean 'kernel'",
                     "allowed: " + ", ".join(sorted([*MIXES, "badgfp"]))]),
    "bad request in a mix file": ({}, ["grid.mix=[kernel,badgfp]"], "grid.mix[1] (mix 'badgfp') requests[0].gfp:",
                                  ["GFP_KERNAL", "GFP_KERNEL"]),
    "unknown design": ({"designs": ["way1", "way3"]}, [], "designs[1]:",
                       ["unknown design 'way3'", "allowed: " + ", ".join(core.DESIGNS)]),
    "duplicate axis value": ({}, ["grid.nodes=[1,1]"], "grid.nodes[1]:", ["listed twice"]),
    "unknown correction": ({}, ["stats.correction=bonferoni"], "stats.correction:", ["allowed: holm, bh, fdr_bh"]),
    "max below replications": ({}, ["stats.max_replications=1"], "stats.max_replications:", ["2..100000"]),
    "name unfit for a folder": ({"name": "a/b"}, [], "name:", ["letters, digits"]),
    "override without =": ({}, ["replications"], "replications:", ["key=value"]),
    "bad shard": ({}, ["--shard", "3/2"], "--shard:", ["0 <= i < N"]),
    "unknown key in a block": ({"blocks": [{"name": "a", "grdi": {}}]}, [], "blocks[0].grdi:",
                               ["did you mean 'grid'", "allowed: name, grid, workload"]),
    "bad axis value in a block": ({"blocks": [{"name": "a"}, {"name": "b", "grid": {"limit": ["lots"]}}]}, [],
                                  "blocks[1].grid.limit[0]:", ["lots"]),
    "bad pinned value in a block": ({"blocks": [{"name": "a", "workload": {"tasks": 0}}]}, [],
                                    "blocks[0].workload.tasks:", ["1..256"]),
    "duplicate block name": ({"blocks": [{"name": "a"}, {"name": "a"}]}, [], "blocks[1].name:",
                             ["used by blocks[0]"]),
    "unknown allocator axis value": ({"grid": {"allocator": ["slob"]}}, [], "grid.allocator[0]:",
                                     ["slub, slab"]),
    "num_cpus with a cluster address": ({}, ["ray.address=127.0.0.1:6379", "ray.num_cpus=2"],
                                        "ray.num_cpus:", ["only for a local Ray"]),
    "not a boolean": ({}, ["tracking.enabled=abc"], "tracking.enabled:", ["expected true or false", "'abc'"]),
    "malformed list override": ({}, ["grid.nodes=[1,"], "grid.nodes:", ["cannot read the value '[1,'",
                                                                      "grid.nodes=[1,2]"]),
    "key overridden twice": ({}, ["replications=3", "replications=4"], "replications:",
                             ["overridden twice (replications=3 and replications=4)", "give each key once"]),
    "section and its key overridden": ({}, ["ray={chunk_seconds: 1}", "ray.max_retries=1"], "ray.max_retries:",
                                       ["overridden twice"]),
    "plan too big for one driver": ({}, ["replications=100000"], "replications:",
                                    ["100000 x 24 cells x 3 designs = 7,200,000 workloads", "--shard i/N"]),
    "output.dir is unwritable": ({"output": {"dir": "/proc/kmemcg-sweep-test"}}, [], "output.dir:",
                                 ["cannot write in /proc", "allowed: a path under a writable folder"]),
}

# cases that need files: name -> (argv after the config, message prefix, substrings)
FILE_CASES = {
    "output.dir is a file": (["output.dir={folder}/afile"], "output.dir:", ["afile is an existing file"]),
    "output.dir under a file": (["output.dir={folder}/afile/sub"], "output.dir:",
                                ["afile is a file, so no folder can be made under it"]),
    "damaged store (garbage)": (["output.dir={folder}/garbage"], "{folder}/garbage/results.sqlite:",
                                ["the results store is damaged (file is not a database)", "--fresh", ".dump"]),
    "damaged store (truncated)": (["output.dir={folder}/truncated"], "{folder}/truncated/results.sqlite:",
                                  ["the results store is damaged", "--fresh"]),
    "damaged store in report": (["report", "{folder}/garbage"], "{folder}/garbage/results.sqlite:",
                                ["the results store is damaged"]),
}

BATCH = textwrap.dedent("""
    import contextlib, io, json, os, sys
    from pathlib import Path
    from sweep.cli import main
    out = {}
    for name, argv in json.load(open(sys.argv[1])).items():
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            out[name] = {"rc": main(argv), "stderr": err.getvalue()}
    children = [p.name for p in Path("/proc").iterdir() if p.name.isdigit()
                and (p / "stat").exists() and (p / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(os.getpid())]
    out["_process"] = {"ray": "ray" in sys.modules, "runner": "sweep.runner" in sys.modules, "children": children}
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("config-errors")
    argvs = {}
    for i, (name, (changes, args, _, _)) in enumerate(CASES.items()):
        path = write_config(folder, changes, name=f"case{i}.yaml")
        argvs[name] = [str(path), *args]
    (folder / "mixes" / "badgfp.yaml").write_text(
        "name: badgfp\nrequests:\n  - {kind: kmalloc, weight: 1, gfp: GFP_KERNAL, size: {min: 8, max: 64}}\n")
    (folder / "broken.yaml").write_text("grid: [1, 2\n")
    (folder / "list.yaml").write_text("- 1\n- 2\n")
    _damaged_stores(folder)
    (folder / "afile").write_text("not a folder")
    for name, (args, _, _) in FILE_CASES.items():
        config_path = [] if args[0] == "report" else [str(write_config(folder, name=f"{name}.yaml"))]
        argvs[name] = [*config_path, *(a.format(folder=folder) for a in args)]
    (folder / "empty.yaml").write_text("# nothing but a comment\n")
    argvs["empty file"] = [str(folder / "empty.yaml")]
    argvs["YAML syntax error"] = [str(folder / "broken.yaml")]
    argvs["top level not a mapping"] = [str(folder / "list.yaml")]
    argvs["missing file"] = [str(folder / "nope.yaml")]
    (folder / "cases.json").write_text(json.dumps(argvs))
    done = subprocess.run([sys.executable, "-c", BATCH, str(folder / "cases.json")], cwd=folder, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["_output_exists"] = (folder / "out").exists()
    result["_folder"] = str(folder)
    return result


def _damaged_stores(folder):
    """A store overwritten with garbage, and one cut short after its first 32 kB."""
    from sweep.store import Store

    (folder / "garbage").mkdir()
    (folder / "garbage" / "results.sqlite").write_bytes(b"\x17garbage" * 512)
    (folder / "truncated").mkdir()
    whole = folder / "truncated" / "whole.sqlite"
    with Store(whole) as store:
        store.put([{"key": f"k{i}", "status": "ok", "cell_id": "c", "design": "way1", "replication": i,
                    "seed": i, "error": "x" * 200} for i in range(2000)])
    (folder / "truncated" / "results.sqlite").write_bytes(whole.read_bytes()[:32768])


@pytest.mark.parametrize("name", list(CASES))
def test_config_error_names_the_path_and_what_is_allowed(outcomes, name):
    _, _, prefix, needles = CASES[name]
    rc, stderr = outcomes[name]["rc"], outcomes[name]["stderr"]
    assert rc == 2, stderr
    message = stderr.strip().splitlines()[-1]
    assert message.startswith(f"config error: {prefix}"), message
    for needle in needles:
        assert needle in message, f"{needle!r} missing from: {message}"


@pytest.mark.parametrize("name", list(FILE_CASES))
def test_bad_output_folders_and_damaged_stores_are_refused(outcomes, name):
    _, prefix, needles = FILE_CASES[name]
    rc, stderr = outcomes[name]["rc"], outcomes[name]["stderr"]
    assert rc == 2, stderr
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("config error: " + prefix.format(folder=outcomes["_folder"])), message
    for needle in needles:
        assert needle in message, f"{needle!r} missing from: {message}"
    assert "safe" not in message      # nothing calls a damaged store safe


@pytest.mark.parametrize("name, needle", [("YAML syntax error", "not valid YAML"),
                                          ("empty file", "the file is empty"),
                                          ("top level not a mapping", "must be a mapping"),
                                          ("missing file", "cannot read config file")])
def test_unreadable_config_files(outcomes, name, needle):
    assert outcomes[name]["rc"] == 2
    assert needle in outcomes[name]["stderr"]


def test_config_errors_start_nothing(outcomes):
    assert outcomes["_process"] == {"ray": False, "runner": False, "children": []}
    assert not outcomes["_output_exists"], "a config error must not create the sweep folder"


def test_the_real_command_line_exits_2_before_ray(tmp_path):
    path = write_config(tmp_path, {"grid": {"mix": ["kernel", "nope"]}})
    ray_tmp = tmp_path / "ray-tmp"
    ray_tmp.mkdir()
    done = run_cli([path, "replications=3"], cwd=tmp_path, timeout=60, RAY_TMPDIR=str(ray_tmp))
    assert done.returncode == 2
    assert "config error: grid.mix[1]: unknown mix 'nope'" in done.stderr
    assert list(ray_tmp.iterdir()) == [], "Ray wrote session files: it was started"
    assert not (tmp_path / "out").exists()


def test_valid_config_resolves_defaults_and_keeps_overrides(tmp_path):
    path = write_config(tmp_path, {"stats": {"min_replications": 3}})
    cfg = config.load(path, ["grid.nodes=2", "workload.tasks=3", "replications=4"])
    assert list(cfg.grid.nodes) == [2]                  # a scalar override is a one-value axis
    assert cfg.workload.tasks == 3 and cfg.workload.machine.mem_mib == SMALL["workload"]["machine"]["mem_mib"]
    assert cfg.stats.min_replications == 3
    assert cfg.stats.max_replications == 4              # no adaptive rounds unless asked
    assert not config.is_adaptive(cfg)
    assert cfg.output.dir == str(tmp_path / "out")
    again = config.from_yaml_file(_written(tmp_path, cfg))
    assert again == cfg                                 # config.yaml of a sweep reloads identically


def _written(folder, cfg):
    path = folder / "resolved.yaml"
    path.write_text(config.to_yaml(cfg))
    assert yaml.safe_load(path.read_text())["grid"]["nodes"] == [2]
    return path
