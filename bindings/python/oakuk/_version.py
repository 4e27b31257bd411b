"""The binding's version: the one place it is written (pyproject.toml reads it from here).

It is the version of the C library the binding was written against (meson.build's project
version); tests/python/test_package.py checks that the two agree.
"""

__version__ = "0.1.0"
