"""Hashing, and the hashed OOV indices of StringLookup/IntegerLookup: TensorFlow's string hashes, bit for bit.

Keras hashes with tf.strings.to_hash_bucket_fast (FarmHash's Fingerprint64, which is
farmhashna::Hash64 from google/farmhash) or, given a salt, to_hash_bucket_strong (SipHash-2-4
keyed by the salt's two 64-bit words), then takes the hash modulo the number of buckets. Numbers
are hashed as their decimal text (floats truncated to integers first), as Keras's
`tf.as_string` does. The hashes below are plain Python integer arithmetic on the UTF-8 bytes;
tests hold TensorFlow's own values for strings of every length branch.
"""

from __future__ import annotations

import numpy as np

from ...errors import BadModelFile
from ...h5reader.text import shown
from ..base import Layer, Tensor, as_int, converter
from .encoding import encode, layer_dtype, output_mode
from .resizing import as_dtype

HASH_MASK = 0xFFFFFFFFFFFFFFFF
FARMHASH_K0 = 0xC3A5C85C97CB3127
FARMHASH_K1 = 0xB492B66FBE98F273
FARMHASH_K2 = 0x9AE16A3B2F90404F


def rotate_right64(v, shift):
    return ((v >> shift) | (v << (64 - shift))) & HASH_MASK


def rotate_left64(v, shift):
    return ((v << shift) | (v >> (64 - shift))) & HASH_MASK


def fetch64(data, i):
    return int.from_bytes(data[i : i + 8], "little")


def farmhash_len16(u, v, mul):
    a = ((u ^ v) * mul) & HASH_MASK
    a ^= a >> 47
    b = ((v ^ a) * mul) & HASH_MASK
    b ^= b >> 47
    return (b * mul) & HASH_MASK


def farmhash_weak32(data, i, a, b):
    w, x, y, z = fetch64(data, i), fetch64(data, i + 8), fetch64(data, i + 16), fetch64(data, i + 24)
    a = (a + w) & HASH_MASK
    b = rotate_right64((b + a + z) & HASH_MASK, 21)
    c = a
    a = (a + x + y) & HASH_MASK
    b = (b + rotate_right64(a, 44)) & HASH_MASK
    return (a + z) & HASH_MASK, (b + c) & HASH_MASK


def farmhash_short(data):
    # Fingerprint64 of at most 64 bytes.
    n, k0, k1, k2 = len(data), FARMHASH_K0, FARMHASH_K1, FARMHASH_K2
    mul = (k2 + n * 2) & HASH_MASK
    if n == 0:
        return k2
    if n < 4:
        y = data[0] + (data[n >> 1] << 8)
        z = n + (data[n - 1] << 2)
        v = ((y * k2) ^ (z * k0)) & HASH_MASK
        return ((v ^ (v >> 47)) * k2) & HASH_MASK
    if n < 8:
        a = int.from_bytes(data[0:4], "little")
        return farmhash_len16((n + (a << 3)) & HASH_MASK, int.from_bytes(data[n - 4 :], "little"), mul)
    if n <= 16:
        a = (fetch64(data, 0) + k2) & HASH_MASK
        b = fetch64(data, n - 8)
        c = (rotate_right64(b, 37) * mul + a) & HASH_MASK
        d = ((rotate_right64(a, 25) + b) * mul) & HASH_MASK
        return farmhash_len16(c, d, mul)
    first = k1 if n <= 32 else k2
    a = (fetch64(data, 0) * first) & HASH_MASK
    b = fetch64(data, 8)
    c = (fetch64(data, n - 8) * mul) & HASH_MASK
    d = (fetch64(data, n - 16) * k2) & HASH_MASK
    y = (rotate_right64((a + b) & HASH_MASK, 43) + rotate_right64(c, 30) + d) & HASH_MASK
    z = farmhash_len16(y, (a + rotate_right64((b + k2) & HASH_MASK, 18) + c) & HASH_MASK, mul)
    if n <= 32:
        return z
    e = (fetch64(data, 16) * mul) & HASH_MASK
    f = fetch64(data, 24)
    g = ((y + fetch64(data, n - 32)) * mul) & HASH_MASK
    h = ((z + fetch64(data, n - 24)) * mul) & HASH_MASK
    u = (rotate_right64((e + f) & HASH_MASK, 43) + rotate_right64(g, 30) + h) & HASH_MASK
    return farmhash_len16(u, (e + rotate_right64((f + a) & HASH_MASK, 18) + g) & HASH_MASK, mul)


