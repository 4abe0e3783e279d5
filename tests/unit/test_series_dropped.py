"""bcc_exporter_series_dropped_total counts each dropped series once, however often the metric
is collected (it used to add every over-limit key at every scrape, so its rate followed the
number of Prometheus servers)."""

from exporter.metrics.program import REMEMBERED_DROPPED, DroppedSeries


def test_a_series_dropped_at_every_collection_is_counted_once():
    dropped = DroppedSeries()
    assert dropped.collected({1, 2, 3}, 3) == 3
    for _ in range(5):
        assert dropped.collected({1, 2, 3}, 3) == 0
    assert dropped.total == 3


def test_new_series_count_even_when_as_many_left():
    dropped = DroppedSeries()
    dropped.collected({1, 2, 3}, 3)
    assert dropped.collected({2, 3, 4}, 3) == 1  # 1 left the map, 4 came
    assert dropped.collected(set(), 0) == 0
    assert dropped.collected({1}, 1) == 1  # back after it left: dropped anew
    assert dropped.total == 5


def test_past_what_is_remembered_only_the_growth_counts():
    dropped = DroppedSeries()
    many = REMEMBERED_DROPPED + 10
    first = set(range(REMEMBERED_DROPPED))  # the collection hands over the first ones only
    assert dropped.collected(first, many) == many
    assert dropped.collected(first, many) == 0
    assert dropped.collected(first, many + 5) == 5
    # Back under: nothing remembered from the collection before, so only the growth counts.
    assert dropped.collected({1, 2}, 2) == 0
    assert dropped.collected({1, 2, 3}, 3) == 1
    assert dropped.total == many + 6
