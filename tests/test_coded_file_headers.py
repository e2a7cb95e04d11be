"""The coded file's header validated field by field (issue "Nothing silent"): a
header with a valid CRC-32 that renames, duplicates or reshapes sites, claims
out-of-range fields or sizes the file cannot hold is refused with a ValueError naming
the field — quickly and before any large allocation."""

import json
import math
import resource
import struct
import time
import zlib

import numpy as np
import pytest

from ppl_hw.coding import MAX_WEIGHTS_PER_BLOCK, CompressedModel, decode


def _model():
    rng = np.random.default_rng(0)
    return CompressedModel(
        sites=(("a", (3, 4)), ("b", (5,))),
        locs=(np.zeros((), np.float32), rng.normal(size=5).astype(np.float32)),
        scales=(np.ones((), np.float32), np.full(5, 0.5, np.float32)),
        indices=rng.integers(0, 2**10, size=4).astype(np.uint32),
        bits_per_block=10,
        seed=3,
        points=(("s", np.array([1.5], np.float32)),),
    )


def _split(data):
    version, gen, hlen = struct.unpack("<HHI", data[8:16])
    header = json.loads(data[16 : 16 + hlen].decode("utf-8"))
    return data[:8], version, gen, header, data[16 + hlen : -4]


def _join(magic, version, gen, header, rest, raw=None):
    h = raw if raw is not None else json.dumps(header).encode("utf-8")
    body = magic + struct.pack("<HHI", version, gen, len(h)) + h + rest
    return body + struct.pack("<I", zlib.crc32(body))


GOOD = _model()._to_bytes()


def _crafted(edit):
    magic, version, gen, header, rest = _split(GOOD)
    header = json.loads(json.dumps(header))
    out = edit(header, rest)
    if isinstance(out, tuple):
        header, rest = out
    return _join(magic, version, gen, header, rest)


def _set(path, value):
    def edit(h, rest):
        target = h
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


CASES = [
    ("seed float", _set(["seed"], 1.5), "seed"),
    ("seed negative", _set(["seed"], -1), "seed"),
    ("seed string", _set(["seed"], "3"), "seed"),
    ("bits 25", _set(["bits_per_block"], 25), "bits_per_block"),
    ("bits 64", _set(["bits_per_block"], 64), "bits_per_block"),
    ("bits 1e6", _set(["bits_per_block"], 10**6), "bits_per_block"),
    ("bits 0", _set(["bits_per_block"], 0), "bits_per_block"),
    ("num_blocks 0", _set(["num_blocks"], 0), "num_blocks"),
    ("num_blocks 2e8", _set(["num_blocks"], 2 * 10**8), "num_blocks"),
    ("num_blocks 1e9", _set(["num_blocks"], 10**9), "num_blocks"),
    ("num_blocks more than weights", _set(["num_blocks"], 18), "num_blocks"),
    ("num_blocks not the payload", _set(["num_blocks"], 3), "header describes"),
    ("renamed site (empty)", _set(["sites", 0, "name"], ""), "sites[0].name"),
    ("site name not a string", _set(["sites", 1, "name"], 7), "sites[1].name"),
    ("duplicate site", _set(["sites", 1, "name"], "a"), "duplicate"),
    ("point named as a site", _set(["points", 0, "name"], "b"), "duplicate"),
    ("shape 1e8", _set(["sites", 0, "shape"], [10**8]), "sites"),
    ("shape 1e12", _set(["sites", 0, "shape"], [10**6, 10**6]), "sites"),
    ("negative size", _set(["sites", 0, "shape"], [-3, 4]), "sites[0].shape"),
    ("site of no weight", _set(["sites", 0, "shape"], [0, 4]), "sites[0].shape"),
    ("float size", _set(["sites", 0, "shape"], [3.0, 4]), "sites[0].shape"),
    (
        "loc shape not the site's",
        _set(["sites", 1, "loc_shape"], [4]),
        "sites[1].loc_shape",
    ),
    ("scale shape huge", _set(["sites", 1, "scale_shape"], [10**9]), "scale_shape"),
    ("point shape huge", _set(["points", 0, "shape"], [10**9]), "header describes"),
    ("extra field", _set(["extra"], 1), "exactly the fields"),
    ("missing field", lambda h, r: h.pop("seed") and None, "exactly the fields"),
    ("site missing key", lambda h, r: h["sites"][0].pop("shape") and None, "sites[0]"),
    ("sites not a list", _set(["sites"], {"a": 1}), "sites"),
    ("no sites", _set(["sites"], []), "sites"),
]


