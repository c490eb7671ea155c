"""orfs: mount an OpenRouter Files workspace as a directory."""

__version__ = "0.1.0"
