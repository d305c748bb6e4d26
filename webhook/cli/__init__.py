"""The `podpatterns` command line: serve, offline inject and explain, catalog, policy and certs.

The top layer: it may import every other one, and none imports it.
"""
