"""fpk: batch video generation with FramePack."""

__version__ = "0.1.0"
