# The release version, in one place: zcloop.__version__, `python -m zcloop
# --version` (which reads this file without importing the compiled core) and
# the package metadata (pyproject.toml: tool.setuptools.dynamic) all use it.
__version__ = "0.1.0"
