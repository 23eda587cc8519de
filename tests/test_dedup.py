"""Re-saved MIMIC-III duplicates: the latest STORETIME wins, ties keep the later row, chunks merge."""
from clinical_t5x.data import dedup


def test_latest_storetime_wins_and_ties_keep_the_later_row():
    found = dedup.ResavedDuplicates()
    found.add("k1", "2150-01-01 10:00:00", 0)
    found.add("k1", "2150-01-01 12:00:00", 1)  # the re-save: row 0 loses
    found.add("k2", "2150-01-01 09:00:00", 2)
    found.add("k2", "2150-01-01 09:00:00", 3)  # same time: the later row wins
    found.add("k3", "", 4)  # no time loses to a stored one
    found.add("k3", "2150-01-01 08:00:00", 5)
    found.add("k4", "2150-01-01 08:00:00", 6)  # alone: kept
    assert found.losers() == {0, 2, 4}
    assert len(found) == 7


def test_order_of_arrival_and_chunking_do_not_matter():
    rows = [("a", "2150-01-02 00:00:00", 7), ("a", "2150-01-01 00:00:00", 3),
            ("b", "2150-01-01 00:00:00", 9), ("a", "2150-01-03 00:00:00", 1)]
    whole = dedup.ResavedDuplicates()
    for row in rows:
        whole.add(*row)
    first, second = dedup.ResavedDuplicates(), dedup.ResavedDuplicates()
    for row in rows[::-1][:2]:
        first.add(*row)
    for row in rows[::-1][2:]:
        second.add(*row)
    assert first.merge(second).losers() == whole.losers() == {7, 3}
    assert dedup.ResavedDuplicates().losers() == frozenset()


def test_storetime_parsing():
    assert dedup.storetime_seconds("") == dedup.storetime_seconds("not a time") == -1
    later = dedup.storetime_seconds("2150-01-01 10:00:01")
    assert later - dedup.storetime_seconds("2150-01-01 10:00:00") == 1
    assert dedup.storetime_seconds("2150-01-01T11:00:01+01:00") == later  # offsets count as UTC
