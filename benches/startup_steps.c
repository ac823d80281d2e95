/* Start-up anatomy for benches/startup.py (built and run by `tools/bench startup`).
 *
 *   startup_steps PROG ARGS...   single-steps PROG (ptrace) from exec until it
 *                                calls listen(2) or exits; prints one JSON line:
 *                                user instructions, CPUID instructions, syscalls
 *   startup_steps --costs        prints the cost on this machine of one CPUID
 *                                (a VM exit under any hypervisor), one trivial
 *                                syscall and one anonymous minor page fault
 *
 * CPUID is counted because on a virtual machine every CPUID traps to the
 * hypervisor: glibc's start-up (init_cpu_features, cache info) runs dozens.
 */
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int costs(void) {
    unsigned a, b, c, d;
    int n = 5000;
    double t0 = now();
    for (int i = 0; i < n; i++) __cpuid_count(4, 0, a, b, c, d);
    double cpuid_us = (now() - t0) / n * 1e6;
    n = 200000;
    t0 = now();
    for (int i = 0; i < n; i++) syscall(SYS_getppid);
    double sys_us = (now() - t0) / n * 1e6;
    size_t pages = 20000;
    char *p = mmap(0, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    madvise(p, pages * 4096, MADV_NOHUGEPAGE);
    t0 = now();
    for (size_t i = 0; i < pages; i++) p[i * 4096] = 1;
    double fault_us = (now() - t0) / pages * 1e6;
    printf("{\"bench\": \"costs\", \"cpuid_us\": %.3f, \"syscall_us\": %.3f, \"minor_fault_us\": %.3f}\n", cpuid_us,
           sys_us, fault_us);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--costs") == 0) return costs();
    if (argc < 2) {
        fprintf(stderr, "usage: startup_steps PROG ARGS... | --costs\n");
        return 2;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        execv(argv[1], argv + 1);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0 || !WIFSTOPPED(st)) return 1; /* stopped at exec */
    long steps = 0, cpuids = 0, syscalls = 0, listened = 0;
    for (;;) {
        struct user_regs_struct r;
        if (ptrace(PTRACE_GETREGS, pid, 0, &r) < 0) break;
        errno = 0;
        long w = ptrace(PTRACE_PEEKTEXT, pid, (void *)r.rip, 0);
        if (errno == 0) {
            unsigned op = w & 0xffff;
            if (op == 0xa20f) cpuids++;
            if (op == 0x050f) {
                syscalls++;
                if (r.rax == SYS_listen) {
                    listened = 1;
                    break;
                }
            }
        }
        if (ptrace(PTRACE_SINGLESTEP, pid, 0, 0) < 0) break;
        if (waitpid(pid, &st, 0) < 0 || WIFEXITED(st) || WIFSIGNALED(st)) break;
        steps++;
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    printf("{\"bench\": \"steps\", \"binary\": \"%s\", \"user_instructions\": %ld, \"cpuid\": %ld, \"syscalls\": %ld, "
           "\"reached_listen\": %s}\n",
           argv[1], steps, cpuids, syscalls, listened ? "true" : "false");
    return 0;
}
