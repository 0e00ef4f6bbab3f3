"""Zarr v3 stores: the writer commits whole chunks per item group; the reader checks ``zarr.json``
against the manifest before it reads a chunk.
"""
