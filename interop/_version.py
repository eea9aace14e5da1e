"""The package version, in a module of its own so library code never imports the ``interop``
facade (the public API sits at the top of the layers; see docs/architecture.md)."""

__version__ = "0.1.0"
