"""Build the Cython simulator core (one extension; one .pxi source file per kernel layer)."""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "core._mm",
        ["core/_mm.pyx"],
        extra_compile_args=["-O2", "-Wno-unused-function", "-Wno-unreachable-code"],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
        nthreads=os.cpu_count() or 1,
    )
)
