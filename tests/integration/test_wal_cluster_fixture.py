"""The archiving test cluster itself: basic_archive puts finished segments into the spool."""

from __future__ import annotations

from tests.support.walcluster import WalCluster


def test_switched_segment_lands_in_the_spool(wal_cluster: WalCluster) -> None:
    segment = wal_cluster.switch_wal()
    wal_cluster.wait_archived(segment)
    assert (wal_cluster.spool / segment).stat().st_size == 16 * 1024 * 1024
    assert wal_cluster.psql("SELECT rolreplication FROM pg_roles WHERE rolname = 'backup'") == "t"
