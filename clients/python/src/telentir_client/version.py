"""The client's version (the distribution's, read by setuptools)."""

__version__ = "0.1.0"
