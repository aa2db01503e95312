"""The installed package's version, for /health and /openapi.json."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("sluice")
except PackageNotFoundError:  # running from a checkout without install
    VERSION = "0.1.0"
