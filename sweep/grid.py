"""Expand a checked config into cells and workloads (Ray-free, MLflow-free).

A cell is one combination of the grid axes; its workload spec is the pinned ``workload``
fields + the axes + the inlined mix, normalised by ``core.validate_spec``.  Replication r
of a cell has one seed shared by every design (common random numbers), derived from the
root seed, the cell's content and r only, so it never depends on task order.  A
workload's key (the results-store primary key) hashes its normalised spec (design
included), its seed and the model version.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Iterable, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from core.constants import size_bytes
from sweep import config
from sweep.config import GRID_AXES, ConfigError, is_kernel_row, kernel_row_error, model_row, block_configs, unknown_key_message

# workload-spec fields that a grid axis (or the design list) sets: never pinned
AXIS_FIELDS = {
    ("machine", "nodes"): "grid.nodes",
    ("machine", "slub_max_order"): "grid.order",
    ("cgroup", "max"): "grid.limit",
    ("cgroup", "high"): "grid.high",
    ("design",): "designs",
    ("mix",): "grid.mix",
}
# ... and those an optional axis sets when the config gives it (else they are pinnable)
OPTIONAL_AXIS_FIELDS = {fields: f"grid.{axis}" for fields, axis in config.OPTIONAL_AXIS_FIELDS.items()}


@dataclass(frozen=True)
class Cell:
    cell_id: str        # readable, unique: axis values + a short hash of the spec
    key: str            # sha256 of the normalised spec without design (seeds derive from it)
    axes: dict          # store columns: block, limit (bytes, inf = "max"), high, order, nodes,
                        # mix, allocator, cpus, fragment (the last three from the spec)
    specs: dict         # design -> normalised workload spec (designs that exist for the
                        # cell's allocator: a 6.x row has no SLAB cells)
    refused: dict = None  # real-kernel row -> why it cannot run this cell (sweep.config)


@dataclass(frozen=True)
class Workload:
    key: str
    cell: Cell
    design: str
    replication: int
    seed: int

    @property
    def spec(self) -> dict:
        return self.cell.specs[self.design]


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"i/N"`` with 0 <= i < N."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ConfigError(f"--shard: must look like i/N (e.g. 0/4), got {text!r}") from None
        if not 0 <= index < count:
            raise ConfigError(f"--shard: need 0 <= i < N, got {text!r}")
        return cls(index, count)

    def holds(self, cell: Cell) -> bool:
        """Whole cells go to one shard, so a shard holds every design and replication of a
        cell: paired statistics and adaptive replication work within the shard."""
        return int(cell.key[:15], 16) % self.count == self.index

    @property
    def label(self) -> str:
        return f"shard-{self.index}-of-{self.count}"


def build_cells(cfg: DictConfig, mixes: Mapping[str, dict]) -> list[Cell]:
    """Every cell of every block, each spec checked by ``core.validate_spec``.  A cell that
    two blocks share (the same spec) is run once, under the first block's name."""
    cells, seen = [], set()
    for index, (block, one) in enumerate(block_configs(cfg)):
        where = f"blocks[{index}]." if cfg.blocks else ""
        for cell in _block_cells(one, mixes, block if cfg.blocks else None, where):
            if cell.key not in seen:
                seen.add(cell.key)
                cells.append(cell)
    _refuse_designs_without_cells(cfg, cells)
    return cells


def skipped_designs(cfg: DictConfig, cells: Iterable[Cell]) -> dict[str, int]:
    """design -> number of cells it does not run in (SLAB cells for a 6.x row)."""
    out = {}
    for cell in cells:
        for design in cfg.designs:
            if design not in cell.specs:
                out[design] = out.get(design, 0) + 1
    return out


def _refuse_designs_without_cells(cfg: DictConfig, cells: list[Cell]) -> None:
    """A design that can run in no cell at all (a 6.x row on an all-SLAB sweep) is an error."""
    import core

    for i, design in enumerate(cfg.designs):
        if cells and not any(design in cell.specs for cell in cells):
            if is_kernel_row(design):
                raise ConfigError(f"designs[{i}]: {cells[0].refused[design]}, in every cell of this sweep")
            reason = core.design_allocator_error(design, "slab")
            raise ConfigError(f"designs[{i}]: {reason}; every cell of this sweep uses allocator "
                              f"slab (workload.machine.allocator or grid.allocator)")


