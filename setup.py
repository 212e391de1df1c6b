"""What ships is derived, never listed by hand: every ``cdrbench`` package found on disk, and
``conf/`` as the package ``cdrbench.conf`` with every YAML file at any depth (config groups are
plain folders, so a new group cannot be left out of a wheel), and the papers' numbers that
``cdrbench report`` reads (``cdrbench/report/paper_numbers/``). Metadata is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["cdrbench", "cdrbench.*"]), "cdrbench.conf"],
    package_dir={"cdrbench.conf": "conf"},
    package_data={"cdrbench.conf": ["**/*.yaml"], "cdrbench.report": ["paper_numbers/*.yaml"]},
)
