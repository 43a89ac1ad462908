/* SPDX-License-Identifier: MIT */
/* A tiny unit-test harness: one binary per module, one line per case (see tests/run.sh). */
#ifndef DEPUTY_UNIT_H
#define DEPUTY_UNIT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int unit_failed;
static int unit_skipped;
static const char *unit_case = "?";

/* Skips the running case (a feature this machine lacks); prints SKIP instead of PASS. */
#define skip(...)                                                                        \
	do {                                                                             \
		printf("SKIP: %s: ", unit_case);                                         \
		printf(__VA_ARGS__);                                                     \
		printf("\n");                                                            \
		unit_skipped = 1;                                                        \
		return;                                                                  \
	} while (0)

#define fail(...)                                                                        \
	do {                                                                             \
		printf("FAIL: %s: %s:%d: ", unit_case, __FILE__, __LINE__);              \
		printf(__VA_ARGS__);                                                     \
		printf("\n");                                                            \
		unit_failed = 1;                                                         \
		return;                                                                  \
	} while (0)

#define check(cond)                                                                      \
	do {                                                                             \
		if (!(cond))                                                             \
			fail("check failed: %s", #cond);                                 \
	} while (0)

#define check_str(a, b)                                                                  \
	do {                                                                             \
		const char *a_ = (a), *b_ = (b);                                         \
		if (!a_ || !b_ || strcmp(a_, b_) != 0)                                   \
			fail("%s is \"%s\", want \"%s\"", #a, a_ ? a_ : "(null)",          \
			     b_ ? b_ : "(null)");                                         \
	} while (0)

/* Runs one case; prints PASS unless it printed FAIL or SKIP. */
#define RUN(fn)                                                                          \
	do {                                                                             \
		int before_ = unit_failed;                                               \
		unit_failed = 0;                                                         \
		unit_skipped = 0;                                                        \
		unit_case = #fn;                                                         \
		fflush(stdout);                                                          \
		fn();                                                                    \
		if (!unit_failed && !unit_skipped)                                       \
			printf("PASS: %s\n", #fn);                                       \
		unit_failed |= before_;                                                  \
		fflush(stdout);                                                          \
	} while (0)

#define UNIT_EXIT() return unit_failed ? 1 : 0

#endif
