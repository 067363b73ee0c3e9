"""Load and check a sweep config: YAML + ``key=value`` overrides against a dataclass schema.

Every problem becomes a :class:`ConfigError` whose message starts with the YAML path of the
bad value and says what is allowed, so the CLI can print it and exit 2 before anything
starts.  Workload-spec fields are checked later by ``core.validate_spec`` (see
``sweep.grid``); this module checks the sweep's own keys and finds the GFP mixes.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Dict, List, Optional

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# multiple-testing corrections: config name -> statsmodels ``multipletests`` method
CORRECTIONS = {"holm": "holm", "bh": "fdr_bh", "fdr_bh": "fdr_bh"}
# The grid axes, declared here only.  Every cell has a value of each required axis; an
# optional one a config may leave unset (null): the value then comes from `workload` or
# the spec default.  `high` alone may be a scalar (a ratio of the limit); the others are lists.
REQUIRED_AXES = ("limit", "high", "order", "nodes", "mix")
OPTIONAL_AXES = ("allocator", "cpus", "fragment")
GRID_AXES = REQUIRED_AXES + OPTIONAL_AXES
LIST_AXES = tuple(axis for axis in GRID_AXES if axis != "high")
# a cell's axis columns in the results store: the grid axes and the name of its block
CELL_AXES = (*REQUIRED_AXES, "block", *OPTIONAL_AXES)
BLOCK_KEYS = ("name", "grid", "workload")
# workload-spec field each optional axis sets
OPTIONAL_AXIS_FIELDS = {("machine", "allocator"): "allocator", ("machine", "cpus"): "cpus",
                        ("background", "fragment"): "fragment"}


# Design rows that are a real kernel, not the model: row name -> the model row of the same
# kernel.  Such a row runs each workload's request stream on that kernel under qemu
# (realkernel/, through sweep.worker); its specs are checked as the model row's.  Debian's
# 6.1 is built with SLUB only; realkernel.setup_for gives the guest max(1 GiB, mem_mib) and
# realkernel.Setup wants at most 64 vCPUs and 256 MiB per NUMA node.
KERNEL_ROWS = {"linux-6.1": "v6.1"}
KERNEL_ALLOCATORS = {"linux-6.1": ("slub",)}
GUEST_MAX_CPUS, GUEST_MIN_MIB, GUEST_MIB_PER_NODE = 64, 1024, 256


def is_kernel_row(design: str) -> bool:
    return design in KERNEL_ROWS


def model_row(design: str) -> str:
    """The model design whose spec checks apply to ``design`` (itself for a model row)."""
    return KERNEL_ROWS.get(design, design)


def kernel_row_error(design: str, machine: Mapping) -> str | None:
    """Why a real-kernel row cannot run a cell of this (validated) machine, or None."""
    if not is_kernel_row(design):
        return None
    allocator, nodes, cpus = machine["allocator"], int(machine["nodes"]), int(machine["cpus"])
    if allocator not in KERNEL_ALLOCATORS[design]:
        return (f"{design} is a real kernel built with {', '.join(KERNEL_ALLOCATORS[design])} only "
                f"(no {allocator})")
    if cpus > GUEST_MAX_CPUS:
        return f"{design} runs under qemu with at most {GUEST_MAX_CPUS} vCPUs, got cpus={cpus}"
    guest_mib = max(GUEST_MIN_MIB, int(machine["mem_mib"]))
    if guest_mib < GUEST_MIB_PER_NODE * nodes:
        return (f"{design} runs under qemu with {GUEST_MIB_PER_NODE} MiB per NUMA node at least: nodes={nodes} "
                f"needs workload.machine.mem_mib >= {GUEST_MIB_PER_NODE * nodes}")
    return None


class ConfigError(ValueError):
    """A bad sweep config; the message starts with the YAML path of the bad value."""


@dataclass
class GridSchema:
    limit: List[str] = field(default_factory=lambda: ["64M"])   # memory.max sizes
    high: Any = 0.75            # memory.high: ratio of max, a size or "max"; a list = axis
    order: List[int] = field(default_factory=lambda: [3])      # slub_max_order
    nodes: List[int] = field(default_factory=lambda: [1])      # NUMA nodes
    mix: List[str] = field(default_factory=lambda: ["kernel"])  # configs/mixes/<name>.yaml
    allocator: Optional[List[str]] = None   # slub | slab (machine.allocator)
    cpus: Optional[List[int]] = None        # machine.cpus (SLUB geometry depends on it)
    fragment: Optional[List[float]] = None  # background.fragment: global fragmentation


@dataclass
class RaySchema:
    address: Optional[str] = None    # None: RAY_ADDRESS if set, else a local Ray
    num_cpus: Optional[int] = None   # local Ray only; None: all CPUs
    chunk_seconds: float = 0.5       # work per Ray task
    max_in_flight: Optional[int] = None  # None: 2 x cluster CPUs
    max_retries: int = 3             # re-runs of a task whose worker died (-1: forever)


@dataclass
class OutputSchema:
    dir: Optional[str] = None        # None: sweeps/<name>
    report: bool = True              # build the report after a run (or later: python -m sweep report)


@dataclass
class TrackingSchema:
    enabled: bool = True
    uri: Optional[str] = None        # None: MLflow's default (sqlite:///mlflow.db in cwd)
    experiment: str = "kmemcg-sweep"


@dataclass
class StatsSchema:
    alpha: float = 0.05
    min_replications: Optional[int] = None   # None: replications
    max_replications: Optional[int] = None   # None: replications (no adaptive rounds)
    ci_halfwidth: float = 0.05
    correction: str = "holm"


@dataclass
class SweepSchema:
    name: str = "sweep"
    seed: int = 0
    replications: int = 8
    designs: List[str] = field(default_factory=lambda: ["v4.3", "way1", "way2"])
    grid: GridSchema = field(default_factory=GridSchema)
    workload: Dict[str, Any] = field(default_factory=dict)
    # several small grids in one sweep: each block's grid/workload is merged over the top-level
    # ones (command-line grid.* overrides win over every block); empty = the top-level grid
    blocks: List[Any] = field(default_factory=list)
    claims: Optional[str] = None     # claims registry (configs/claims.yaml): path, next to the config or cwd
    ray: RaySchema = field(default_factory=RaySchema)
    output: OutputSchema = field(default_factory=OutputSchema)
    tracking: TrackingSchema = field(default_factory=TrackingSchema)
    stats: StatsSchema = field(default_factory=StatsSchema)


def load(path: str | Path, overrides: list[str] = ()) -> DictConfig:
    """The checked, resolved config of ``path`` with ``key=value`` overrides applied."""
    raw = _read_yaml(Path(path))
    dots = _parse_overrides(overrides)
    base = OmegaConf.structured(SweepSchema)
    for layer in (raw, dots):
        _check_sections(layer, base, "")
        _listify_axes(layer)
    try:
        cfg = OmegaConf.merge(base, raw, dots)
    except OmegaConfBaseException as err:
        raise ConfigError(_omegaconf_message(err, base)) from None
    _check_values(cfg)
    cfg.blocks = _checked_blocks(cfg, dots.get("grid") or {})
    _resolve_defaults(cfg)
    return cfg


def block_configs(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    """(block name, config with that block's grid and workload) for every block; a config
    without blocks is one block named after the sweep."""
    if not cfg.blocks:
        return [(cfg.name, cfg)]
    out = []
    for block in cfg.blocks:
        one = cfg.copy()
        one.blocks = []
        one.grid = block.grid
        one.workload = block.workload
        out.append((block.name, one))
    return out


def _checked_blocks(cfg: DictConfig, grid_overrides: dict) -> list:
    """Each block as {name, grid, workload}, fully merged and checked like the top level."""
    blocks, names = [], []
    for i, block in enumerate(OmegaConf.to_container(cfg.blocks, resolve=True)):
        path = f"blocks[{i}]"
        if not isinstance(block, dict):
            raise ConfigError(f"{path}: must be a mapping with keys {', '.join(BLOCK_KEYS)}, got {block!r}")
        for key in block:
            if key not in BLOCK_KEYS:
                raise ConfigError(unknown_key_message(f"{path}.{key}", key, list(BLOCK_KEYS)))
        name = block.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ConfigError(f"{path}.name: required, letters, digits, '.', '_' or '-', got {name!r}")
        if name in names:
            raise ConfigError(f"{path}.name: {name!r} is used by blocks[{names.index(name)}]")
        names.append(name)
        grid = dict(block.get("grid") or {})
        if not isinstance(block.get("grid", {}), dict) or not isinstance(block.get("workload", {}), dict):
            raise ConfigError(f"{path}: grid and workload must be sections")
        layer = {"grid": grid}
        _listify_axes(layer)
        _listify_axes({"grid": grid_overrides})
        try:
            merged = OmegaConf.merge(OmegaConf.structured(GridSchema), cfg.grid, layer["grid"], grid_overrides)
        except OmegaConfBaseException as err:
            raise ConfigError(f"{path}.{_omegaconf_message(err, OmegaConf.structured(SweepSchema))}") from None
        _check_grid(merged, f"{path}.grid")
        workload = OmegaConf.to_container(OmegaConf.merge(cfg.workload, block.get("workload") or {}))
        own = block.get("workload") or {}
        for (section, key), axis in OPTIONAL_AXIS_FIELDS.items():   # the block's axis beats an inherited pin
            if merged[axis] is not None and key not in (own.get(section) or {}):
                (workload.get(section) or {}).pop(key, None)
        blocks.append({"name": name, "grid": merged, "workload": workload})
    return blocks


def mix_dirs(config_path: str | Path) -> list[Path]:
    """Where mix names are looked up: next to the config, then ./configs/mixes."""
    return [Path(config_path).resolve().parent / "mixes", Path.cwd() / "configs" / "mixes"]


def load_mixes(cfg: DictConfig, config_path: str | Path) -> dict[str, dict]:
    """name -> mix mapping for every ``grid.mix`` entry (a name or a path to a YAML file)."""
    dirs = mix_dirs(config_path)
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    mixes = {}
    listed = [(f"grid.mix[{i}]", name) for i, name in enumerate(cfg.grid.mix)]
    listed += [(f"blocks[{b}].grid.mix[{i}]", name) for b, block in enumerate(cfg.blocks)
               for i, name in enumerate(block.grid.mix)]
    for path, name in listed:
        if name in mixes:
            continue
        file = _find_mix(name, dirs)
        if file is None:
            raise ConfigError(f"{path}: unknown mix {name!r}{_did_you_mean(name, known)}; "
                              f"allowed: {', '.join(known) or '(no configs/mixes/*.yaml found)'}")
        mix = _read_yaml(file)
        mix.setdefault("name", Path(name).stem)
        mixes[name] = mix
    return mixes


def claims_file(cfg: DictConfig, config_path: str | Path) -> Path | None:
    """The claims registry the config names, looked up next to the config, then in cwd."""
    if not cfg.claims:
        return None
    for base in (Path(config_path).resolve().parent, Path.cwd()):
        if (base / cfg.claims).is_file():
            return (base / cfg.claims).resolve()
    raise ConfigError(f"claims: no file {cfg.claims!r} next to the config or in the current folder")


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


def from_yaml_file(path: str | Path) -> DictConfig:
    """A resolved config written by a sweep (``<sweep_dir>/config.yaml``), schema-checked."""
    return OmegaConf.merge(OmegaConf.structured(SweepSchema), OmegaConf.load(path))


def setting(cfg, key: str, default):
    """Read ``key`` from a dict, an OmegaConf node or a dataclass alike (None -> default)."""
    if cfg is None:
        return default
    value = cfg.get(key, default) if isinstance(cfg, Mapping) else getattr(cfg, key, default)
    return default if value is None else value


def significance_settings(stats_cfg) -> tuple[float, str]:
    """(alpha, correction) of a config's ``stats`` section (schema defaults where unset)."""
    return (float(setting(stats_cfg, "alpha", StatsSchema.alpha)),
            str(setting(stats_cfg, "correction", StatsSchema.correction)))


def is_adaptive(cfg: DictConfig) -> bool:
    """True when the campaign adds replications to imprecise cells (stats.max_replications)."""
    return cfg.stats.max_replications > cfg.replications


# --- reading -------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:   # an empty (or comments-only) file is a mistake, not "all defaults"
        raise ConfigError(f"{path}: the file is empty; a config is a mapping of keys "
                          f"(e.g. name: mysweep; see configs/smoke.yaml)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _parse_overrides(overrides: list[str]) -> dict:
    seen: dict[str, str] = {}
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"{item}: an override must look like key=value (e.g. replications=4)")
        key, value = item.split("=", 1)
        _check_override_once(key, value, seen)
        try:
            OmegaConf.from_dotlist([item])
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"{key}: cannot read the value {value!r} ({problem}); write a list as "
                              f"{key}=[1,2] and a section as {key}={{a: 1}}") from None
        except OmegaConfBaseException as err:
            raise ConfigError(f"{key}: {err}") from None
    return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))


