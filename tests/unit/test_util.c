// SPDX-License-Identifier: MIT
/* Unit tests for daemon/lib/util.c: escaping text quoted back from input, one-line errors,
 * reading to a count, growing arrays. */
#include <errno.h>
#include <unistd.h>

#include "unit.h"
#include "util.h"

static void test_escape(void)
{
	char out[64];

	check_str(dp_escape("a\\b\n\r\t\x1b[2J\x7f\xc3\xa9", 13, out, sizeof(out)),
		  "a\\\\b\\n\\r\\t\\x1b[2J\\x7f\xc3\xa9");
	/* NULs inside the length are bytes like the others */
	check_str(dp_escape("a\0b", 3, out, sizeof(out)), "a\\x00b");
	check_str(dp_escape("plain", 5, out, sizeof(out)), "plain");
}

static void test_escape_never_cuts_an_escape(void)
{
	char out[6];

	/* "ab" fits, "\x1b" (4 bytes) would not fit whole in the 3 left */
	check_str(dp_escape("ab\x1b", 3, out, sizeof(out)), "ab");
	check_str(dp_escape("abc\n", 4, out, sizeof(out)), "abc\\n");
	check(dp_escape("x", 1, out, 0) == out);
	check_str(dp_escape("x", 1, out, 1), "");
}

static void test_error_is_one_line(void)
{
	struct dp_err err;

	/* found by fuzz_config: jansson's message quoted a newline of the input raw */
	dp_err_set(&err, "invalid JSON at %d:%d: %s", 31, 0, "invalid escape near '\"@\\\n'");
	check_str(err.msg, "invalid JSON at 31:0: invalid escape near '\"@\\\\\\n'");
	dp_err_set(&err, "no control bytes: %s", "a\\b");
	check_str(err.msg, "no control bytes: a\\b");
}

static void test_log_is_one_line(void)
{
	int fds[2], saved = dup(STDERR_FILENO);
	char buf[256];
	ssize_t n;

	if (saved < 0 || pipe(fds) < 0)
		fail("pipe");
	dup2(fds[1], STDERR_FILENO);
	dp_log_init("test", DP_LOG_INFO);
	pr_warn("a %s", "line\nforged: record\x1b[0m");
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(fds[1]);
	n = read(fds[0], buf, sizeof(buf) - 1);
	close(fds[0]);
	check(n > 0);
	buf[n > 0 ? n : 0] = '\0';
	check_str(buf, "test: a line\\nforged: record\\x1b[0m\n");
}

/* Short reads and the end of the pipe: what the CLI's frame reader and key files rely on. */
static void test_read_upto(void)
{
	int fds[2];
	char buf[16];

	if (pipe(fds) < 0)
		fail("pipe");
	check(write(fds[1], "abc", 3) == 3);
	check(dp_read_upto(fds[0], buf, 2) == 2);
	check(memcmp(buf, "ab", 2) == 0);
	check(write(fds[1], "defg", 4) == 4);
	close(fds[1]);
	/* asks for more than there is: all of it, short only at the end */
	check(dp_read_upto(fds[0], buf, sizeof(buf)) == 5);
	check(memcmp(buf, "cdefg", 5) == 0);
	check(dp_read_upto(fds[0], buf, sizeof(buf)) == 0);
	close(fds[0]);
	check(dp_read_upto(-1, buf, 1) == -EBADF);
}

static void test_grow(void)
{
	long *a = NULL;
	size_t cap = 0, n;

	for (n = 0; n < 100; n++) {
		if (dp_grow(&a, &cap, n, sizeof(*a)) != 0)
			fail("grow at %zu", n);
		check(cap > n);
		a[n] = (long)n;
	}
	check(cap == 128);
	for (n = 0; n < 100; n++)
		check(a[n] == (long)n);
	/* room left: nothing moves */
	{
		long *before = a;

		check(dp_grow(&a, &cap, 100, sizeof(*a)) == 0 && a == before && cap == 128);
	}
	/* a size that cannot be counted: refused, the array as it was */
	{
		size_t huge = (size_t)-1 / 2 + 1;

		check(dp_grow(&a, &huge, huge, sizeof(*a)) == -ENOMEM && a[99] == 99);
	}
	free(a);
}

int main(void)
{
	RUN(test_escape);
	RUN(test_escape_never_cuts_an_escape);
	RUN(test_error_is_one_line);
	RUN(test_log_is_one_line);
	RUN(test_read_upto);
	RUN(test_grow);
	UNIT_EXIT();
}
