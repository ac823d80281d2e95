/*
 * rawsend: the guest side of tests/net_wire_policy.rs. Sends COUNT Ethernet
 * frames of one KIND out of IFACE through an AF_PACKET socket, each carrying
 * "SHIMVMM-WIRE-<kind>" so the peer can tell them apart. Built statically on
 * the host by the test and copied into the guest image (the Alpine guest has
 * busybox only).
 *
 *   rawsend IFACE KIND COUNT
 *   KIND: ok      broadcast, from the interface's MAC, ethertype 0x88b5
 *         spoof   the same from 02:00:00:00:00:66 (not the VM's MAC)
 *         vlan    the same with an 802.1Q tag (VID 5)
 *         macctl  ethertype 0x8808 (MAC control) to broadcast
 *         pause   a PAUSE frame (0x8808, opcode 1, quanta 1) to 01:80:c2:00:00:01
 *         lldp    ethertype 0x88cc to 01:80:c2:00:00:0e
 *         bpdu    an 802.3/LLC STP BPDU to 01:80:c2:00:00:00
 *
 * Exit status 0 when every frame was handed to the interface.
 *
 *   rawsend IFACE listen SECONDS
 *         counts, for SECONDS, the frames carrying "SHIMVMM-WIRE-<kind>." that
 *         arrive on IFACE (promiscuous) and prints one line
 *         "rawsend: seen ok=N spoof=N vlan=N ..." (tests/net_vf.rs: what the
 *         other guests on the NIC receive).
 */
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void put16(unsigned char *p, unsigned v) { p[0] = v >> 8; p[1] = v & 0xff; }

static const char *const KINDS[] = {"ok", "spoof", "vlan", "macctl", "pause", "lldp", "bpdu"};
#define NKINDS (sizeof KINDS / sizeof KINDS[0])

/* Counts tagged frames arriving on ifindex for secs seconds. */
static int listen_for(int fd, int ifindex, const char *ifname, int secs) {
    struct packet_mreq mr;
    memset(&mr, 0, sizeof mr);
    mr.mr_ifindex = ifindex;
    mr.mr_type = PACKET_MR_PROMISC;
    if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0) { perror("PACKET_ADD_MEMBERSHIP"); return 1; }
    struct timeval tv = {0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    unsigned long seen[NKINDS] = {0};
    static const char tag[] = "SHIMVMM-WIRE-";
    unsigned char buf[2048];
    time_t end = time(NULL) + secs;
    while (time(NULL) < end) {
        struct sockaddr_ll from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
        if (n <= 0 || from.sll_ifindex != ifindex || from.sll_pkttype == PACKET_OUTGOING) continue;
        for (ssize_t i = 0; i + (ssize_t)sizeof tag - 1 < n; i++) {
            if (memcmp(buf + i, tag, sizeof tag - 1)) continue;
            const char *k = (const char *)buf + i + sizeof tag - 1;
            size_t left = n - i - (sizeof tag - 1);
            for (size_t j = 0; j < NKINDS; j++) {
                size_t l = strlen(KINDS[j]);
                if (l < left && !memcmp(k, KINDS[j], l) && k[l] == '.') seen[j]++;
            }
            break;
        }
    }
    printf("rawsend: seen");
    for (size_t j = 0; j < NKINDS; j++) printf(" %s=%lu", KINDS[j], seen[j]);
    printf(" on %s\n", ifname);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: rawsend IFACE ok|spoof|vlan|macctl|pause|lldp|bpdu COUNT\n"
                        "       rawsend IFACE listen SECONDS\n");
        return 2;
    }
    const char *kind = argv[2];
    int count = atoi(argv[3]);
    int fd = socket(AF_PACKET, SOCK_RAW, strcmp(kind, "listen") ? 0 : htons(ETH_P_ALL));
    if (fd < 0) { perror("socket(AF_PACKET)"); return 1; }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
    if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) { perror("SIOCGIFINDEX"); return 1; }
    int ifindex = ifr.ifr_ifindex;
    if (!strcmp(kind, "listen")) return listen_for(fd, ifindex, argv[1], count);
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) { perror("SIOCGIFHWADDR"); return 1; }
    unsigned char own[6];
    memcpy(own, ifr.ifr_hwaddr.sa_data, 6);

    static const unsigned char bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    static const unsigned char foreign[6] = {0x02, 0, 0, 0, 0, 0x66};
    static const unsigned char pause_dst[6] = {0x01, 0x80, 0xc2, 0, 0, 0x01};
    static const unsigned char lldp_dst[6] = {0x01, 0x80, 0xc2, 0, 0, 0x0e};
    static const unsigned char stp_dst[6] = {0x01, 0x80, 0xc2, 0, 0, 0x00};
    unsigned char f[96];
    memset(f, 0, sizeof f);
    const unsigned char *dst = bcast, *src = own;
    size_t off = 12;
    if (!strcmp(kind, "ok")) {
        put16(f + off, 0x88b5); off += 2;
    } else if (!strcmp(kind, "spoof")) {
        src = foreign;
        put16(f + off, 0x88b5); off += 2;
    } else if (!strcmp(kind, "vlan")) {
        put16(f + off, 0x8100); put16(f + off + 2, 5); put16(f + off + 4, 0x88b5); off += 6;
    } else if (!strcmp(kind, "macctl")) {
        put16(f + off, 0x8808); put16(f + off + 2, 0x0101); off += 4;
    } else if (!strcmp(kind, "pause")) {
        dst = pause_dst;
        put16(f + off, 0x8808); put16(f + off + 2, 0x0001); put16(f + off + 4, 1); off += 6;
    } else if (!strcmp(kind, "lldp")) {
        dst = lldp_dst;
        put16(f + off, 0x88cc); off += 2;
    } else if (!strcmp(kind, "bpdu")) {
        dst = stp_dst;
        put16(f + off, sizeof f - 14); f[off + 2] = 0x42; f[off + 3] = 0x42; f[off + 4] = 0x03; off += 5;
    } else {
        fprintf(stderr, "rawsend: unknown kind %s\n", kind);
        return 2;
    }
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    snprintf((char *)f + off + 2, sizeof f - off - 2, "SHIMVMM-WIRE-%s.", kind);

    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_ifindex = ifindex;
    sll.sll_halen = 6;
    memcpy(sll.sll_addr, dst, 6);
    for (int i = 0; i < count; i++) {
        if (sendto(fd, f, sizeof f, 0, (struct sockaddr *)&sll, sizeof sll) != (ssize_t)sizeof f) {
            perror("sendto");
            return 1;
        }
        usleep(20000);
    }
    printf("rawsend: %d %s frames sent on %s\n", count, kind, argv[1]);
    return 0;
}
