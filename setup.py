"""The package list of the pop3mon wheel; every other setting is in pyproject.toml.

The product is ``pop3mon`` (plugins/pop3mon, with every subpackage that appears there). The
tier tests ship inside it as ``pop3mon.tests_targets`` from the top-level tests_targets/, where
this repository's pytest.ini collects them: setuptools' declarative ``packages.find`` cannot
add a package from outside its ``where`` directory, this can. The self-test lab
(pop3mon_lab), tests/ and benchmarks/ are not shipped.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages("plugins", include=["pop3mon", "pop3mon.*"]), "pop3mon.tests_targets"],
    package_dir={"": "plugins", "pop3mon.tests_targets": "tests_targets"},
)
