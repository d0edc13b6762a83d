"""Which packages and files the build installs; everything else is in pyproject.toml.

The repository keeps the shipped files in the top-level resources/ folder (one copy); the build
installs that folder as the package opt_desktop.resources, beside the found code packages, which
pyproject.toml cannot express (it lists found packages or named ones, not both).
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["opt_desktop", "opt_desktop.*"]) + ["opt_desktop.resources"],
    package_dir={"opt_desktop.resources": "resources"},
    # Every file under resources/ at any depth, dotfiles too (the demo model's files, whatever
    # their names), but not the README's screenshot, which the app never reads.
    package_data={"opt_desktop.resources": ["**/*", "**/.*"]},
    exclude_package_data={"opt_desktop.resources": ["screenshot.png", "**/__pycache__/*", "**/*.pyc"]},
)
