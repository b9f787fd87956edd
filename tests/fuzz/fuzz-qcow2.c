/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* memfd_create(). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qcow2.h"

/* The qcow2 header inspector's core over arbitrary bytes. Crashes and sanitizer reports are the
 * fuzzer's business; the properties below are ours, and abort() when broken:
 *  - the verdict is 0, -EBADMSG or -ENOMEDIUM, with a reason and a message to match;
 *  - what is accepted is sane: version, cluster size, virtual size in range;
 *  - the fd entry point, on a memfd holding the input, reaches the same verdict as the core;
 *  - the input as a whole file, and the same bytes as the head of a 1 TiB file: anything accepted
 *    as the former is accepted as the latter too (a bigger file only makes more tables fit);
 *  - on what is accepted, the compressed-cluster count over the memfd is 0 with a count the file
 *    could hold (each L2 table a cluster of its own: at most one per 8 bytes), or -EBADMSG. It
 *    runs on the whole-file verdict only, where its reads are bounded by the input's size. */

#define CHECK(x)                                                                        \
        do {                                                                            \
                if (!(x)) {                                                             \
                        fprintf(stderr, "%s:%d: %s does not hold\n", __FILE__, __LINE__, #x); \
                        abort();                                                        \
                }                                                                       \
        } while (0)

static int inspect(const uint8_t *data, size_t size, uint64_t file_size, const Qcow2Limits *limits,
                   Qcow2Info *info) {
        Qcow2Problem problem = { .reason = QCOW2_OK };
        int r = qcow2_inspect_buffer(data, size, file_size, limits, info, &problem);

        CHECK(r == 0 || r == -EBADMSG || r == -ENOMEDIUM);
        CHECK(strnlen(problem.message, sizeof problem.message) < sizeof problem.message);
        if (r == 0) {
                CHECK(problem.reason == QCOW2_OK);
                CHECK(info->version == 2 || info->version == 3);
                CHECK(info->cluster_size >= 512 && info->cluster_size <= 2 << 20);
                CHECK(info->virtual_size > 0 && info->virtual_size % 512 == 0);
                CHECK(info->virtual_size <= QCOW2_VIRTUAL_SIZE_MAX);
                CHECK(info->refcount_bits >= 1 && info->refcount_bits <= 64);
                CHECK(!info->corrupt && !info->encrypted);
                CHECK(info->cluster_size <= file_size);
        } else {
                CHECK((problem.reason == QCOW2_NOT_QCOW2) == (r == -ENOMEDIUM));
                CHECK(problem.reason != QCOW2_OK && problem.message[0] != '\0');
        }
        return r;
}

/* qcow2_inspect() on a memfd holding the input must say what the core says of the same bytes;
 * then, on an accepted image, the L1 and L2 walk. */
static void check_fd(const uint8_t *data, size_t size, int expected) {
        static int fd = -EBADF;
        uint64_t count = UINT64_MAX;
        Qcow2Info info;
        int r;

        if (fd < 0)
                fd = memfd_create("fuzz-qcow2", MFD_CLOEXEC);
        CHECK(fd >= 0);
        CHECK(ftruncate(fd, 0) == 0);
        CHECK(size == 0 || pwrite(fd, data, size, 0) == (ssize_t) size);
        CHECK(qcow2_inspect(fd, size, NULL, &info, NULL) == expected);
        if (expected < 0)
                return;

        r = qcow2_count_compressed(fd, size, &info, &count);
        CHECK(r == 0 || r == -EBADMSG);
        if (r == 0)
                CHECK(count <= size / 8);
        else
                CHECK(count == UINT64_MAX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const Qcow2Limits limits = { .max_virtual_size = UINT64_C(1) << 40 };
        Qcow2Info info;
        int r;

        r = inspect(data, size, size, NULL, &info);
        check_fd(data, size, r);
        if (r == 0 && info.virtual_size <= limits.max_virtual_size)
                CHECK(inspect(data, size, UINT64_C(1) << 40, &limits, &info) == 0);
        else
                (void) inspect(data, size, UINT64_C(1) << 40, &limits, &info);
        return 0;
}

#ifndef CISTERN_LIBFUZZER
/* Without libFuzzer (gcc builds cistern): replay the files and directories named, so the 'fuzz'
 * suite still runs every seed through the parser under the build's sanitizers. */

#define INPUT_MAX (4 << 20)

static int replay_file(int dirfd, const char *path) {
        struct stat st = {};
        uint8_t *input = NULL;
        ssize_t n = -1;
        int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);

        /* An exact-size copy, so that ASan sees any read past the input. */
        if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size <= INPUT_MAX) {
                input = malloc(st.st_size > 0 ? (size_t) st.st_size : 1);
                if (input)
                        n = read(fd, input, (size_t) st.st_size);
        }
        if (fd >= 0)
                close(fd);
        if (n < 0 || n != st.st_size) {
                fprintf(stderr, "Failed to read %s (at most %d bytes).\n", path, INPUT_MAX);
                free(input);
                return -1;
        }
        LLVMFuzzerTestOneInput(input, (size_t) n);
        free(input);
        return 0;
}

int main(int argc, char *argv[]) {
        unsigned count = 0;

        for (int i = 1; i < argc; i++) {
                DIR *d = opendir(argv[i]);
                struct dirent *de;

                if (!d) {
                        if (replay_file(AT_FDCWD, argv[i]) < 0)
                                return EXIT_FAILURE;
                        count++;
                        continue;
                }
                while ((de = readdir(d)))
                        if (de->d_name[0] != '.') {
                                if (replay_file(dirfd(d), de->d_name) < 0) {
                                        closedir(d);
                                        return EXIT_FAILURE;
                                }
                                count++;
                        }
                closedir(d);
        }
        printf("%u inputs replayed\n", count);
        return count > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
#endif
