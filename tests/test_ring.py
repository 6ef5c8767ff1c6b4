"""The ring: a pure timing wheel over integer ticks (no threads, no I/O, no clock)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wheelq import _Rec, _Ring


def rec(tid, due=0.0):
    return _Rec(str(tid), "t", (), None, due)


def ids(recs):
    return [r.id for r in recs]


def test_add_and_advance_in_tick_order():
    ring = _Ring(8, last=100)
    for tid, k in [("c", 105), ("a", 101), ("b", 103), ("b2", 103)]:
        ring.add(rec(tid), k)
    assert len(ring) == 4
    assert ids(ring.advance(102)) == ["a"]
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
    assert early.k == 51
    assert ids(ring.advance(51)) == ["early", "now"]


def test_advance_backwards_does_nothing_and_repeats_nothing():
    ring = _Ring(8, last=0)
    ring.add(rec("x"), 3)
    assert ids(ring.advance(5)) == ["x"]
    assert ring.advance(2) == []
    assert ring.last == 5
    late = rec("late")
    ring.add(late, 4)  # at or before the processed tick
    assert late.k == 6


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
    assert ids(ring.advance(10)) == ["c"]
    assert ring.remove(c) is False


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


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(-5, 60)),
        st.tuples(st.just("remove"), st.integers(0, 200)),
        st.tuples(st.just("advance"), st.integers(-5, 80)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(nslots=st.integers(1, 9), script=ops)
def test_ring_matches_a_sorted_model(nslots, script):
    """Against a plain model: nothing early, nothing lost, nothing twice, in tick order."""
    ring = _Ring(nslots, last=0)
    model = {}  # id -> (tick, seq)
    added = []
    seq = 0
    for op, arg in script:
        if op == "add":
            r = rec(seq)
            ring.add(r, arg)
            model[r.id] = (max(arg, ring.last + 1), seq)
            assert r.k == model[r.id][0]
            added.append(r)
            seq += 1
        elif op == "remove" and added:
            r = added[arg % len(added)]
            assert ring.remove(r) is (r.id in model)
            model.pop(r.id, None)
        elif op == "advance":
            before = ring.last
            got = ring.advance(arg)
            want = sorted((v for v in model.items() if v[1][0] <= arg), key=lambda kv: kv[1])
            assert ids(got) == [kv[0] for kv in want]
            for r in got:
                assert before < r.k <= max(arg, before)
                del model[r.id]
            assert ring.last == max(before, arg)
        assert len(ring) == len(model)
