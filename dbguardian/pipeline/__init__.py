"""Streaming stages (compress, decompress, digest) and the external-program source/sink."""
