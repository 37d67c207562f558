"""Packages, and the shipped pipelines installed as ``medseg.pipelines`` from the top-level folder."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["medseg", "medseg.*"]), "medseg.pipelines"],
    package_dir={"medseg.pipelines": "pipelines"},
    package_data={"medseg": ["py.typed"], "medseg.pipelines": ["*.yaml"]},
)
