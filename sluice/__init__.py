"""sluice: an async federated query engine with a safety pipeline in front of every database."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sluice")
except PackageNotFoundError:  # running from a checkout without install
    __version__ = "0.1.0"
