#!/usr/bin/env python3
"""Writes the committed seed corpora (fuzz/corpus/<target>/seed-*): a few
valid inputs per target in the input layout its source documents. Run from
fuzz/: python3 seeds/gen.py"""
import os
import struct

W, N, IND = 2, 1, 4  # VRING_DESC_F_WRITE, _NEXT, _INDIRECT


def ring_layout(sizes):
    at, out = 0, []
    for n in sizes:
        desc = at
        avail = desc + 16 * n
        used = (avail + 6 + 2 * n + 3) & ~3
        at = (used + 6 + 8 * n + 15) & ~15
        out.append((desc, avail, used))
    return out


class Image:
    def __init__(self):
        self.b = bytearray()

    def put(self, at, data):
        if len(self.b) < at + len(data):
            self.b.extend(b"\0" * (at + len(data) - len(self.b)))
        self.b[at:at + len(data)] = data

    def desc(self, table, i, addr, ln, flags, nxt=0):
        self.put(table + 16 * i, struct.pack("<QIHH", addr, ln, flags, nxt))

    def avail(self, at, heads, idx=None):
        self.put(at, struct.pack("<HH", 0, len(heads) if idx is None else idx))
        for k, h in enumerate(heads):
            self.put(at + 4 + 2 * k, struct.pack("<H", h))


def script_input(script, image):
    return struct.pack("<H", len(script)) + bytes(script) + bytes(image)


def write(target, name, data):
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def u32(v):
    return list(struct.pack("<I", v))


def u16(v):
    return list(struct.pack("<H", v))


def net_seeds():
    for name, feats in [("plain", 0), ("event-idx", 1), ("mrg", 2), ("event-idx-mrg", 3)]:
        (rxd, rxa, rxu), (txd, txa, txu) = ring_layout([8, 8])
        im = Image()
        # RX: three lone writable buffers, one chain spanning regions A and B.
        for i in range(3):
            im.desc(rxd, i, 0x4000 + 0x800 * i, 0x600, W)
        im.desc(rxd, 3, 0x7c00, 0x800, W | N, 4)
        im.desc(rxd, 4, 0x10000, 0x100, W)
        im.avail(rxa, [0, 1, 2, 3])
        # TX: a lone frame, a two-descriptor chain, an indirect table.
        im.desc(txd, 0, 0x6000, 64, 0)
        im.desc(txd, 1, 0x6100, 12, N, 2)
        im.desc(txd, 2, 0x6200, 50, 0)
        im.desc(txd, 3, 0x600, 32, IND)
        im.desc(0x600, 0, 0x6300, 12, N, 1)
        im.desc(0x600, 1, 0x6400, 40, 0)
        im.avail(txa, [0, 1, 3])
        cfg = 3 | (3 << 4)
        script = [cfg, feats]
        # Pass 1: pop 4 RX buffers, pop 4 TX frames; no guest writes.
        script += [3, 0, 4, 7, 4, 1, 1, 0]
        # Pass 2: complete, complete_frame, refuse; TX complete and drop.
        script += [5, 2, 0] + u32(100) + [4, 0] + u32(60) + [5, 0, 8, 0, 9, 0, 0]
        # Pass 3: a bogus completion and a guest write of the RX avail idx.
        script += [1, 6] + u16(7) + u32(10) + [1] + u16(rxa + 2) + u16(5)
        script += [2, 0, 4, 10] + u16(300) + [0]
        write("virtio_net", name, script_input(script, im.b))


if __name__ == "__main__":
    net_seeds()
