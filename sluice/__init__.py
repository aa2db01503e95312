"""sluice: an async federated query engine with a safety pipeline in front of every database."""

from api.version import VERSION as __version__

__all__ = ["__version__"]
