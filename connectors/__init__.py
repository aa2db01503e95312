"""Connectors: one module per database behind the protocol in `connectors.base`."""
