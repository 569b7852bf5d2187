#!/usr/bin/env python3
"""Writes seed inputs for the `superblock` fuzz target into corpus/superblock/: valid mirrors of
1-4 legs of 2^21 512-byte sectors in a few states (the target recomputes CRCs when flag bit 2 is
set), so the fuzzer starts past the magic and checksum checks."""
import os
import struct

LEG = 1 << 21
DATA, BITMAP_START, BITMAP_SECTORS, TRACKING_START = 2097103, 2097103, 1, 2097104
SLOT_IN = 1536


def superblock(seq, gen, idx, states, clean=1, auth=0):
    b = bytearray(SLOT_IN)
    b[0:8] = b"DMIRROR\x01"
    struct.pack_into("<I", b, 8, 1)
    struct.pack_into("<QQ", b, 16, seq, gen)
    b[32:48] = b"\x4d" * 16
    b[48:52] = bytes([idx, len(states), auth, clean])
    struct.pack_into("<IQQQQQ", b, 52, 512, 1024, DATA, BITMAP_START, BITMAP_SECTORS, TRACKING_START)
    b[96] = 0
    struct.pack_into("<I", b, 100, 8)
    b[104:108] = b"tank"
    for k, st in enumerate(states):
        base = 256 + 40 * k
        b[base:base + 16] = bytes([10 + k]) * 16
        b[base + 16] = st
        struct.pack_into("<QQ", b, base + 24, 0, LEG)
    return bytes(b)


def leg(idx, states, gen=1, seq=0, clean=1):
    s0 = superblock(seq, gen, idx, states, clean) if seq % 2 == 0 else bytes(SLOT_IN)
    s1 = superblock(seq, gen, idx, states, clean) if seq % 2 == 1 else bytes(SLOT_IN)
    return struct.pack("<Q", LEG) + s0 + s1


os.makedirs("corpus/superblock", exist_ok=True)
cases = {
    "clean2": (1, [leg(0, [1, 1]), leg(1, [1, 1])]),
    "stale": (1, [leg(0, [1, 4], gen=2, seq=1), leg(1, [1, 1])]),
    "split": (1, [leg(0, [1, 4], gen=2, seq=1), leg(1, [4, 1], gen=2, seq=1)]),
    "three": (2, [leg(0, [1, 1, 3], gen=2, seq=1, clean=0), leg(1, [1, 1, 3], gen=2, seq=1), leg(2, [1, 1, 1])]),
    "one": (0, [leg(0, [1, 2, 4], gen=3, seq=2)]),
}
for name, (nm1, legs) in cases.items():
    for flags in (nm1 | 4, nm1 | 4 | 16):
        with open(f"corpus/superblock/{name}-{flags}", "wb") as f:
            f.write(bytes([flags]) + b"".join(legs))
