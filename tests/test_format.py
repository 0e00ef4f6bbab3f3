import numpy as np
import pytest

from latentstore.format import (Padding, decode_npy, encode_npy, sample_key, shard_name,
                                smallest_int_dtype)


@pytest.mark.parametrize("lo,hi,expected", [
    (-128, 127, np.int8), (-129, 0, np.int16), (0, 128, np.int16),
    (-40000, 5, np.int32), (0, 2**31, np.int64), (0, 0, np.int8),
])
def test_smallest_int_dtype_never_clips(lo, hi, expected):
    a = np.array([lo, hi], dtype=np.int64)
    dt = smallest_int_dtype(a)
    assert dt == np.dtype(expected)
    assert np.array_equal(a.astype(dt).astype(np.int64), a)


def test_224_crop_padded_to_256_has_valid_latent_rows_1_to_14():
    pad = Padding.centered(224, 224)
    assert pad.as_dict() == {"top": 16, "bottom": 16, "left": 16, "right": 16}
    assert pad.valid_region(224, 224) == [1, 15, 1, 15]


def test_odd_sizes_pad_to_multiples_of_64_and_cover_every_pixel():
    pad = Padding.centered(100, 130)
    assert (100 + pad.top + pad.bottom) % 64 == 0 and (130 + pad.left + pad.right) % 64 == 0
    r0, r1, c0, c1 = pad.valid_region(100, 130)
    assert r0 * 16 <= pad.top and r1 * 16 >= pad.top + 100
    assert c0 * 16 <= pad.left and c1 * 16 >= pad.left + 130


def test_npy_round_trip_and_no_pickle():
    a = np.arange(12, dtype=np.float16).reshape(3, 4)
    assert np.array_equal(decode_npy(encode_npy(a)), a)
    with pytest.raises(ValueError):
        encode_npy(np.array([{"a": 1}], dtype=object))


def test_keys_and_shard_names():
    assert sample_key("n01440764_10026", 3) == "n01440764_10026_v003"
    with pytest.raises(ValueError):
        sample_key("a.b", 0)
    assert shard_name("train", 2, 7) == "train/v002-000007.tar"
