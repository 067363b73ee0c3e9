"""core/_mm.pxd declares each layer's interface: every C function that another .pxi file
calls has its prototype there (as a kernel header declares what other mm/*.c files use), so
a reader finds what a layer offers in one place, whatever the include order of _mm.pyx."""
import pathlib
import re

CORE = pathlib.Path(__file__).resolve().parent.parent / "core"
DEF = re.compile(r"^cdef (?:inline )?(?!class|enum|struct)[\w ]+?\**\s*(\w+)\(", re.M)


def test_every_function_another_layer_calls_is_declared_in_the_pxd():
    layers = {p.stem: re.sub(r"#.*", "", p.read_text()) for p in CORE.glob("*.pxi")}
    home = {f: name for name, text in layers.items() for f in DEF.findall(text)}
    declared = set(DEF.findall(re.sub(r"#.*", "", (CORE / "_mm.pxd").read_text())))
    called_elsewhere = {f for f, h in home.items()
                        if any(re.search(rf"\b{f}\(", t) for n, t in layers.items() if n != h)}
    assert len(called_elsewhere) > 50
    assert sorted(called_elsewhere - declared) == []
    assert sorted(declared - set(home)) == [], "prototypes of functions no .pxi defines"