def _check_override_once(key: str, value: str, seen: dict[str, str]) -> None:
    """The same key twice (or a key and the section holding it) is refused rather than the
    last one silently winning: which one was meant is the user's call."""
    for other, other_value in seen.items():
        if other == key or other.startswith(key + ".") or key.startswith(other + "."):
            raise ConfigError(f"{key}: overridden twice ({other}={other_value} and {key}={value}); "
                              f"give each key once")
    seen[key] = value


def _find_mix(name: str, dirs: list[Path]) -> Path | None:
    if name.endswith((".yaml", ".yml")):
        return Path(name) if Path(name).is_file() else None
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        return None
    return next((d / f"{name}.yaml" for d in dirs if (d / f"{name}.yaml").is_file()), None)


# --- structure and types (before merging) --------------------------------------------


def _check_sections(layer: dict, schema: DictConfig, prefix: str) -> None:
    """A section given as a scalar (``ray: 3``) gets a clear message; OmegaConf's has no path."""
    for key, value in layer.items():
        if key not in schema or not isinstance(schema[key], DictConfig) or key == "workload":
            continue
        path = f"{prefix}{key}"
        if not isinstance(value, dict):
            keys = ", ".join(schema[key].keys())
            raise ConfigError(f"{path}: must be a section with keys {keys}, got {value!r}")
        _check_sections(value, schema[key], path + ".")
    if prefix == "" and "workload" in layer and not isinstance(layer["workload"], dict):
        raise ConfigError(f"workload: must be a section of workload-spec fields, got {layer['workload']!r}")


