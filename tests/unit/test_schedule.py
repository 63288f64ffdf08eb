from __future__ import annotations

from bisector.model.schedule import PROFILES, ScheduleProfile, build_schedule, describe

RANGES = {"B": (1, 16), "H": (5, 100), "W": (5, 100)}


def _volume(d: dict) -> int:
    return d["B"] * d["H"] * d["W"]


def test_same_seed_same_schedule_other_seed_other_shapes() -> None:
    a = build_schedule(RANGES, PROFILES["eager"], seed=3)
    b = build_schedule(RANGES, PROFILES["eager"], seed=3)
    c = build_schedule(RANGES, PROFILES["eager"], seed=4)
    assert a == b
    assert [s.dims for s in a.steps] != [s.dims for s in c.steps]


def test_phases_in_order_with_the_profile_counts() -> None:
    p = ScheduleProfile(shapes=4, warmup_passes=2, repeat_passes=3, novel=6, within=5)
    s = build_schedule(RANGES, p, seed=0)
    phases = [st.phase for st in s.steps]
    assert phases == ["warmup"] * 8 + ["repeat"] * 12 + ["novel"] * 6 + ["within"] * 5
    assert describe(s) == "8 warmup, 12 repeat, 6 novel, 5 within"


def test_eager_warms_up_the_largest_shape_first_and_never_repeats_it() -> None:
    s = build_schedule(RANGES, PROFILES["eager"], seed=0)
    assert s.steps[0].phase == "warmup" and s.steps[0].dims == {"B": 16, "H": 100, "W": 100}
    assert all(st.dims != s.steps[0].dims for st in s.steps[1:])
    assert len(s.phase("novel")) >= PROFILES["eager"].novel - 1
    inference = build_schedule(RANGES, PROFILES["inference"], seed=0)
    assert inference.phase("novel")[-1].dims == {"B": 16, "H": 100, "W": 100}  # a new maximum there


def test_repeats_cycle_the_warmup_shapes_from_the_lower_half() -> None:
    s = build_schedule(RANGES, PROFILES["inference"], seed=1)
    repeat_set = {st.key() for st in s.phase("repeat")}
    assert repeat_set == {st.key() for st in s.phase("warmup")}
    assert len(repeat_set) == PROFILES["inference"].shapes
    for st in s.phase("repeat"):
        assert st.dims["B"] <= 8 and st.dims["H"] <= 52 and st.dims["W"] <= 52


def test_novel_shapes_are_new_and_each_larger_than_all_before_in_inference() -> None:
    s = build_schedule(RANGES, PROFILES["inference"], seed=2)
    seen = {st.key() for st in s.phase("repeat")}
    largest = max(_volume(st.dims) for st in s.phase("repeat"))
    for st in s.phase("novel"):
        assert st.key() not in seen
        assert _volume(st.dims) > largest
        largest = _volume(st.dims)
        seen.add(st.key())
    last = s.phase("novel")[-1].dims
    assert last == {"B": 16, "H": 100, "W": 100}  # climbs to the top of every range


def test_within_shapes_are_unseen_and_no_larger_than_the_largest() -> None:
    s = build_schedule(RANGES, PROFILES["inference"], seed=5)
    before = {st.key() for st in s.steps if st.phase != "within"}
    keys = [st.key() for st in s.phase("within")]
    assert len(keys) == len(set(keys)) == PROFILES["inference"].within
    assert not set(keys) & before
    for st in s.phase("within"):
        assert all(RANGES[k][0] <= v <= RANGES[k][1] for k, v in st.dims.items())


def test_fixed_sizes_give_only_warmup_and_repeats() -> None:
    s = build_schedule({"B": (4, 4)}, PROFILES["eager"], seed=0)
    assert {st.phase for st in s.steps} == {"warmup", "repeat"}
    assert all(st.dims == {"B": 4} for st in s.steps)
    assert build_schedule({}, PROFILES["eager"]).steps[0].dims == {}


def test_narrow_ranges_do_not_invent_duplicate_shapes() -> None:
    s = build_schedule({"B": (1, 3)}, ScheduleProfile(shapes=4, novel=8, within=8), seed=0)
    keys = [st.key() for st in s.steps if st.phase in ("novel", "within")]
    assert len(keys) == len(set(keys))
    assert len(s.phase("repeat")) > 0


def test_scaled_profile_multiplies_iterations() -> None:
    p = PROFILES["eager"].scaled(2)
    assert p.repeat_passes == 2 * PROFILES["eager"].repeat_passes
    assert p.novel == 2 * PROFILES["eager"].novel
    assert p.shapes == PROFILES["eager"].shapes


def test_schedule_json_round_trip() -> None:
    from bisector.model.schedule import Schedule

    s = build_schedule(RANGES, PROFILES["export"], seed=9)
    assert Schedule.from_json(s.to_json()) == s
