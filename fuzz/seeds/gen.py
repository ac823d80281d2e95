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


def http(method, path, body=None, extra=""):
    req = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}"
    if body is not None:
        req += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (req + "\r\n" + (body or "")).encode()


def http_seeds():
    write("api_http", "get-root", http("GET", "/"))
    write("api_http", "put-machine-config", http("PUT", "/machine-config", '{"vcpu_count":1,"mem_size_mib":128}'))
    write("api_http", "pipelined", http("GET", "/version") + http("PUT", "/boot-source", '{"kernel_image_path":"/k"}')
          + http("GET", "/vm/config"))
    write("api_http", "expect-continue-too-large",
          http("PUT", "/drives/rootfs", "", "Expect: 100-continue\r\nContent-Length: 99999999\r\n"))
    write("api_http", "chunked", b"PUT /logger HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
          b"5\r\n{\"lev\r\n0\r\n\r\n")
    write("api_http", "short-body", b"PUT /metrics HTTP/1.1\r\nContent-Length: 40\r\n\r\n{\"metrics_path\"")


if __name__ == "__main__":
    http_seeds()
    net_seeds()


def u64(v):
    return list(struct.pack("<Q", v))


def block_image(size=16):
    (d, a, u), = ring_layout([size])
    im = Image()
    hdr = 0x800
    # IN: header, 512-byte data, status.
    im.put(hdr, struct.pack("<IIQ", 0, 0, 1))
    im.desc(d, 0, hdr, 16, N, 1)
    im.desc(d, 1, 0x4000, 512, W | N, 2)
    im.desc(d, 2, 0x4200, 1, W)
    # OUT: header, 1 KiB spanning regions A and B, status.
    im.put(hdr + 16, struct.pack("<IIQ", 1, 0, 4))
    im.desc(d, 3, hdr + 16, 16, N, 4)
    im.desc(d, 4, 0x7e00, 1024, N, 5)
    im.desc(d, 5, 0x4800, 1, W)
    # FLUSH.
    im.put(hdr + 32, struct.pack("<IIQ", 4, 0, 0))
    im.desc(d, 6, hdr + 32, 16, N, 7)
    im.desc(d, 7, 0x4801, 1, W)
    # GET_ID: 20 bytes, then status.
    im.put(hdr + 48, struct.pack("<IIQ", 8, 0, 0))
    im.desc(d, 8, hdr + 48, 16, N, 9)
    im.desc(d, 9, 0x4900, 20, W | N, 10)
    im.desc(d, 10, 0x4920, 1, W)
    # IN past the end of the disk (sector 1000 of 128).
    im.put(hdr + 64, struct.pack("<IIQ", 0, 0, 1000))
    im.desc(d, 11, hdr + 64, 16, N, 12)
    im.desc(d, 12, 0x10000, 512, W | N, 13)
    im.desc(d, 13, 0x4a00, 1, W)
    im.avail(a, [0, 3, 6, 8, 11])
    return im, (d, a, u)


def block_seeds():
    im, (d, a, u) = block_image()
    write("virtio_block", "four-kinds", script_input([4], im.b))
    write("virtio_block", "four-kinds-event-idx", script_input([4 | 0x10], im.b))
    # A second pass after the guest posts one more (the IN again).
    script = [4, 2] + u16(a + 4 + 2 * 5) + u16(0) + u16(a + 2) + u16(6)
    write("virtio_block", "two-passes", script_input(script, im.b))
    write("virtio_block", "read-only", script_input([4 | 0x20], im.b))
    # Regression (CI, stop 26): the second of two INs reads into the used ring
    # (legal: the guest's own memory), so the ring holds data, not used
    # elements; the guest then moves that buffer away and posts once more. The
    # target must not take the data for used elements on the clean pass.
    (d, a, u), = ring_layout([8])
    im = Image()
    im.desc(d, 0, 0x1000, 16, N, 1)
    im.desc(d, 1, 0x3000, 512, W | N, 2)
    im.desc(d, 2, 0x2000, 1, W)
    im.desc(d, 3, 0x1000, 16, N, 4)
    im.desc(d, 4, u, 512, W | N, 5)
    im.desc(d, 5, 0x2001, 1, W)
    im.avail(a, [0, 3])
    im.put(0x1000, struct.pack("<IIQ", 0, 0, 0))
    script = [3, 2] + u16(d + 16 * 4) + u16(0x4000) + u16(a + 2) + u16(3)
    write("virtio_block", "data-in-used-ring", script_input(script, im.b))


