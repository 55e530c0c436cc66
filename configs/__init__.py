"""recframe's Hydra configs, the package ``recframe.configs`` (``pkg://recframe.configs``): setup.py maps this
top-level folder into the package at build time, so the wheel ships every YAML file here."""
