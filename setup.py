"""The one compiled part: dbguardian/pipeline/_dumpscan.c (see its header). Everything else is in pyproject.toml.

``optional=True``: without a C compiler the install still succeeds, and backups count rows with the
server instead (dbguardian/pipeline/dumpcount.py says which way a backup's counts were taken).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("dbguardian.pipeline._dumpscan", ["dbguardian/pipeline/_dumpscan.c"], optional=True)])