def _listify_axes(layer: dict) -> None:
    """``grid.nodes=2`` means a one-value axis; lists stay lists."""
    grid = layer.get("grid")
    if isinstance(grid, dict):
        for axis in LIST_AXES:
            if axis in grid and grid[axis] is not None and not isinstance(grid[axis], (list, tuple)):
                grid[axis] = [grid[axis]]


_TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false",
               "String": "a string"}


def _omegaconf_message(err: OmegaConfBaseException, schema: DictConfig) -> str:
    path = err.full_key or "config"
    text = str(err).splitlines()[0]
    if m := re.match(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)", text):
        want = _TYPE_WORDS.get(m.group(3), m.group(3))
        return f"{path}: expected {want}, got {m.group(1)!r} ({m.group(2)})"
    if m := re.match(r"Value '(.*)' is not a valid bool \(type (\w+)\)", text):
        return f"{path}: expected true or false, got {m.group(1)!r} ({m.group(2)})"
    if m := re.match(r"Incompatible value 'None' for field of type '(\w+)'", text):
        return f"{path}: must not be null (expected {m.group(1)})"
    if text.startswith("Key '"):
        parent, _, key = path.rpartition(".")
        return unknown_key_message(path, key, list(OmegaConf.select(schema, parent) if parent else schema))
    return f"{path}: {text}"


