"""xr2ct: the thin library behind the X-ray2CTPA book."""

__version__ = "0.1.0"
