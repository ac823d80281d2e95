/*
 * udpblast: the guest side of the UDP packets-per-second phase of
 * tests/guestnet_peers.rs. Built statically on the host by the test and copied
 * into the guest image (the Alpine guest has busybox only, no iperf3).
 *
 *   udpblast send IP PORT PAYLOAD SECONDS
 *       sends PAYLOAD-byte UDP datagrams to IP:PORT as fast as sendto(2)
 *       takes them for SECONDS; prints "SENT SECS" (datagrams accepted by the
 *       guest kernel, and the time it took).
 *   udpblast recv PORT READYFILE
 *       binds PORT, creates READYFILE, counts datagrams until 2 s pass without
 *       one (or 30 s without any); prints "COUNT SECS BYTES" (SECS from the
 *       first datagram to the last).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int do_send(const char *ip, int port, int len, double secs)
{
	static char buf[65536];
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(port) };
	if (len < 0 || len > (int)sizeof(buf) || inet_pton(AF_INET, ip, &dst.sin_addr) != 1)
		return 2;
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0)
		return 1;
	memset(buf, 0x5a, sizeof(buf));
	unsigned long sent = 0;
	double t0 = now(), t = t0;
	while (t - t0 < secs) {
		for (int i = 0; i < 64; i++)
			if (sendto(s, buf, len, 0, (struct sockaddr *)&dst, sizeof(dst)) == len)
				sent++;
		t = now();
	}
	printf("%lu %.3f\n", sent, t - t0);
	return 0;
}

static int do_recv(int port, const char *ready)
{
	static char buf[65536];
	struct sockaddr_in me = { .sin_family = AF_INET, .sin_port = htons(port) };
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	int big = 4 << 20;
	setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	if (s < 0 || bind(s, (struct sockaddr *)&me, sizeof(me)) < 0)
		return 1;
	struct timeval tv = { .tv_sec = 2 };
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int fd = open(ready, O_CREAT | O_WRONLY, 0644);
	if (fd >= 0)
		close(fd);
	unsigned long n = 0, bytes = 0;
	double first = 0, last = 0, start = now();
	for (;;) {
		ssize_t r = recv(s, buf, sizeof(buf), 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			/* Timed out: done after traffic, or after 30 s of none. */
			if (n > 0 || now() - start > 30)
				break;
			continue;
		}
		last = now();
		if (n++ == 0)
			first = last;
		bytes += r;
	}
	printf("%lu %.3f %lu\n", n, last - first, bytes);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 6 && !strcmp(argv[1], "send"))
		return do_send(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]));
	if (argc == 4 && !strcmp(argv[1], "recv"))
		return do_recv(atoi(argv[2]), argv[3]);
	fprintf(stderr, "usage: udpblast send IP PORT PAYLOAD SECONDS | recv PORT READYFILE\n");
	return 2;
}