@pytest.mark.parametrize(
    "edit, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_crafted_header_is_refused_naming_the_field(edit, words, tmp_path):
    data = _crafted(edit)
    path = tmp_path / "m.phw"
    path.write_bytes(data)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    # CPU time of this process (not wall time, which other processes stretch)
    start = time.process_time()
    with pytest.raises(ValueError) as info:
        decode(CompressedModel.load(path))
    elapsed = time.process_time() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert words in str(info.value), str(info.value)
    assert str(path) in str(info.value)
    assert elapsed < 0.1, elapsed
    assert grown < 100 * 1024, f"peak memory grew by {grown} KiB"


def _scaled(scale_value):
    """The file with site b's coding scales (float32 after the locs) replaced."""
    magic, version, gen, header, rest = _split(GOOD)
    # site a: loc () + scale () = 8 bytes; site b: loc (5,) 20 bytes, scale (5,) 20
    arr = np.frombuffer(rest, np.uint8).copy()
    start = 8 + 20
    arr[start : start + 20] = np.full(5, scale_value, "<f4").view(np.uint8)
    return _join(magic, version, gen, header, arr.tobytes())


@pytest.mark.parametrize("value", [np.nan, -1.0, 0.0, np.inf])
def test_bad_coding_scales_are_refused(value, tmp_path):
    path = tmp_path / "m.phw"
    path.write_bytes(_scaled(value))
    with pytest.raises(ValueError, match="site 'b' has coding scales"):
        CompressedModel.load(path)


def test_header_that_is_not_json_is_refused(tmp_path):
    magic, version, gen, header, rest = _split(GOOD)
    path = tmp_path / "m.phw"
    path.write_bytes(_join(magic, version, gen, header, rest, raw=b"\xff\xfe{"))
    with pytest.raises(ValueError, match="header is not UTF-8 JSON"):
        CompressedModel.load(path)


def test_header_length_past_the_end_is_refused():
    body = bytearray(GOOD[:-4])
    body[12:16] = struct.pack("<I", 2**31)
    data = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    with pytest.raises(ValueError, match="header length 2147483648 runs past"):
        CompressedModel._from_bytes(data)


def test_the_valid_file_still_round_trips(tmp_path):
    path = tmp_path / "m.phw"
    path.write_bytes(GOOD)
    back = CompressedModel.load(path)
    assert back._to_bytes() == GOOD
    assert math.prod(back.sites[0][1]) == 12


def test_the_per_block_cap_is_exact():
    """A header may claim up to MAX_WEIGHTS_PER_BLOCK weights per block (decoded),
    one more is refused."""
    at_cap = _crafted(_set(["sites", 0, "shape"], [4 * MAX_WEIGHTS_PER_BLOCK - 5]))
    weights = decode(CompressedModel._from_bytes(at_cap))
    assert weights["a"].shape == (4 * MAX_WEIGHTS_PER_BLOCK - 5,)
    over = _crafted(_set(["sites", 0, "shape"], [4 * MAX_WEIGHTS_PER_BLOCK - 4]))
    with pytest.raises(ValueError, match="more than MAX_WEIGHTS_PER_BLOCK=16384"):
        CompressedModel._from_bytes(over)