def fingerprint64(data):
    # FarmHash Fingerprint64 (farmhashna::Hash64) of bytes, as TensorFlow's to_hash_bucket_fast.
    n, k0, k1, k2 = len(data), FARMHASH_K0, FARMHASH_K1, FARMHASH_K2
    if n <= 64:
        return farmhash_short(data)
    y = (81 * k1 + 113) & HASH_MASK
    t = (y * k2 + 113) & HASH_MASK
    z = ((t ^ (t >> 47)) * k2) & HASH_MASK
    x = (81 * k2 + fetch64(data, 0)) & HASH_MASK
    v0 = v1 = w0 = w1 = 0
    for s in range(0, ((n - 1) // 64) * 64, 64):
        x = (rotate_right64((x + y + v0 + fetch64(data, s + 8)) & HASH_MASK, 37) * k1) & HASH_MASK
        y = (rotate_right64((y + v1 + fetch64(data, s + 48)) & HASH_MASK, 42) * k1) & HASH_MASK
        x ^= w1
        y = (y + v0 + fetch64(data, s + 40)) & HASH_MASK
        z = (rotate_right64((z + w0) & HASH_MASK, 33) * k1) & HASH_MASK
        v0, v1 = farmhash_weak32(data, s, (v1 * k1) & HASH_MASK, (x + w0) & HASH_MASK)
        w0, w1 = farmhash_weak32(data, s + 32, (z + w1) & HASH_MASK, (y + fetch64(data, s + 16)) & HASH_MASK)
        z, x = x, z
    mul = (k1 + ((z & 0xFF) << 1)) & HASH_MASK
    s = n - 64  # the last 64 bytes
    w0 = (w0 + ((n - 1) & 63)) & HASH_MASK
    v0 = (v0 + w0) & HASH_MASK
    w0 = (w0 + v0) & HASH_MASK
    x = (rotate_right64((x + y + v0 + fetch64(data, s + 8)) & HASH_MASK, 37) * mul) & HASH_MASK
    y = (rotate_right64((y + v1 + fetch64(data, s + 48)) & HASH_MASK, 42) * mul) & HASH_MASK
    x ^= (w1 * 9) & HASH_MASK
    y = (y + v0 * 9 + fetch64(data, s + 40)) & HASH_MASK
    z = (rotate_right64((z + w0) & HASH_MASK, 33) * mul) & HASH_MASK
    v0, v1 = farmhash_weak32(data, s, (v1 * mul) & HASH_MASK, (x + w0) & HASH_MASK)
    w0, w1 = farmhash_weak32(data, s + 32, (z + w1) & HASH_MASK, (y + fetch64(data, s + 16)) & HASH_MASK)
    z, x = x, z
    first = (farmhash_len16(v0, w0, mul) + (y ^ (y >> 47)) * k0 + z) & HASH_MASK
    return farmhash_len16(first, (farmhash_len16(v1, w1, mul) + x) & HASH_MASK, mul)


def sip_rounds(v0, v1, v2, v3, rounds):
    for _ in range(rounds):
        v0 = (v0 + v1) & HASH_MASK
        v1 = rotate_left64(v1, 13) ^ v0
        v0 = rotate_left64(v0, 32)
        v2 = (v2 + v3) & HASH_MASK
        v3 = rotate_left64(v3, 16) ^ v2
        v0 = (v0 + v3) & HASH_MASK
        v3 = rotate_left64(v3, 21) ^ v0
        v2 = (v2 + v1) & HASH_MASK
        v1 = rotate_left64(v1, 17) ^ v2
        v2 = rotate_left64(v2, 32)
    return v0, v1, v2, v3


def siphash24(data, k0, k1):
    # SipHash-2-4 of bytes keyed by (k0, k1), as TensorFlow's to_hash_bucket_strong.
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573
    n = len(data)
    whole = n - n % 8
    last = data[whole:] + bytes(7 - n % 8) + bytes([n & 0xFF])
    for m in [fetch64(data, i) for i in range(0, whole, 8)] + [int.from_bytes(last, "little")]:
        v0, v1, v2, v3 = sip_rounds(v0, v1, v2, v3 ^ m, 2)
        v0 ^= m
    v0, v1, v2, v3 = sip_rounds(v0, v1, v2 ^ 0xFF, v3, 4)
    return v0 ^ v1 ^ v2 ^ v3


def hash_buckets(x, buckets, salt):
    # TensorFlow's to_hash_bucket_fast (salt None) or _strong (salt = two 64-bit words) of each
    # value's text (numbers as decimals, floats truncated first), modulo `buckets`.
    if x.dtype.kind == "f":
        x = x.astype(np.int64)
    out = np.empty(x.size, dtype=np.int64)
    for i, value in enumerate(x.ravel().tolist()):
        data = value.encode("utf-8") if isinstance(value, str) else str(value).encode("ascii")
        out[i] = (fingerprint64(data) if salt is None else siphash24(data, salt[0], salt[1])) % buckets
    return out.reshape(x.shape)


def hash_codes(x, bins, salt, mask_value):
    # Keras's Hashing: bucket of each value; with a mask_value, bucket 0 is the mask's and the others move up one.
    if mask_value is None or bins == 1:
        return hash_buckets(x, bins, salt)
    return np.where(x == mask_value, 0, hash_buckets(x, bins - 1, salt) + 1)


def fill_hashed(x, codes, buckets, start, salt):
    # Lookups with several OOV indices: unknown values (-1) go to OOV index start + hash bucket.
    return np.where(codes == -1, hash_buckets(x, buckets, salt) + start, codes)


def salt_words(layer: Layer) -> tuple | None:
    """Keras's `salt` (None, an int, or two ints) as TensorFlow's key: two unsigned 64-bit words."""
    salt = layer.get("salt")
    if salt is None:
        return None
    words = [salt, salt] if isinstance(salt, int) and not isinstance(salt, bool) else salt
    if not isinstance(words, list) or len(words) != 2:
        raise BadModelFile(f"{layer.describe()} has an invalid salt")
    return tuple(as_int(w, "salt") & HASH_MASK for w in words)


def hashable(layer: Layer, x: Tensor) -> None:
    # Keras 3 truncates floats to integers first; tf-keras cannot hash them (nor can either hash booleans).
    if x.dtype == "bool" or (x.dtype.startswith("float") and layer.keras_major < 3):
        raise layer.unsupported(f"hashing {x.dtype} values (Keras cannot either)")


@converter("Hashing", mask="drop")
def hashing_layer(layer: Layer) -> Tensor:
    layer.expect_weights()
    if layer.get("sparse"):
        raise layer.unsupported("sparse=True (sparse tensor outputs)")
    x = layer.input
    hashable(layer, x)
    bins = as_int(layer.get("num_bins"), "num_bins")
    if bins < 1:
        raise BadModelFile(f"{layer.describe()} has num_bins {bins}")
    mask = layer.get("mask_value")
    if not (mask is None or isinstance(mask, (str, int, float))) or isinstance(mask, bool):
        raise BadModelFile(f"{layer.describe()} has an invalid mask_value")
    if isinstance(mask, str) != (x.dtype == "string") and mask is not None:
        raise layer.unsupported(f"mask_value {shown(mask, 20)} of another type than the input")
    codes = layer.call(hash_codes, x, shape=x.shape, dtype="int64", bins=bins, salt=salt_words(layer), mask_value=mask)
    mode = output_mode(layer, "int")
    if mode == "int":
        dtype = layer_dtype(layer, "int64")
        return codes if dtype == "int64" else layer.call(as_dtype, codes, shape=x.shape, dtype=dtype, to=dtype)
    return encode(layer, codes, mode, bins, layer_dtype(layer), bounded=True)


@converter("HashedCrossing", mask="drop")
def hashed_crossing_layer(layer: Layer) -> Tensor:
    raise layer.unsupported(
        "crosses features with TensorFlow's sparse_cross hashing (FingerprintCat64), not implemented"
    )
