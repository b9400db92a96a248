"""The package version, in a leaf module: anything may import it without importing the package's API
(setup.cfg reads it as attr: ovdoc._version.__version__)."""

__version__ = "0.1.0"