def mmio_w(off, val):
    return [0, off // 4] + u64(val)


def mmio_r(off):
    return [1, off // 4]


def mmio_seeds():
    # A Linux-like bring-up of the block device, one request, config reads, reset.
    im, (d, a, u) = block_image()
    s = [0]
    s += mmio_r(0x0) + mmio_r(0x4) + mmio_r(0x8)
    s += mmio_w(0x70, 1) + mmio_w(0x70, 3)
    s += mmio_w(0x14, 1) + mmio_r(0x10) + mmio_w(0x14, 0) + mmio_r(0x10)
    s += mmio_w(0x24, 1) + mmio_w(0x20, 1) + mmio_w(0x24, 0) + mmio_w(0x20, 0x200)
    s += mmio_w(0x70, 0xb) + mmio_r(0x70)
    s += mmio_w(0x30, 0) + mmio_r(0x34) + mmio_w(0x38, 16)
    s += mmio_w(0x80, d) + mmio_w(0x84, 0) + mmio_w(0x90, a) + mmio_w(0x94, 0) + mmio_w(0xa0, u) + mmio_w(0xa4, 0)
    s += mmio_w(0x44, 1) + mmio_w(0x70, 0xf)
    s += mmio_w(0x50, 0) + mmio_r(0x60) + mmio_w(0x64, 1)
    s += [1, 0x40] + [1 | 0x40, 0x41] + [1 | 0x80, 0x42] + [1 | 0xc0, 0x42]
    s += mmio_r(0xfc) + mmio_w(0x70, 0)
    write("virtio_mmio", "block-bring-up", script_input(s, im.b))
    # The same for the net device (two queues, ring layout of virtio_net's seeds).
    (rxd, rxa, rxu), (txd, txa, txu) = ring_layout([8, 8])
    im = Image()
    for i in range(4):
        im.desc(rxd, i, 0x4000 + 0x800 * i, 0x600, W)
    im.avail(rxa, [0, 1, 2, 3])
    im.desc(txd, 0, 0x6000, 64, 0)
    im.avail(txa, [0])
    s = [1]
    s += mmio_w(0x70, 1) + mmio_w(0x70, 3)
    s += mmio_w(0x24, 1) + mmio_w(0x20, 1) + mmio_w(0x24, 0) + mmio_w(0x20, 1 << 5 | 1 << 15 | 1 << 16)
    s += mmio_w(0x70, 0xb)
    for q, (dd, aa, uu) in enumerate([(rxd, rxa, rxu), (txd, txa, txu)]):
        s += mmio_w(0x30, q) + mmio_w(0x38, 8) + mmio_w(0x80, dd) + mmio_w(0x90, aa) + mmio_w(0xa0, uu)
        s += mmio_w(0x44, 1)
    s += mmio_w(0x70, 0xf) + mmio_w(0x50, 0) + mmio_w(0x50, 1)
    s += [1, 0x40, 1 | 0x80, 0x41, 1 | 0x40, 0x41] + mmio_w(0x100, 0) + mmio_w(0x70, 0)
    write("virtio_mmio", "net-bring-up", script_input(s, im.b))


def nic_seeds():
    for fam, name in [(0, "igb"), (0x80, "e1000e")]:
        s = [2 | fam]
        s += [0, 4, 0] + sum(([*u64(0x10000 + 0x800 * i), 0] for i in range(4)), [])
        s += [2, 0] + u16(60) + [0]
        s += [2, 1] + u16(2000) + [0]
        s += [2, 2] + u16(100) + [1]
        s += [3]
        s += [1] + u16(3 * 16 + 8) + u32(3)
        s += [3]
        s += [4, 2] + u64(0x20000) + u16(14) + u64(0x20100) + u16(50)
        s += [4, 1] + u64(0x20200) + u16(60)
        s += [6, 1, 7, 6, 2, 7]
        s += [5] + u16(12) + u32(1) + [7, 8, 3, 7]
        write("nic_completion", name, bytes(s))


def chunk(b):
    if isinstance(b, str):
        b = b.encode()
    return u16(len(b)) + list(b)


API_ROUTES = ["GET /", "GET /version", "PUT /boot-source", "GET /machine-config", "PUT /machine-config",
              "PATCH /machine-config", "PUT /drives/{drive_id}", "PATCH /drives/{drive_id}",
              "PUT /network-interfaces/{iface_id}", "PATCH /network-interfaces/{iface_id}", "PUT /actions",
              "PUT /logger", "PUT /metrics", "GET /metrics", "GET /vm/config", "PATCH /vm", "PUT /vsock",
              "PUT /entropy"]
METHODS = ["GET", "PUT", "PATCH", "POST", "DELETE", "HEAD"]


def api_req(method, route, param, body):
    i = API_ROUTES.index(method + " " + route)
    out = [METHODS.index(method), i]
    if "{" in route:
        out += chunk(param)
    return out + chunk(body)


def api_seeds():
    boot = [0]
    boot += api_req("PUT", "/boot-source", "", '{"kernel_image_path":"/vmlinux","boot_args":"console=ttyS0"}')
    boot += api_req("PUT", "/machine-config", "", '{"vcpu_count":2,"mem_size_mib":256}')
    boot += api_req("PUT", "/drives/{drive_id}", "rootfs",
                    '{"drive_id":"rootfs","path_on_host":"/rootfs.ext4","is_root_device":true,"is_read_only":false}')
    boot += api_req("PUT", "/network-interfaces/{iface_id}", "eth0",
                    '{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:ac:10:00:02"}')
    boot += api_req("PUT", "/entropy", "", '{}')
    boot += api_req("GET", "/vm/config", "", "")
    boot += api_req("PUT", "/actions", "", '{"action_type":"InstanceStart"}')
    boot += api_req("PATCH", "/drives/{drive_id}", "rootfs", '{"drive_id":"rootfs","path_on_host":"/other.ext4"}')
    boot += api_req("PATCH", "/vm", "", '{"state":"Paused"}')
    boot += api_req("PUT", "/actions", "", '{"action_type":"FlushMetrics"}')
    write("api_router", "boot", bytes(boot))
    misc = [0]
    misc += api_req("GET", "/", "", "")
    misc += api_req("GET", "/version", "", "")
    misc += api_req("PATCH", "/machine-config", "", '{"mem_size_mib":512,"smt":false}')
    misc += api_req("PUT", "/logger", "", '{"log_path":"/tmp/fuzz.log","level":"Debug","show_level":true}')
    misc += api_req("PUT", "/metrics", "", '{"metrics_path":"/tmp/fuzz.metrics"}')
    misc += api_req("GET", "/metrics", "", "")
    misc += api_req("PATCH", "/network-interfaces/{iface_id}", "eth0", '{"iface_id":"eth0"}')
    misc += api_req("PUT", "/vsock", "", '{"guest_cid":3,"uds_path":"/v.sock"}')
    misc += [1, 200] + chunk("/no/such/path") + chunk("")
    misc += [250] + chunk("BREW") + [0] + chunk("{")
    write("api_router", "misc", bytes(misc))
    write("api_router", "started", bytes([1] + api_req("PUT", "/boot-source", "", '{"kernel_image_path":"/k"}')
                                          + api_req("PUT", "/actions", "", '{"action_type":"SendCtrlAltDel"}')))


def http(method, path, body=None, extra=""):
    req = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}"
    if body is not None:
        req += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (req + "\r\n" + (body or "")).encode()


def http_seeds():
    write("api_http", "get-root", http("GET", "/"))
    write("api_http", "put-machine-config", http("PUT", "/machine-config", '{"vcpu_count":1,"mem_size_mib":128}'))
    write("api_http", "pipelined", http("GET", "/version") + http("PUT", "/boot-source", '{"kernel_image_path":"/k"}')
          + http("GET", "/vm/config"))
    write("api_http", "expect-continue-too-large",
          http("PUT", "/drives/rootfs", "", "Expect: 100-continue\r\nContent-Length: 99999999\r\n"))
    write("api_http", "chunked", b"PUT /logger HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
          b"5\r\n{\"lev\r\n0\r\n\r\n")
    write("api_http", "short-body", b"PUT /metrics HTTP/1.1\r\nContent-Length: 40\r\n\r\n{\"metrics_path\"")


if __name__ == "__main__":
    http_seeds()
    block_seeds()
    mmio_seeds()
    nic_seeds()
    api_seeds()
