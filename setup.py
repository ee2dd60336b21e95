"""The package list (setup.cfg holds everything else): volgan's packages plus ``volgan.bundles``, the repository's
``bundles/`` folder mapped into the package (setup.cfg's package_dir), so wheels carry the five MONAI bundles."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["volgan", "volgan.*"]) + ["volgan.bundles"])
