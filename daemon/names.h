/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "util.h"

#define NAME_MAX_LENGTH 64

/* Pool and volume names: ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ */
bool name_is_valid(const char *s);
