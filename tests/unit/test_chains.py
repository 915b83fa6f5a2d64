"""Incremental chains: which backups a restore combines, which link is missing, what retention keeps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dbguardian.chains import chain, missing_link, needed_by

PARENTS: dict[str, str | None] = {"full": None, "i1": "full", "i2": "i1", "i3": "i2", "other": None, "orphan": "gone"}


def test_the_chain_runs_from_the_full_backup_to_the_incremental() -> None:
    assert chain("i3", PARENTS) == ["full", "i1", "i2", "i3"]
    assert chain("full", PARENTS) == ["full"]
    assert chain("orphan", PARENTS) is None
    assert chain("unknown", PARENTS) is None
    assert chain("a", {"a": "b", "b": "a"}) is None  # a damaged catalog's loop ends


def test_the_missing_link_is_named() -> None:
    assert missing_link("i3", PARENTS) is None
    assert missing_link("orphan", PARENTS) == "gone"
    assert missing_link("i2", {**PARENTS, "i1": None} | {"full": None}) is None
    assert missing_link("i3", {k: v for k, v in PARENTS.items() if k != "i1"}) == "i1"
    assert missing_link("a", {"a": "b", "b": "a"}) in ("a", "b")


def test_needed_by_maps_each_ancestor_to_the_incremental_based_on_it() -> None:
    assert needed_by(["i3"], PARENTS) == {"i2": "i3", "i1": "i2", "full": "i1"}
    assert needed_by(["i1", "other"], PARENTS) == {"full": "i1"}
    assert needed_by(["orphan"], PARENTS) == {}
    assert needed_by(["a"], {"a": "b", "b": "a"}) == {"b": "a"}


@given(st.lists(st.integers(min_value=0, max_value=30), max_size=30), st.data())
def test_a_whole_chain_has_no_missing_link_and_contains_every_needed_ancestor(links: list[int], data: st.DataObject) -> None:
    parents: dict[str, str | None] = {}
    for index, parent in enumerate(links):
        parents[f"b{index}"] = f"b{parent % index}" if index and parent else None
    for backup_id in parents:
        whole = chain(backup_id, parents)
        assert whole is not None and whole[-1] == backup_id and parents[whole[0]] is None
        assert missing_link(backup_id, parents) is None
        assert set(needed_by([backup_id], parents)) == set(whole[:-1])
    if parents:
        dropped = data.draw(st.sampled_from(sorted(parents)))
        damaged = {k: v for k, v in parents.items() if k != dropped}
        for backup_id in damaged:
            whole = chain(backup_id, parents)
            assert whole is not None
            assert (chain(backup_id, damaged) is None) == (dropped in whole)
            assert (missing_link(backup_id, damaged) == dropped) == (dropped in whole)
