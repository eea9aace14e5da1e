"""Kernels of the Core ML reference runtime, one module per op family.

Every module here is imported by ``registry._load_kernels``; a new family needs no registration
beyond its ``@kernel`` decorators.
"""
