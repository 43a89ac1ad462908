/* SPDX-License-Identifier: MIT */
/*
 * util: logging, errors, base64url, randomness and time, reads and growing arrays, shared by
 * deputyd, the deputy CLI and the verification library. Nothing here allocates except where
 * it says so.
 */
#ifndef DEPUTY_UTIL_H
#define DEPUTY_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define DP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define DP_WUR __attribute__((warn_unused_result))
#define DP_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* An error the caller passes in: one line, no trailing newline. */
struct dp_err {
	char msg[512];
};
/* Control bytes that reach the message (text quoted from input) are escaped as by
 * dp_escape, so a reason stays one line wherever it is printed. */
void dp_err_set(struct dp_err *err, const char *fmt, ...) DP_PRINTF(2, 3);

/* Text quoted back from untrusted input (a config, a token, a log line, a library's message
 * about them) made fit for one line of stderr, a log or syslog: backslash, control bytes and
 * DEL become \\, \n, \r, \t or \xNN. Reads n bytes (NULs included); writes at most
 * cap - 1 bytes and a NUL, never half an escape; returns out. */
const char *dp_escape(const char *in, size_t n, char *out, size_t cap);

/* Logging. deputyd logs to stderr (journald adds time); the CLI prints "deputy: …". A message
 * is one line: control bytes in it are escaped as by dp_escape. */
enum dp_log_level { DP_LOG_WARN, DP_LOG_INFO, DP_LOG_DEBUG };
void dp_log_init(const char *prog, enum dp_log_level max);
/* From now on log to syslog (LOG_DAEMON) instead of stderr: for a detached deputyd. */
void dp_log_use_syslog(void);
void dp_log(enum dp_log_level lvl, const char *fmt, ...) DP_PRINTF(2, 3);
void dp_vlog(enum dp_log_level lvl, const char *fmt, va_list ap);
#define pr_warn(...) dp_log(DP_LOG_WARN, __VA_ARGS__)
#define pr_info(...) dp_log(DP_LOG_INFO, __VA_ARGS__)
#define pr_debug(...) dp_log(DP_LOG_DEBUG, __VA_ARGS__)

/* base64url without padding (RFC 7515 §2). Return the output length, or -ENOSPC/-EINVAL.
 * decode rejects padding, whitespace, non-alphabet bytes and non-canonical trailing bits. */
ssize_t dp_b64url_encode(const void *in, size_t n, char *out, size_t outsz);
ssize_t dp_b64url_decode(const char *in, size_t n, void *out, size_t outsz);
#define DP_B64URL_LEN(n) ((((n) + 2) / 3) * 4 + 1)

/* n bytes from getrandom(); 0 or -errno. */
int dp_random(void *buf, size_t n) DP_WUR;
/* A printable identifier of 128 random bits (22 base64url characters + NUL). */
#define DP_ID_LEN 23
int dp_random_id(char out[DP_ID_LEN]) DP_WUR;

/* Time: seconds since the epoch, and RFC 3339 UTC with microseconds. */
int64_t dp_now(void);
#define DP_TS_LEN 32
void dp_timestamp(char out[DP_TS_LEN]);
struct timespec;
void dp_timestamp_at(const struct timespec *ts, char out[DP_TS_LEN]); /* CLOCK_REALTIME */

/* Room for one more element in a growing array: arrp points to the array pointer, *cap is
 * its size in elements, n how many are used. Doubles it (from 32) when full; 0, or -ENOMEM
 * with the array as it was. */
int dp_grow(void *arrp, size_t *cap, size_t n, size_t elsize) DP_WUR;

/* Reads until n bytes or end of file, through EINTR: the count read (short only at end of
 * file), or -errno. */
ssize_t dp_read_upto(int fd, void *buf, size_t n) DP_WUR;

/* Whole-file helpers. dp_read_file allocates (NUL-terminated), refuses files > max. */
int dp_read_file(const char *path, size_t max, char **out, size_t *len) DP_WUR;
/* Write atomically: temp file in the same directory, fsync, rename. */
int dp_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode) DP_WUR;
/* mkdir -p with mode for created components. */
int dp_mkdir_p(const char *path, mode_t mode) DP_WUR;

/* A file deputy installs beside its programs: `name` in the running program's directory
 * (the build tree) or in ../lib/deputy/ relative to it (an installed prefix), accessible with
 * amode (access(2)). 0 with the path in out, or -ENOENT. */
int dp_find_installed(const char *name, int amode, char *out, size_t outsz);

/* Hex encoding of a byte string (out needs 2n+1). */
void dp_hex(const void *in, size_t n, char *out);

/* One descriptor to pass along with a message (SCM_RIGHTS): ctl must live until sendmsg. */
union dp_fd_cmsg {
	struct cmsghdr align;
	char buf[CMSG_SPACE(sizeof(int))];
};
void dp_msghdr_fd(struct msghdr *mh, union dp_fd_cmsg *ctl, int fd);

#endif
