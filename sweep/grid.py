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
import json
from dataclasses import dataclass
from typing import Iterable, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from sweep.config import ConfigError, unknown_key_message

# workload-spec fields that a grid axis (or the design list) sets: never pinned
AXIS_FIELDS = {
    ("machine", "nodes"): "grid.nodes",
    ("machine", "slub_max_order"): "grid.order",
    ("cgroup", "max"): "grid.limit",
    ("cgroup", "high"): "grid.high",
    ("design",): "designs",
    ("mix",): "grid.mix",
}


@dataclass(frozen=True)
class Cell:
    cell_id: str        # readable, unique: axis values + a short hash of the spec
    key: str            # sha256 of the normalised spec without design (seeds derive from it)
    axes: dict          # store columns: limit (bytes, inf = "max"), high, order, nodes, mix
    specs: dict         # design -> normalised workload spec


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
    """Every cell of the grid, each spec checked by ``core.validate_spec``."""
    pins = _checked_pins(cfg, mixes)
    highs = list(cfg.grid.high) if isinstance(cfg.grid.high, ListConfig) else [cfg.grid.high]
    cells = []
    for limit in cfg.grid.limit:
        for high in highs:
            for order in cfg.grid.order:
                for nodes in cfg.grid.nodes:
                    for mix in cfg.grid.mix:
                        axes = {"limit": limit, "high": high, "order": order, "nodes": nodes, "mix": mix}
                        cells.append(_cell(cfg, pins, axes, mixes[mix]))
    return cells


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


def _cell(cfg: DictConfig, pins: dict, axes: dict, mix: dict) -> Cell:
    specs = {d: _validated(cfg, axes, _compose(pins, axes, mix, d)) for d in cfg.designs}
    without_design = {k: v for k, v in next(iter(specs.values())).items() if k != "design"}
    key = _sha256(without_design)
    columns = {
        "limit": size_bytes(axes["limit"]),
        "high": size_bytes(axes["high"]),      # a ratio of limit stays a ratio (<= 1)
        "order": int(axes["order"]),
        "nodes": int(axes["nodes"]),
        "mix": str(axes["mix"]),
    }
    cell_id = f"{axes['limit']}-h{axes['high']}-o{axes['order']}-n{axes['nodes']}-{axes['mix']}-{key[:6]}"
    return Cell(cell_id=cell_id, key=key, axes=columns, specs=specs)


def _compose(pins: dict, axes: dict, mix: dict, design: str) -> dict:
    spec = copy.deepcopy(pins)
    spec.setdefault("machine", {}).update(nodes=int(axes["nodes"]), slub_max_order=int(axes["order"]))
    spec.setdefault("cgroup", {}).update(max=_size_value(axes["limit"]), high=_size_value(axes["high"]))
    spec["mix"] = copy.deepcopy(mix)
    spec["design"] = design
    return spec


_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size_bytes(value) -> float:
    """A cgroupfs-style value as a number: "64M" -> bytes, "max" -> inf, ratios unchanged."""
    text = str(value).strip()
    if text == "max":
        return float("inf")
    if text[-1:].upper() in _UNITS:
        return float(text[:-1]) * _UNITS[text[-1].upper()]
    return float(text)


def _size_value(value):
    """YAML "67108864" stays a number; "64M", "max" and ratios pass through."""
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _validated(cfg: DictConfig, axes: dict, spec: dict) -> dict:
    import core

    try:
        return core.validate_spec(spec)
    except core.SpecError as err:
        raise ConfigError(_yaml_path_message(cfg, axes, str(err))) from None


def _yaml_path_message(cfg: DictConfig, axes: dict, message: str) -> str:
    """Rewrite core's ``machine.nodes: ...`` into the YAML path the user wrote."""
    spec_path, _, reason = message.partition(": ")
    parts = tuple(spec_path.replace("[", ".[").split("."))
    for fields, yaml_path in AXIS_FIELDS.items():
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


def _checked_pins(cfg: DictConfig, mixes: Mapping[str, dict]) -> dict:
    """The pinned workload fields, refusing unknown ones and those a grid axis owns."""
    pins = OmegaConf.to_container(cfg.workload, resolve=True)
    _refuse_axis_fields(pins)
    first = {axis: (values[0] if isinstance(values, ListConfig) else values)
             for axis, values in cfg.grid.items()}
    defaults = _validated(cfg, first, _compose({}, first, mixes[first["mix"]], cfg.designs[0]))
    _refuse_unknown_fields(pins, defaults, "workload")
    return pins


def _refuse_unknown_fields(pins: dict, defaults: dict, path: str) -> None:
    """Unknown keys get a "did you mean" from the fields a normalised spec has."""
    for key, value in pins.items():
        if key not in defaults:
            raise ConfigError(unknown_key_message(f"{path}.{key}", key, list(defaults)))
        if isinstance(value, dict) and isinstance(defaults[key], dict):
            _refuse_unknown_fields(value, defaults[key], f"{path}.{key}")


def _refuse_axis_fields(pins: dict) -> None:
    for fields, axis in AXIS_FIELDS.items():
        node = pins
        for name in fields:
            node = node.get(name) if isinstance(node, dict) else None
        if node is not None:
            path = "workload." + ".".join(fields)
            raise ConfigError(f"{path}: set by {axis}, not pinnable in workload; "
                              f"put the value in {axis} instead")
