/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Room for format_size()'s result. It writes at most "1023.9K", but the compiler's
 * format-truncation check cannot prove that, so the buffer fits any 64-bit value. */
#define FORMAT_SIZE_MAX 32

/* Parses a byte count as a person types it: "4096", "10G", "1.5T", "512KiB". Suffixes K, M, G,
 * T, P and E (any case, optionally followed by "iB") are powers of 1024; "B" or nothing means
 * bytes. A fraction is accepted as long as the result is a whole number of bytes. Returns 0,
 * -EINVAL for anything malformed (signs, spaces, "GB", unknown suffixes) or -ERANGE when the
 * value does not fit in 64 bits; *ret is untouched on failure. */
int parse_size(const char *s, uint64_t *ret);

/* Formats a byte count for a table column: "512B", "1.5K", "10.0G" (one decimal, rounded to
 * nearest, powers of 1024). Returns buf. */
char *format_size(char buf[static FORMAT_SIZE_MAX], uint64_t bytes);
