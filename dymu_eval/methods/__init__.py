"""Reduction methods, one file each, and the registries they (and outside packages) register in.

``METHODS[name]`` is a :class:`MethodSpec`; ``FAMILIES[name]`` a :class:`FamilySpec`. Importing
this package is torch-free: a method's algorithm is imported when a model is built with it.
"""
from .registry import FAMILIES, FEATURES, METHODS, Arg, FamilySpec, MethodSpec, resolve

__all__ = ["FAMILIES", "FEATURES", "METHODS", "Arg", "FamilySpec", "MethodSpec", "resolve"]