def unknown_key_message(path: str, key: str, allowed: list[str]) -> str:
    parent = path.rpartition(".")[0]
    where = f"in {parent}" if parent else "at the top level"
    return f"{path}: unknown key {where}{_did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}"


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- values (after merging) ----------------------------------------------------------


def _check_values(cfg: DictConfig) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", cfg.name):
        raise ConfigError(f"name: must be letters, digits, '.', '_' or '-' (it names the output "
                          f"folder), got {cfg.name!r}")
    _in_range("seed", cfg.seed, 0, 2**63 - 1)
    _in_range("replications", cfg.replications, 1, 100_000)
    _check_designs(cfg.designs)
    _check_grid(cfg.grid, "grid")
    _check_ray(cfg.ray)
    if not cfg.tracking.experiment:
        raise ConfigError("tracking.experiment: must be a non-empty name")
    _check_stats(cfg)


def _in_range(path: str, value, low, high) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{path}: must be in {low}..{high}, got {value}")


def _check_designs(designs: ListConfig) -> None:
    import core  # the design names live in the simulator

    allowed = (*core.DESIGNS, *KERNEL_ROWS)
    if len(designs) == 0:
        raise ConfigError(f"designs: must list at least one design; allowed: {', '.join(allowed)}")
    for i, name in enumerate(designs):
        if name not in allowed:
            raise ConfigError(f"designs[{i}]: unknown design {name!r}{_did_you_mean(name, allowed)}; "
                              f"allowed: {', '.join(allowed)}")
    _no_duplicates("designs", designs)


