"""The ring: a pure timing wheel over integer ticks (no threads, no I/O, no clock).

It reads and writes nothing of a record but ``at``: its tick while the ring holds it,
None otherwise.  Its behaviour never depends on which int object a tick is.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wheelq import _Bucket, _Rec, _Ring


def rec(tid, due=0.0):
    return _Rec(str(tid), "t", (), due)


def ids(recs):
    return [r.id for r in recs]


def test_add_and_advance_in_tick_order():
    ring = _Ring(8, last=100)
    for tid, k in [("c", 105), ("a", 101), ("b", 103), ("b2", 103)]:
        ring.add(rec(tid), k)
    assert len(ring) == 4
    assert ids(ring.advance(102)) == ["a"]
    assert ring.advance(102) == []
    assert ids(ring.advance(104)) == ["b", "b2"]  # several in one tick keep insertion order
    assert ids(ring.advance(110)) == ["c"]
    assert len(ring) == 0
    assert ring.last == 110


def test_rounds_share_a_slot_but_fire_in_their_own_round():
    ring = _Ring(4, last=0)
    ring.add(rec("round0"), 2)
    ring.add(rec("round1"), 6)   # same slot (6 % 4 == 2), next round
    ring.add(rec("round5"), 22)  # same slot, five rounds on
    assert ids(ring.advance(2)) == ["round0"]
    assert ids(ring.advance(5)) == []
    assert ids(ring.advance(6)) == ["round1"]
    assert ids(ring.advance(21)) == []
    assert ids(ring.advance(22)) == ["round5"]


def test_add_at_or_before_last_goes_to_the_next_tick():
    ring = _Ring(16, last=50)
    early = rec("early")
    ring.add(early, 10)
    ring.add(rec("now"), 50)
    assert early.at == 51
    assert ids(ring.advance(51)) == ["early", "now"]


def test_advance_backwards_does_nothing_and_repeats_nothing():
    ring = _Ring(8, last=0)
    ring.add(rec("x"), 3)
    assert ids(ring.advance(5)) == ["x"]
    assert ring.advance(2) == []
    assert ring.last == 5
    late = rec("late")
    ring.add(late, 4)  # at or before the processed tick
    assert late.at == 6


def test_remove_single_and_from_a_shared_tick():
    ring = _Ring(8, last=0)
    a, b, c = rec("a"), rec("b"), rec("c")
    ring.add(a, 3)
    ring.add(b, 5)
    ring.add(c, 5)
    assert ring.remove(a) is True
    assert ring.remove(a) is False
    assert ring.remove(b) is True
    assert len(ring) == 1
    assert a.at is None and b.at is None  # removed: out of the ring
    assert ids(ring.advance(10)) == ["c"]
    assert c.at is None  # advance takes out what it returns
    assert ring.remove(c) is False


def test_a_record_removed_and_added_back_to_its_tick_fires_once():
    ring = _Ring(8, last=0)
    a, b = rec("a"), rec("b")
    ring.add(a, 5)
    ring.add(b, 5)
    ring.remove(a)
    ring.add(a, 5)  # its dead entry is still in the bucket
    ring.remove(b)
    ring.add(b, 5)
    assert len(ring) == 2
    assert ids(ring.advance(5)) == ["a", "b"]
    assert len(ring) == 0


def test_a_tick_whose_records_all_leave_is_dropped():
    ring = _Ring(8, last=0)
    recs = [rec(i) for i in range(5)]
    for r in recs:
        ring.add(r, 3)
    for r in recs:
        assert ring.remove(r) is True
    assert ring.slots[3] == {}
    assert len(ring) == 0
    assert ring.advance(10) == []


def test_a_mostly_dead_bucket_is_compacted():
    """Cancelling many tasks of one tick leaves no pile of dead entries behind."""
    ring = _Ring(8, last=0)
    recs = [rec(i) for i in range(1000)]
    for r in recs:
        ring.add(r, 4)
    for r in recs[:990]:
        ring.remove(r)
        ring.add(r, 4)  # added back: a duplicate entry each time
        ring.remove(r)
    bucket = ring.slots[4][4]
    assert isinstance(bucket, _Bucket)
    assert len(bucket) <= 2 * 10 + 9  # live entries, plus dead ones below the threshold
    assert len(ring) == 10
    assert ids(ring.advance(4)) == [str(i) for i in range(990, 1000)]


def test_catch_up_after_more_than_a_revolution_takes_all_passed_ticks_once():
    ring = _Ring(4, last=0)
    for k in [1, 2, 3, 5, 9, 13, 14, 30, 31]:
        ring.add(rec("t%d" % k), k)
    out = ring.advance(14)  # 14 ticks behind on a 4-slot wheel: one sweep
    assert ids(out) == ["t1", "t2", "t3", "t5", "t9", "t13", "t14"]
    assert len(ring) == 2
    assert ids(ring.advance(31)) == ["t30", "t31"]
    assert len(ring) == 0


def test_catch_up_sorts_by_tick_and_leaves_future_rounds_in_place():
    ring = _Ring(3, last=0)
    for k in [7, 2, 100, 4]:
        ring.add(rec("t%d" % k), k)
    assert ids(ring.advance(50)) == ["t2", "t4", "t7"]
    assert ids(ring.advance(99)) == []
    assert ids(ring.advance(100)) == ["t100"]


class CountingDict(dict):
    """A slot that counts the calls that would scan it."""

    scans = 0

    def __iter__(self):
        CountingDict.scans += 1
        return super().__iter__()

    def values(self):
        CountingDict.scans += 1
        return super().values()

    def keys(self):
        CountingDict.scans += 1
        return super().keys()

    def items(self):
        CountingDict.scans += 1
        return super().items()


def test_an_idle_tick_touches_no_pending_task():
    ring = _Ring(16, last=0)
    ring.slots = [CountingDict() for _ in range(16)]
    for i in range(5000):  # many rounds into the future, in every slot
        ring.add(rec(i), 1000 + i)
    CountingDict.scans = 0
    for to in range(1, 200):
        assert ring.advance(to) == []
    assert CountingDict.scans == 0
    assert len(ring) == 5000


BASE = 10**6  # ticks past the small ints Python shares, as real ticks are

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(-5, 60)),
        st.tuples(st.just("remove"), st.integers(0, 200)),
        st.tuples(st.just("readd"), st.integers(0, 200)),
        st.tuples(st.just("advance"), st.integers(-5, 80)),
        st.tuples(st.just("rebuild"), st.integers(0, 200)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(nslots=st.integers(1, 9), script=ops)
def test_ring_matches_a_sorted_model(nslots, script):
    """Against a plain model: nothing early, nothing lost, nothing twice, in tick order.

    Ticks are big ints computed afresh (``BASE + arg``), and "rebuild" replaces a held
    record's ``at`` by an equal int made elsewhere: liveness must not depend on identity.
    """
    ring = _Ring(nslots, last=BASE)
    model = {}  # id -> (tick, seq)
    added = []
    seq = 0
    for op, arg in script:
        if op == "add":
            r = rec(seq)
            ring.add(r, BASE + arg)
            model[r.id] = (max(BASE + arg, ring.last + 1), seq)
            assert r.at == model[r.id][0]
            added.append(r)
            seq += 1
        elif op == "readd" and added:
            # A record that left the ring (cancelled, or run and retried) comes back.
            r = added[arg % len(added)]
            if r.id not in model:
                assert r.at is None
                ring.add(r, BASE + arg % 70 - 5)
                model[r.id] = (r.at, seq)
                seq += 1
        elif op == "rebuild" and added:
            r = added[arg % len(added)]
            if r.at is not None:
                r.at = int(str(r.at))  # the same tick, another int object
        elif op == "remove" and added:
            r = added[arg % len(added)]
            assert ring.remove(r) is (r.id in model)
            model.pop(r.id, None)
        elif op == "advance":
            before = ring.last
            got = ring.advance(BASE + arg)
            want = sorted((v for v in model.items() if v[1][0] <= BASE + arg), key=lambda kv: kv[1])
            assert ids(got) == [kv[0] for kv in want]
            for r in got:
                assert before < model[r.id][0] <= max(BASE + arg, before)
                assert r.at is None
                del model[r.id]
            assert ring.last == max(before, BASE + arg)
        assert len(ring) == len(model)


@settings(max_examples=200, deadline=None)
@given(nslots=st.integers(1, 9), last=st.integers(0, 20), ticks=st.lists(st.integers(0, 60), max_size=40),
       gone=st.sets(st.integers(0, 39)))
def test_fill_places_records_as_add_does(nslots, last, ticks, gone):
    """A replay fills an empty ring at once; it must be the ring that add() would build."""
    base = 10**6  # ticks past the small ints that Python shares, as real ticks are
    last += base
    by_add, by_fill = _Ring(nslots, last), _Ring(nslots, last)
    a = [rec(i, due=float(base + k)) for i, k in enumerate(ticks)]
    f = [rec(i, due=float(base + k)) for i, k in enumerate(ticks)]
    for r in a:
        by_add.add(r, int(r.due))
    assert by_fill.fill(f, int) == len(f)
    assert [r.at for r in f] == [r.at for r in a]  # clamped past ``last`` alike
    assert len(by_fill) == len(by_add)
    for i in gone:  # records leave a filled ring as they leave an added one
        if i < len(a):
            assert by_fill.remove(f[i]) and by_add.remove(a[i])
    for to in range(last, base + 70, 7):
        assert ids(by_fill.advance(to)) == ids(by_add.advance(to))
    assert len(by_fill) == len(by_add) == 0


def test_rewind_goes_on_from_an_earlier_tick_and_repeats_nothing():
    """The clock went back: new records fire by the new clock; what ran is gone."""
    ring = _Ring(8, last=BASE + 100)
    later = rec("later", due=BASE + 150)
    ring.add(later, BASE + 150)
    pushed = rec("pushed", due=BASE + 42)  # added after the clock went back, before the rewind
    ring.add(pushed, BASE + 42)
    assert pushed.at == BASE + 101
    ring.rewind(BASE + 40, lambda r: int(r.due))
    assert ring.last == BASE + 40
    assert pushed.at == BASE + 42  # back to its own tick
    soon = rec("soon")
    ring.add(soon, BASE + 41)
    assert soon.at == BASE + 41  # not pushed past the old last tick
    assert ids(ring.advance(BASE + 41)) == ["soon"]
    assert ids(ring.advance(BASE + 149)) == ["pushed"]
    assert ids(ring.advance(BASE + 150)) == ["later"]
    ring.rewind(BASE + 500, lambda r: int(r.due))  # forwards is not a rewind
    assert ring.last == BASE + 150


def test_take_early_takes_only_the_ready_records_of_a_future_tick():
    ring = _Ring(8, last=BASE)
    a, b, c = rec("a", due=1.0), rec("b", due=2.0), rec("c", due=1.5)
    for r in (a, b, c):
        ring.add(r, BASE + 1)
    ring.remove(c)
    ring.add(c, BASE + 1)  # a dead entry of c stays behind it
    assert ids(ring.take_early(BASE + 1, lambda r: r.due <= 1.5)) == ["a", "c"]
    assert ring.last == BASE and len(ring) == 1
    assert ids(ring.advance(BASE + 1)) == ["b"]
