"""Cidade: an open urban platform for medium-sized cities."""

__version__ = "0.1.0"

__all__ = ["__version__"]
