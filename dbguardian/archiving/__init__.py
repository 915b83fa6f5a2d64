"""Continuous WAL archiving: the shipper (spool → every storage) and the fetcher (storage → recovery).

The object format is :mod:`dbguardian.catalog.archive`'s: one object per WAL file under
``<target>/wal/<timeline>/``, compressed then encrypted, the suffix naming both.
"""
