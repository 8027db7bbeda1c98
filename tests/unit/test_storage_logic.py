"""Pure storage logic: name, size, replication, PG, tier and device validation, free-space rules,
the human sizes in messages, and the views of /ceph documents."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as strat

from pvc.cluster import storage as st
from pvc.core.errors import InvalidInput

GIB = 1024**3


# -- names --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["vms", "web1_sda", "disk-0.img", "a", "x" * 100, "a+b:c=d", "ÿnicode"])
def test_good_names(name: str) -> None:
    assert st.check_name(name, "volume") == name


@pytest.mark.parametrize(("name", "words"), [
    ("", ("volume: a name is required",)),
    (None, ("volume: a name is required",)),
    ("a/b", ("volume: 'a/b'", "'/'")),
    ("a b", ("volume: 'a b'", "spaces")),
    (" a", ("spaces",)),
    ("a\tb", ("blanks",)),
    ("a@b", ("volume: 'a@b'", "'@'")),
    ('a"b', ("quotes",)),
    ("a\\b", ("'\\'",)),
    ("a\x01b", ("control characters",)),
    (".", ("not a valid name",)),
    ("..", ("not a valid name",)),
    ("-rf", ("start with '-'",)),
    ("x" * 101, ("too long", "101 characters", "at most 100")),
])
def test_bad_names_are_refused_naming_field_and_value(name: str | None, words: tuple[str, ...]) -> None:
    with pytest.raises(InvalidInput) as caught:
        st.check_name(name, "volume")
    for word in words:
        assert word in caught.value.message


@given(strat.text(min_size=1, max_size=120))
def test_accepted_names_are_safe_path_elements(name: str) -> None:
    try:
        st.check_name(name, "volume")
    except InvalidInput:
        return
    assert "/" not in name and "@" not in name and name not in (".", "..")
    assert not any(ch.isspace() for ch in name) and name.isprintable() and len(name) <= 100


# -- sizes --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "size"), [
    ("1024", 1024), ("1K", 1024), ("1k", 1024), ("1KB", 1024), ("1KiB", 1024), ("1.5G", 3 * GIB // 2),
    ("10G", 10 * GIB), ("2T", 2 * 1024**4), ("1E", 1024**6), ("3Q", 3 * 1024**10), (" 4 M ", 4 * 1024**2),
])
def test_sizes(text: str, size: int) -> None:
    assert st.parse_volume_size(text) == size


@pytest.mark.parametrize(("text", "words"), [
    ("G", ("size: 'G'", "no number")),
    ("GB", ("no number",)),
    ("", ("size: a size is required",)),
    (None, ("size: a size is required",)),
    ("-1G", ("size: '-1G' is negative",)),
    ("- 5", ("negative",)),
    ("0", ("greater than zero",)),
    ("0.1", ("greater than zero",)),      # less than one byte
    ("10X", ("size: '10X' is not a size",)),
    ("1e9", ("not a size",)),
    ("ten", ("no number",)),
    ("1G1", ("not a size",)),
])
def test_bad_sizes(text: str | None, words: tuple[str, ...]) -> None:
    with pytest.raises(InvalidInput) as caught:
        st.parse_volume_size(text)
    for word in words:
        assert word in caught.value.message


def test_size_field_name_is_used() -> None:
    with pytest.raises(InvalidInput, match=r"^new_size: "):
        st.parse_volume_size("-2G", "new_size")


@pytest.mark.parametrize(("size", "text"), [
    (1, "1B"), (1023, "1023B"), (1024, "1K"), (GIB, "1G"), (3 * GIB // 2, "1536M"), (10 * GIB, "10G"),
    (1024**4, "1T"), (12345, "13K"), (10 * GIB + 1, "11G"), (3 * 1024**10, "3Q"),
])
def test_human_size(size: int, text: str) -> None:
    assert st.human_size(size) == text


@given(strat.integers(min_value=1, max_value=1024**6))
def test_human_size_round_trips_or_rounds_up(size: int) -> None:
    assert st.parse_volume_size(st.human_size(size)) >= size


# -- replication, PGs, tiers --------------------------------------------------------------------

@pytest.mark.parametrize(("text", "pair"), [
    ("copies=3,mincopies=2", (3, 2)), ("mincopies=1,copies=2", (2, 1)),
    (" copies = 1 , mincopies=1 ", (1, 1)),
    ("copies=10,mincopies=10", (10, 10)),
])
def test_replcfg(text: str, pair: tuple[int, int]) -> None:
    assert st.parse_replcfg(text) == pair


@pytest.mark.parametrize(("text", "words"), [
    ("", ("replcfg", "both copies and mincopies")),
    ("copies=3", ("both copies and mincopies",)),
    ("copies=3,mincopies=2,copies=4", ("not a replication configuration",)),
    ("size=3,min_size=2", ("not a replication configuration",)),
    ("copies=three,mincopies=2", ("copies 'three' is not a whole number",)),
    ("copies=-1,mincopies=1", ("not a whole number",)),
    ("copies=0,mincopies=0", ("copies=0 must be between 1 and 10",)),
    ("copies=11,mincopies=2", ("between 1 and 10",)),
    ("copies=2,mincopies=3", ("mincopies=3 must be between 1 and copies (2)",)),
    ("copies=2,mincopies=0", ("mincopies=0",)),
])
def test_bad_replcfg(text: str, words: tuple[str, ...]) -> None:
    with pytest.raises(InvalidInput) as caught:
        st.parse_replcfg(text)
    assert caught.value.message.startswith("replcfg: ")
    for word in words:
        assert word in caught.value.message


def test_pgs() -> None:
    assert st.check_pgs(48) == 48
    assert st.check_pgs(64, power_of_two=True) == 64
    with pytest.raises(InvalidInput, match="pgs: 48 is not a power of two"):
        st.check_pgs(48, power_of_two=True)
    for bad in (0, -8, 65537):
        with pytest.raises(InvalidInput, match=r"^pgs: "):
            st.check_pgs(bad)


def test_tiers() -> None:
    assert st.check_tier(None) == "default"
    assert [st.check_tier(t) for t in ("hdd", "ssd", "nvme", "default")] == ["hdd", "ssd", "nvme", "default"]
    with pytest.raises(InvalidInput, match="tier: 'tape' is not one of default, hdd, ssd, nvme"):
        st.check_tier("tape")


# -- OSD inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["/dev/sdb", "/dev/disk/by-path/pci-0000:00:1f.2-ata-1",
                                    "/dev/nvme0n1", "detect:INTEL:800G:0"])
def test_devices(device: str) -> None:
    assert st.check_device(device) == device


@pytest.mark.parametrize("device", ["", "sdb", "/tmp/x", "/dev/sd b", "/dev/../etc/passwd", "detect:a:b",
                                    "detect::800G:0"])
def test_bad_devices(device: str) -> None:
    with pytest.raises(InvalidInput, match=r"^device: "):
        st.check_device(device)


def test_weight_and_db_options() -> None:
    assert st.check_weight(0.5) == 0.5
    for bad in (0.0, -1.0, float("nan"), float("inf"), None):
        with pytest.raises(InvalidInput, match=r"^weight: "):
            st.check_weight(bad)
    assert st.check_db_options(None, None) == (None, None)
    assert st.check_db_options(0.05, None) == (0.05, None)
    assert st.check_db_options(None, "20G") == (None, 20 * GIB)
    with pytest.raises(InvalidInput, match="mutually exclusive"):
        st.check_db_options(0.05, "20G")
    for ratio in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(InvalidInput, match=r"^ext_db_ratio: "):
            st.check_db_options(ratio, None)
    with pytest.raises(InvalidInput, match=r"^ext_db_size: 'lots'"):
        st.check_db_options(None, "lots")


def test_osd_ids() -> None:
    assert st.check_osd_id("12") == 12
    for bad in ("", "a", "-1", "1.5", "1" * 10):
        with pytest.raises(InvalidInput, match="is not an OSD ID"):
            st.check_osd_id(bad)


# -- free space ---------------------------------------------------------------------------------

def test_safe_free_is_what_fits_until_80_percent() -> None:
    space = st.PoolSpace(stored=20 * GIB, free=80 * GIB)
    assert space.safe_free == 60 * GIB            # (20+80)*0.8 - 20
    assert st.PoolSpace(stored=90 * GIB, free=10 * GIB).safe_free == -10 * GIB


def test_check_space() -> None:
    space = st.PoolSpace(stored=20 * GIB, free=80 * GIB)
    st.check_space(60 * GIB - 1, space, "vms", force=False)
    with pytest.raises(InvalidInput) as caught:
        st.check_space(60 * GIB, space, "vms", force=False)
    assert caught.value.message == ("size: '60G' is greater than the safe free space in pool \"vms\" ('60G' "
                                    "until 80% full); retry with force to ignore this limit")
    st.check_space(80 * GIB - 1, space, "vms", force=True)
    with pytest.raises(InvalidInput) as caught:
        st.check_space(80 * GIB, space, "vms", force=True, field="new_size")
    assert caught.value.message == "new_size: '80G' is greater than the free space in pool \"vms\" ('80G')"
    with pytest.raises(InvalidInput, match=r"safe free space .*'0B'"):
        st.check_space(1, st.PoolSpace(stored=90 * GIB, free=10 * GIB), "vms", force=False)


@given(strat.integers(0, 1 << 50), strat.integers(0, 1 << 50), strat.integers(1, 1 << 51), strat.booleans())
def test_accepted_sizes_always_fit(stored: int, free: int, size: int, force: bool) -> None:
    space = st.PoolSpace(stored, free)
    try:
        st.check_space(size, space, "p", force)
    except InvalidInput:
        assert size >= free or (not force and size >= space.safe_free)
        return
    assert size < free
    assert force or stored + size < (stored + free) * 0.8 + 1


def test_df_figures() -> None:
    df = {"stats": {}, "pools": [
        {"name": "rbd", "id": 1, "stats": {"stored": 5, "objects": 2, "bytes_used": 15, "percent_used": 0.1,
                                           "max_avail": 100}},
        {"name": "vms", "id": 2, "stats": {"stored": 7, "objects": 3, "bytes_used": 21, "percent_used": 0.2,
                                           "max_avail": 200}},
    ]}
    assert st.df_space(df, "vms") == st.PoolSpace(7, 200)
    assert st.df_stats(df, "vms") == {"id": 2, "stored_bytes": 7, "free_bytes": 200, "used_bytes": 21,
                                      "used_percent": 0.2, "num_objects": 3}
    assert st.df_space(df, "nope") is None
    assert st.df_space(None, "vms") is None


# -- views --------------------------------------------------------------------------------------

def test_views() -> None:
    doc = {"name": "d", "pool": "vms", "stats": {"size": 3 * GIB // 2, "snapshot_count": 1}}
    volume = st.volume_view(doc, "vms", "d")
    assert volume == {"name": "d", "pool": "vms", "stats": {"size": "1536M", "snapshot_count": 1}}
    assert st.pool_view({"name": "vms", "pgs": 32}, "vms", 4) == {
        "name": "vms", "volume_count": 4, "tier": "default", "pgs": 32, "copies": None, "mincopies": None,
        "stats": {}}
    assert st.osd_view({"id": 3, "node": "hv1", "device": "/dev/sdb", "stats": {"up": "|"}}, "3") == {
        "id": "3", "fsid": "", "node": "hv1", "device": "/dev/sdb", "is_split": False, "db_device": "",
        "stats": {"up": "|"}}
    assert st.benchmark_view({"job": "j"}, "j")["benchmark_result"] == "Running"


def test_human_size_rounds_up_exactly_at_petabytes() -> None:
    # found by hypothesis: a float division lost the last byte of 64 PiB + 1
    assert st.human_size(64 * 1024**5 + 1) == "65P"
