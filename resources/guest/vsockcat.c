/*
 * vsockcat: the guest side of tests/vsock.rs (the Alpine image has no
 * vsock-capable socat or nc). Relays stdin to one AF_VSOCK stream and the
 * stream to stdout; after stdin's EOF it shuts down its write half and it
 * exits once the peer's half has ended too.
 *
 *   vsockcat listen PORT        accept one connection on PORT
 *   vsockcat connect CID PORT   connect to CID:PORT
 *
 * Exit status: 0 done; 3 the connection was never made (accept or connect
 * failed); 4 it was reset before the peer sent a byte (the VMM gave up on an
 * unanswered host CONNECT, or the guest's connect timed out after the VMM
 * had reached the host socket): nothing was exchanged, so the caller may
 * simply try again; 1 any other error.
 *
 * Built static by the test (cc -static -O2), delivered on a raw disk.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

#define EXIT_NO_CONNECTION 3
#define EXIT_RESET_BEFORE_DATA 4

static int die(const char *what)
{
    fprintf(stderr, "vsockcat: %s: %s\n", what, strerror(errno));
    return 1;
}

static int no_connection(const char *what)
{
    die(what);
    return EXIT_NO_CONNECTION;
}

/* A send or receive error: retryable if the peer never sent anything. */
static int io_error(const char *what, unsigned long long got)
{
    die(what);
    return got == 0 ? EXIT_RESET_BEFORE_DATA : 1;
}

int main(int argc, char **argv)
{
    struct sockaddr_vm a;
    int s, fd;

    /* A reset connection is an error to report, not a silent SIGPIPE death. */
    signal(SIGPIPE, SIG_IGN);
    memset(&a, 0, sizeof(a));
    a.svm_family = AF_VSOCK;
    s = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (s < 0)
        return die("socket");
    if (argc == 3 && strcmp(argv[1], "listen") == 0) {
        a.svm_cid = VMADDR_CID_ANY;
        a.svm_port = (unsigned)strtoul(argv[2], NULL, 10);
        if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0)
            return die("bind");
        if (listen(s, 1) < 0)
            return die("listen");
        fd = accept(s, NULL, NULL);
        if (fd < 0)
            return no_connection("accept");
    } else if (argc == 4 && strcmp(argv[1], "connect") == 0) {
        a.svm_cid = (unsigned)strtoul(argv[2], NULL, 10);
        a.svm_port = (unsigned)strtoul(argv[3], NULL, 10);
        if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
            return no_connection("connect");
        fd = s;
    } else {
        fprintf(stderr, "usage: vsockcat listen PORT | vsockcat connect CID PORT\n");
        return 2;
    }

    static char buf[65536];
    int in_done = 0, out_done = 0;
    unsigned long long sent = 0, got = 0;
    while (!in_done || !out_done) {
        struct pollfd p[2] = { { 0, POLLIN, 0 }, { fd, POLLIN, 0 } };
        if (in_done)
            p[0].fd = -1;
        if (out_done)
            p[1].fd = -1;
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return die("poll");
        }
        if (p[0].revents) {
            ssize_t n = read(0, buf, sizeof(buf));
            if (n < 0 && errno != EINTR)
                return die("read stdin");
            if (n == 0) {
                in_done = 1;
                shutdown(fd, SHUT_WR);
            } else if (n > 0) {
                if (write_all(fd, buf, (size_t)n) < 0)
                    return io_error("send", got);
                sent += (unsigned long long)n;
            }
        }
        if (p[1].revents) {
            ssize_t n = read(fd, buf, sizeof(buf));
            if (n < 0 && errno != EINTR)
                return io_error("recv", got);
            if (n == 0) {
                out_done = 1;
            } else if (n > 0) {
                if (write_all(1, buf, (size_t)n) < 0)
                    return die("write stdout");
                got += (unsigned long long)n;
            }
        }
    }
    fprintf(stderr, "vsockcat: sent %llu received %llu\n", sent, got);
    close(fd);
    return 0;
}
