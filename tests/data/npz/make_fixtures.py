#!/usr/bin/env python3
"""Writes the numpy-made .npy/.npz fixtures that tests/tools/test_npz.cpp reads.

Run from this directory: python3 make_fixtures.py. Values are deterministic, and the test
recomputes them (see expected_* in test_npz.cpp), so regenerating must not change them.
"""
import io
import zipfile

import numpy as np


def arrays():
    return {
        "f32": (np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5) / 4,
        "i64": np.array([-3, 0, 7, 1 << 40], dtype=np.int64),
        "scalar": np.array(2.5, dtype=np.float64),
        "flags": np.array([[True, False, True]], dtype=np.bool_),
        "u8": np.arange(5, dtype=np.uint8),
        "f16": np.array([1.0, -2.0, 0.5], dtype=np.float16),
        "empty": np.zeros((2, 0, 3), dtype=np.float32),
        "i32": np.arange(6, dtype=np.int32).reshape(1, 2, 3) * -1,
    }


class Unseekable(io.RawIOBase):
    """A sink zipfile cannot seek back in: it then writes data descriptors (flag bit 3)."""

    def __init__(self):
        self.buf = bytearray()

    def writable(self):
        return True

    def seekable(self):
        return False

    def write(self, b):
        self.buf += b
        return len(b)


def force_zip64_records(data):
    """Rewrites an archive so that its central directory keeps every size and offset in zip64
    extra fields and its end is a zip64 end record + locator, as zipfile does for > 4 GiB
    archives, without writing 4 GiB."""
    import struct
    eocd = data.rindex(b"PK\x05\x06")
    _, _, _, count, _, cd_size, cd_off, _ = struct.unpack("<IHHHHIIH", data[eocd:eocd + 22])
    out_cd = bytearray()
    pos = cd_off
    for _ in range(count):
        fixed = list(struct.unpack("<IHHHHHHIIIHHHHHII", data[pos:pos + 46]))
        name_len, extra_len, comment_len = fixed[10], fixed[11], fixed[12]
        name = data[pos + 46:pos + 46 + name_len]
        csize, usize, offset = fixed[8], fixed[9], fixed[16]
        extra = struct.pack("<HHQQQ", 1, 24, usize, csize, offset)
        fixed[8] = fixed[9] = fixed[16] = 0xFFFFFFFF
        fixed[11] = len(extra)
        fixed[12] = 0
        out_cd += struct.pack("<IHHHHHHIIIHHHHHII", *fixed) + name + extra
        pos += 46 + name_len + extra_len + comment_len
    body = data[:cd_off]
    new_cd_off = len(body)
    z64_off = new_cd_off + len(out_cd)
    z64 = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, len(out_cd),
                      new_cd_off)
    loc = struct.pack("<IIQI", 0x07064B50, 0, z64_off, 1)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(body) + bytes(out_cd) + z64 + loc + end


def main():
    a = arrays()
    np.savez("numpy_stored.npz", **a)
    np.savez_compressed("numpy_deflated.npz", **a)

    sink = Unseekable()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, arr in a.items():
            with z.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
    with open("numpy_descriptors.npz", "wb") as f:
        f.write(bytes(sink.buf))

    with open("numpy_stored.npz", "rb") as f:
        stored = f.read()
    with open("zip64_records.npz", "wb") as f:
        f.write(force_zip64_records(stored))

    np.save("f32_2d.npy", a["f32"])
    np.save("scalar.npy", a["scalar"])
    np.save("fortran_1d.npy", np.asfortranarray(np.arange(4, dtype=np.float32)))
    # A 2-D array in Fortran order: troupe rejects it as unsupported.
    with open("fortran_2d.npy", "wb") as f:
        np.lib.format.write_array(f, np.asfortranarray(a["f32"]), allow_pickle=False)
    np.save("big_endian.npy", np.arange(3, dtype=">f4"))


if __name__ == "__main__":
    main()
