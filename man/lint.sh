#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Checks manual pages for mistakes: fails on any mandoc warning or error, and on any groff
# warning where groff is installed. Usage: lint.sh PAGE...
set -u

if ! command -v mandoc >/dev/null 2>&1; then
        echo "mandoc is not installed (Debian package mandoc); skipping." >&2
        exit 77
fi

status=0
for page in "$@"; do
        if ! out=$(mandoc -T lint -W warning "$page" 2>&1) || [ -n "$out" ]; then
                printf '%s\n' "$out" >&2
                echo "FAIL: $page (mandoc)" >&2
                status=1
                continue
        fi
        if command -v groff >/dev/null 2>&1; then
                out=$(groff -man -ww -z "$page" 2>&1)
                if [ -n "$out" ]; then
                        printf '%s\n' "$out" >&2
                        echo "FAIL: $page (groff)" >&2
                        status=1
                        continue
                fi
        fi
        echo "ok: $page"
done
exit $status
