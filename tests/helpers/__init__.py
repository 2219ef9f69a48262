"""Helpers the test folders share that build nothing: numerical tolerances (``numerics``)."""
