"""setuptools hook for the native core: cffi_modules is not expressible in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["native/build.py:ffibuilder", "native/build.py:testing_builder"])
