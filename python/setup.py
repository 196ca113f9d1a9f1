# SPDX-License-Identifier: MIT
"""Builds the flashgmm package with the shared library inside it: $FLASHGMM_LIB if set, else the
repository's build/libflashgmm_ivf.so (scripts/build.sh build). The package loads that copy first,
so an installed flashgmm needs no environment variable. Metadata: pyproject.toml."""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

LIB_NAME = "libflashgmm_ivf.so"
HERE = os.path.dirname(os.path.abspath(__file__))


def library():
    path = os.environ.get("FLASHGMM_LIB") or os.path.join(HERE, "..", "build", LIB_NAME)
    if not os.path.isfile(path):
        raise SystemExit("flashgmm: %s not found: build the library first (scripts/build.sh build) or set "
                         "FLASHGMM_LIB to its path" % os.path.normpath(path))
    return path


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        dest = os.path.join(self.build_lib, "flashgmm", LIB_NAME)
        shutil.copyfile(library(), dest)  # the file behind the symlinks
        os.chmod(dest, 0o755)


class BinaryDistribution(Distribution):
    """A wheel tagged for this platform: it holds a compiled library."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
