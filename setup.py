"""Build-time layout only (the project's metadata is pyproject.toml): the top-level ``configs/`` folder is the
package ``recframe.configs``, mapped here at build time, so a wheel carries every YAML config inside the
package (Hydra finds them as ``pkg://recframe.configs``) and the tree keeps a single copy. An editable install
(``pip install -e .``) maps the same folder through setuptools' import finder.
"""

from setuptools import find_namespace_packages, setup

PACKAGES = find_namespace_packages(include=["recframe", "recframe.*"], exclude=["recframe.configs*", "*.__pycache__"])

setup(
    packages=[*PACKAGES, "recframe.configs"],
    package_dir={"recframe.configs": "configs"},
    package_data={"recframe.configs": ["**/*.yaml"]},
)
