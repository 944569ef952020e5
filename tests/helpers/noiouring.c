/* noiouring: run a command with io_uring blocked by a seccomp-BPF filter,
 * as Docker >= 25's default profile does.
 *
 *   noiouring [-e ERRNO] command [args...]
 *
 * io_uring_setup, io_uring_enter and io_uring_register fail with ERRNO
 * (default EPERM, the Docker/containerd/Podman behaviour; ENOSYS imitates a
 * kernel without io_uring or gVisor).  Every other syscall is allowed.
 * Syscalls made under a different audit arch than the one compiled for kill
 * the process (so a 32-bit syscall can't slip past the filter).
 * The filter is inherited across execve() and by all threads and children. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#if defined(__x86_64__)
#define AUDIT_ARCH_NATIVE AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define AUDIT_ARCH_NATIVE AUDIT_ARCH_AARCH64
#elif defined(__i386__)
#define AUDIT_ARCH_NATIVE AUDIT_ARCH_I386
#elif defined(__riscv) && __riscv_xlen == 64
#define AUDIT_ARCH_NATIVE AUDIT_ARCH_RISCV64
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define AUDIT_ARCH_NATIVE AUDIT_ARCH_PPC64LE
#elif defined(__s390x__)
#define AUDIT_ARCH_NATIVE AUDIT_ARCH_S390X
#else
#error "noiouring: unknown architecture"
#endif

/* The io_uring syscalls have the same numbers on every architecture that
 * uses the generic table for new syscalls (all of the above). */
#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif

int main(int argc, char **argv)
{
    int err = EPERM;
    int first = 1;

    if (argc > 2 && strcmp(argv[1], "-e") == 0) {
        err = atoi(argv[2]);
        first = 3;
    }
    if (first >= argc || err <= 0 || err > 4095) {
        fprintf(stderr, "usage: %s [-e ERRNO] command [args...]\n", argv[0]);
        return 2;
    }

    struct sock_filter filter[] = {
        /* Check the arch first: syscall numbers are per arch. */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_NATIVE, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_enter, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_register, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
    };
    struct sock_fprog prog = {
        .len = (unsigned short)(sizeof(filter) / sizeof(filter[0])),
        .filter = filter,
    };

    /* Required to install a filter without CAP_SYS_ADMIN. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        perror("noiouring: prctl(PR_SET_NO_NEW_PRIVS)");
        return 126;
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) {
        perror("noiouring: prctl(PR_SET_SECCOMP)");
        return 126;
    }
    execvp(argv[first], argv + first);
    perror("noiouring: execvp");
    return 127;
}