def _block_cells(cfg: DictConfig, mixes: Mapping[str, dict], block: str | None, where: str) -> list[Cell]:
    pins = _checked_pins(cfg, mixes, where)
    axes_values = {axis: _values(cfg.grid[axis]) for axis in GRID_AXES}
    cells = []
    for combo in itertools.product(*axes_values.values()):
        axes = dict(zip(axes_values, combo))
        cells.append(_cell(cfg, pins, axes, mixes[axes["mix"]], block, where))
    return cells


def _values(axis) -> list:
    """An axis' values; a scalar is one value, an unset optional axis is [None]."""
    if axis is None:
        return [None]
    return list(axis) if isinstance(axis, ListConfig) else [axis]


def workloads(cells: Iterable[Cell], designs: Iterable[str], replications: Mapping[str, int] | int,
              root_seed: int, model_version: str) -> list[Workload]:
    """Replications ``0..n-1`` of every cell (``n`` per cell_id or one int) for every design."""
    designs = list(designs)
    out = []
    for cell in cells:
        count = replications if isinstance(replications, int) else replications[cell.cell_id]
        for rep in range(count):
            seed = replication_seed(root_seed, cell.key, rep)
            for design in designs:
                if design not in cell.specs:          # no such kernel for this cell's allocator
                    continue
                key = workload_key(cell.specs[design], seed, model_version)
                out.append(Workload(key, cell, design, rep, seed))
    return out


