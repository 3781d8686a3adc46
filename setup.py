"""Only the optional C accelerator lives here; everything else is in pyproject.toml.

``optional=True``: without a compiler or Python headers the install still succeeds and the collector
frames AMI in pure Python (exact, ~2x slower on a call,system stream).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("collector.ami._fast", ["collector/ami/_fast.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"])])
