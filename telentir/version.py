"""The server's version, in a module of its own so that any module may read it without an import cycle."""

__version__ = "0.2.0"