def replication_seed(root_seed: int, cell_key: str, replication: int) -> int:
    """63-bit seed of one replication of one cell: the same for every design (CRN)."""
    digest = hashlib.sha256(f"{root_seed}:{cell_key}:{replication}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def workload_key(spec: Mapping, seed: int, model_version: str) -> str:
    return _sha256({"spec": spec, "seed": seed, "model_version": model_version})


def _sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --- one cell -------------------------------------------------------------------------


def _cell(cfg: DictConfig, pins: dict, axes: dict, mix: dict, block: str | None = None, where: str = "") -> Cell:
    composed = {d: _compose(pins, axes, mix, d) for d in cfg.designs}
    runnable = [d for d in cfg.designs if not _allocator_refuses(composed[d])] or list(cfg.designs)
    checked = {d: _validated(cfg, axes, composed[d], where) for d in runnable}
    spec = next(iter(checked.values()))
    # a real-kernel row's spec was checked as its model row's; it keeps its own name
    specs = {d: dict(one, design=d) for d, one in checked.items() if cell_refuses(d, one) is None}
    without_design = {k: v for k, v in spec.items() if k != "design"}
    key = _sha256(without_design)
    columns = {
        "block": block or "",
        "limit": size_bytes(axes["limit"]),
        "high": size_bytes(axes["high"]),      # a ratio of limit stays a ratio (<= 1)
        "order": int(axes["order"]),
        "nodes": int(axes["nodes"]),
        "mix": str(axes["mix"]),
        "allocator": spec["machine"]["allocator"],
        "cpus": int(spec["machine"]["cpus"]),
        "fragment": float(spec["background"]["fragment"]),
    }
    extra = "".join(f"-{tag}{axes[axis]}" for axis, tag in (("allocator", ""), ("cpus", "c"), ("fragment", "f"))
                    if axes[axis] is not None)
    prefix = f"{block}-" if block else ""
    cell_id = (f"{prefix}{axes['limit']}-h{axes['high']}-o{axes['order']}-n{axes['nodes']}-{axes['mix']}"
               f"{extra}-{key[:6]}")
    refused = {d: cell_refuses(d, spec) for d in cfg.designs if d not in specs and is_kernel_row(d)}
    return Cell(cell_id=cell_id, key=key, axes=columns, specs=specs, refused=refused)


def cell_refuses(design: str, spec: dict) -> str | None:
    """Why a real-kernel row cannot run the cell of this (validated) spec, or None."""
    return kernel_row_error(design, spec["machine"])


def _allocator_refuses(spec: dict) -> bool:
    """The design has no such allocator (SLAB is gone in 6.8): the cell runs without it.
    When no design of the sweep is left, validation reports the error with its path."""
    import core

    allocator = spec.get("machine", {}).get("allocator", "slub")
    return core.design_allocator_error(spec["design"], allocator) is not None


def _compose(pins: dict, axes: dict, mix: dict, design: str) -> dict:
    spec = copy.deepcopy(pins)
    spec.setdefault("machine", {}).update(nodes=int(axes["nodes"]), slub_max_order=int(axes["order"]))
    spec.setdefault("cgroup", {}).update(max=_size_value(axes["limit"]), high=_size_value(axes["high"]))
    for (section, name), axis in OPTIONAL_AXIS_FIELDS.items():
        value = axes.get(axis.split(".")[1])
        if value is not None:
            spec.setdefault(section, {})[name] = value
    spec["mix"] = copy.deepcopy(mix)
    spec["design"] = model_row(design)
    return spec


def _size_value(value):
    """YAML "67108864" stays a number; "64M", "max" and ratios pass through."""
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _validated(cfg: DictConfig, axes: dict, spec: dict, where: str = "") -> dict:
    """`where` is the YAML path prefix of the block (``blocks[2].``), "" without blocks."""
    import core

    try:
        return core.validate_spec(spec)
    except core.SpecError as err:
        raise ConfigError(where + _yaml_path_message(cfg, axes, str(err))) from None


def _yaml_path_message(cfg: DictConfig, axes: dict, message: str) -> str:
    """Rewrite core's ``machine.nodes: ...`` into the YAML path the user wrote."""
    spec_path, _, reason = message.partition(": ")
    parts = tuple(spec_path.replace("[", ".[").split("."))
    owned = {**AXIS_FIELDS, **{f: a for f, a in OPTIONAL_AXIS_FIELDS.items()
                              if axes.get(a.split(".")[1]) is not None}}
    for fields, yaml_path in owned.items():
        if parts[: len(fields)] == fields:
            return f"{_axis_item(cfg, yaml_path, axes)}{_rest(parts[len(fields):])}: {reason}"
    return f"workload.{spec_path}: {reason}"


def _axis_item(cfg: DictConfig, yaml_path: str, axes: dict) -> str:
    if yaml_path == "designs":
        return "designs"
    axis = yaml_path.split(".")[1]
    values = cfg.grid[axis]
    if not isinstance(values, ListConfig):
        return yaml_path
    index = list(values).index(axes[axis])
    where = f"{yaml_path}[{index}]"
    return f"{where} (mix {axes['mix']!r})" if axis == "mix" else where


def _rest(parts: tuple) -> str:
    return (" " + ".".join(parts).replace(".[", "[")) if parts else ""


def _checked_pins(cfg: DictConfig, mixes: Mapping[str, dict], where: str = "") -> dict:
    """The pinned workload fields, refusing unknown ones and those a grid axis owns."""
    pins = OmegaConf.to_container(cfg.workload, resolve=True)
    try:
        _refuse_axis_fields(pins, cfg.grid)
        first = {axis: _values(values)[0] for axis, values in cfg.grid.items()}
        composed = [_compose({}, first, mixes[first["mix"]], d) for d in cfg.designs]
        defaults = _validated(cfg, first, next((c for c in composed if not _allocator_refuses(c)),
                                                 composed[0]))
        _refuse_unknown_fields(pins, defaults, "workload")
    except ConfigError as err:
        raise ConfigError(where + str(err)) from None
    return pins


def _refuse_unknown_fields(pins: dict, defaults: dict, path: str) -> None:
    """Unknown keys get a "did you mean" from the fields a normalised spec has."""
    for key, value in pins.items():
        if key not in defaults:
            raise ConfigError(unknown_key_message(f"{path}.{key}", key, list(defaults)))
        if isinstance(value, dict) and isinstance(defaults[key], dict):
            _refuse_unknown_fields(value, defaults[key], f"{path}.{key}")


def _refuse_axis_fields(pins: dict, grid) -> None:
    owned = {**AXIS_FIELDS, **{f: a for f, a in OPTIONAL_AXIS_FIELDS.items() if grid[a.split(".")[1]] is not None}}
    for fields, axis in owned.items():
        node = pins
        for name in fields:
            node = node.get(name) if isinstance(node, dict) else None
        if node is not None:
            path = "workload." + ".".join(fields)
            raise ConfigError(f"{path}: set by {axis}, not pinnable in workload; "
                              f"put the value in {axis} instead")
