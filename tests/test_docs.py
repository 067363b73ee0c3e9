"""The documentation stays inside the repository and true to the code.

- Every `§N.M` citation in core/, sweep/, docs/, tests/ and the README names a section of
  docs/kernel.md (the project's own kernel reference); `§N.M.K` and `§N.M step K` name a
  numbered item of that section.
- No file cites a path outside the checkout (the reference notes the project started from
  are not part of it).
- The table "From a grid axis to the core" in docs/workload-spec.md has a row for every
  grid axis, and every function it names exists where its column (or its "(file)") says.
"""
import re
from pathlib import Path

import pytest

from sweep.config import GRID_AXES

ROOT = Path(__file__).resolve().parent.parent
KERNEL_MD = ROOT / "docs" / "kernel.md"
CITING = ["core", "sweep", "docs", "tests"]
TEXT_SUFFIXES = {".py", ".pyx", ".pxi", ".pxd", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg",
                 ".sh", ".html", ".json", ""}
# spelled in pieces so this file does not cite them itself
OUTSIDE = ["../" + "shared", "shared/" + "reference", "kernel" + "-facts"]

CITATION = re.compile(r"§(\d+(?:\.\d+)*)(?:\s+steps?\s+(\d+))?")


def kernel_sections() -> dict[str, str]:
    """'2.3' -> the text of '## §2.3 ...' up to the next heading."""
    sections, current, lines = {}, None, []
    for line in KERNEL_MD.read_text().splitlines():
        heading = re.match(r"#+ §(\d+(?:\.\d+)?) ", line)
        if heading:
            if current:
                sections[current] = "\n".join(lines)
            current, lines = heading.group(1), []
        elif current:
            lines.append(line)
    if current:
        sections[current] = "\n".join(lines)
    return sections


def has_item(text: str, number: str) -> bool:
    """A numbered list item `N.` (or `- N.`) at the start of a line of the section."""
    return re.search(rf"^\s*(?:- )?{number}\. ", text, re.M) is not None


def source_files(folders, suffixes=(".py", ".pyx", ".pxi", ".pxd", ".md", ".yaml")):
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in suffixes and "__pycache__" not in path.parts:
                yield path


def citations():
    for path in [*source_files(CITING), ROOT / "README.md"]:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for m in CITATION.finditer(line):
                yield f"{path.relative_to(ROOT)}:{lineno}", m.group(1), m.group(2)


def test_every_section_citation_resolves_in_kernel_md():
    sections = kernel_sections()
    found, bad = 0, []
    for where, number, step in citations():
        found += 1
        parts = number.split(".")
        section = ".".join(parts[:2])
        if section not in sections:
            bad.append(f"{where}: §{number} (docs/kernel.md has no §{section})")
        elif len(parts) == 3 and not has_item(sections[section], parts[2]):
            bad.append(f"{where}: §{number} (§{section} has no item {parts[2]})")
        elif len(parts) > 3:
            bad.append(f"{where}: §{number} (too deep)")
        elif step and not has_item(sections[section], step):
            bad.append(f"{where}: §{number} step {step} (§{section} has no step {step})")
    assert found > 100, "the citation scan found almost nothing: is the pattern broken?"
    assert not bad, "citations that docs/kernel.md does not resolve:\n" + "\n".join(bad)


def test_kernel_md_numbers_its_steps_like_the_code():
    """try_charge's comments number steps 0-19 and the slowpath's letters a-o: the sections
    they cite must hold exactly those items."""
    sections = kernel_sections()
    assert all(has_item(sections["2.3"], str(n)) for n in range(20))
    assert all(re.search(rf"^- {c}\. ", sections["5.5"], re.M) for c in "abcdefghijklmno")
    code = (ROOT / "core" / "memcg.pxi").read_text()
    steps = {int(n) for n in re.findall(r"^\s*# (\d+)[: (]", code, re.M)}
    assert steps >= set(range(20)) - {17, 18}, sorted(set(range(20)) - steps)


def test_no_file_cites_a_path_outside_the_repository():
    folders = [p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
               and p.name not in ("sweeps", "build", "mlruns")] + [".ci"]
    files = [p for p in ROOT.iterdir() if p.is_file()]
    files += [p for p in source_files([f for f in folders if (ROOT / f).is_dir()], TEXT_SUFFIXES)]
    bad = []
    for path in files:
        if path.suffix not in TEXT_SUFFIXES or path.name.endswith((".db", ".c")):
            continue
        text = path.read_text(errors="replace")
        bad += [f"{path.relative_to(ROOT)}: {needle}" for needle in OUTSIDE if needle in text]
    assert not bad, "paths outside the repository:\n" + "\n".join(bad)


# ---- "From a grid axis to the core" ----------------------------------------------------------

def axis_table() -> list[list[str]]:
    text = (ROOT / "docs" / "workload-spec.md").read_text()
    body = text.split("<!-- axis-table -->")[1].split("<!-- /axis-table -->")[0]
    rows = [line for line in body.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def defined_in(name: str, paths) -> list[Path]:
    pattern = re.compile(rf"^\s*(?:cdef|cpdef|def)\b[^(\n]*?\b{re.escape(name)}\s*\(", re.M)
    return [p for p in paths if pattern.search(p.read_text())]


CORE = sorted(p for p in (ROOT / "core").iterdir() if p.suffix in (".py", ".pyx", ".pxi", ".pxd"))
COLUMNS = {1: [ROOT / "sweep" / "config.py"], 2: [ROOT / "sweep" / "grid.py"], 3: CORE, 4: CORE}


def functions(cell: str) -> list[str]:
    """`Machine.write()` -> write; only backticked calls count."""
    return [name.split(".")[-1] for name in re.findall(r"`([\w.]+)\(\)`", cell)]


def test_axis_table_has_a_row_for_every_axis():
    keys = " ".join(row[0] for row in axis_table())
    for axis in GRID_AXES:
        assert f"`grid.{axis}`" in keys, f"docs/workload-spec.md: no row for grid.{axis}"
    for key in ("designs", "replications", "seed"):
        assert f"`{key}`" in keys


@pytest.mark.parametrize("row", axis_table(), ids=lambda row: row[0].strip("`"))
def test_axis_table_names_functions_that_exist(row):
    assert len(row) == 5
    for column, paths in COLUMNS.items():
        names = functions(row[column])
        assert names or column == 2, f"column {column} of {row[0]} names no function"
        for name in names:
            assert defined_in(name, paths), \
                f"{row[0]}: `{name}()` is not defined in {', '.join(p.name for p in paths[:3])}"
    # "`f()` (file.pxi)": the function right before a file name is defined in that file
    for column in (3, 4):
        for name, file in re.findall(r"`([\w.]+)\(\)`\s*\((\w+\.(?:pxi|pyx|pxd|py))\)", row[column]):
            name = name.split(".")[-1]
            where = [p.name for p in defined_in(name, CORE)]
            assert file in where, f"{row[0]}: `{name}()` is said to be in {file}, found in {where}"


def test_the_config_table_of_sweep_md_gives_the_real_default_designs():
    """docs/sweep.md's `designs` row states sweep.config's default list (issue 21.5)."""
    from sweep.config import SweepSchema

    lines = (ROOT / "docs" / "sweep.md").read_text().splitlines()
    row = next(line for line in lines if line.startswith("| `designs` |"))
    default = row.split("|")[2].strip().split("`")[1]
    assert default == "[" + ", ".join(SweepSchema().designs) + "]"