def _check_grid(grid: DictConfig, path: str) -> None:
    for axis in LIST_AXES:           # a required axis is never null (the schema refuses it)
        if grid[axis] is not None:
            _check_axis(f"{path}.{axis}", grid[axis])
    _check_high(grid.high, f"{path}.high")


def _check_axis(path: str, values: ListConfig) -> None:
    if len(values) == 0:
        raise ConfigError(f"{path}: must list at least one value")
    _no_duplicates(path, values)


def _no_duplicates(path: str, values) -> None:
    seen = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ConfigError(f"{path}[{i}]: {value!r} is listed twice")
        seen.add(value)


def _check_high(high, path: str = "grid.high") -> None:
    values = list(high) if isinstance(high, ListConfig) else [high]
    if isinstance(high, ListConfig):
        _check_axis(path, high)
    for value in values:
        if isinstance(value, (DictConfig, ListConfig)) or value is None or isinstance(value, bool):
            raise ConfigError(f"{path}: must be a ratio of memory.max in (0, 1], a size "
                              f"(\"32M\") or \"max\", got {value!r}")


def _check_ray(ray: DictConfig) -> None:
    if ray.num_cpus is not None:
        _in_range("ray.num_cpus", ray.num_cpus, 1, 4096)
    if not 0 < ray.chunk_seconds <= 3600:
        raise ConfigError(f"ray.chunk_seconds: must be in (0, 3600], got {ray.chunk_seconds}")
    if ray.max_in_flight is not None:
        _in_range("ray.max_in_flight", ray.max_in_flight, 1, 100_000)
    _in_range("ray.max_retries", ray.max_retries, -1, 1000)
    if ray.address is not None and ray.num_cpus is not None:
        raise ConfigError("ray.num_cpus: only for a local Ray; a cluster (ray.address) has its own CPUs")


def _check_stats(cfg: DictConfig) -> None:
    stats = cfg.stats
    if not 0 < stats.alpha < 1:
        raise ConfigError(f"stats.alpha: must be in (0, 1), got {stats.alpha}")
    if stats.correction not in CORRECTIONS:
        raise ConfigError(f"stats.correction: unknown method {stats.correction!r}"
                          f"{_did_you_mean(stats.correction, CORRECTIONS)}; allowed: {', '.join(CORRECTIONS)}")
    if not stats.ci_halfwidth > 0:
        raise ConfigError(f"stats.ci_halfwidth: must be > 0, got {stats.ci_halfwidth}")
    if stats.min_replications is not None:
        _in_range("stats.min_replications", stats.min_replications, 1, 100_000)
    if stats.max_replications is not None:
        _in_range("stats.max_replications", stats.max_replications, cfg.replications, 100_000)
    low = stats.min_replications or 1
    if stats.max_replications is not None and low > stats.max_replications:
        raise ConfigError(f"stats.min_replications: must be <= stats.max_replications "
                          f"({stats.max_replications}), got {low}")


def _resolve_defaults(cfg: DictConfig) -> None:
    """Fill the ``None`` defaults that depend on other keys, so config.yaml is explicit."""
    if cfg.output.dir is None:
        cfg.output.dir = f"sweeps/{cfg.name}"
    if cfg.stats.max_replications is None:
        cfg.stats.max_replications = max(cfg.replications, cfg.stats.min_replications or 0)
    if cfg.stats.min_replications is None:
        cfg.stats.min_replications = min(cfg.replications, cfg.stats.max_replications)
