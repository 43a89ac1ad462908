// SPDX-License-Identifier: MIT
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const char *log_prog = "deputy";
static enum dp_log_level log_max = DP_LOG_INFO;
static int log_syslog;

const char *dp_escape(const char *in, size_t n, char *out, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (cap == 0)
		return out;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];
		char e[4];
		size_t k = 2;

		e[0] = '\\';
		if (c == '\\' || c == '\n' || c == '\r' || c == '\t') {
			e[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : '\\';
		} else if (c < 0x20 || c == 0x7f) {
			e[1] = 'x';
			e[2] = hex[c >> 4];
			e[3] = hex[c & 0xf];
			k = 4;
		} else {
			e[0] = (char)c;
			k = 1;
		}
		if (o + k > cap - 1)
			break;
		memcpy(out + o, e, k);
		o += k;
	}
	out[o] = '\0';
	return out;
}

/* A formatted message is made one line only when it needs it: most never quote input, and
 * those that do have usually escaped it already (backslashes would otherwise double). */
static void msg_one_line(char *msg, size_t cap)
{
	char raw[1024];
	size_t n = strlen(msg);

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)msg[i];

		if (c < 0x20 || c == 0x7f) {
			n = n < sizeof(raw) ? n : sizeof(raw) - 1;
			memcpy(raw, msg, n);
			dp_escape(raw, n, msg, cap);
			return;
		}
	}
}

void dp_err_set(struct dp_err *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	msg_one_line(err->msg, sizeof(err->msg));
}

void dp_log_init(const char *prog, enum dp_log_level max)
{
	log_prog = prog;
	log_max = max;
}

void dp_log_use_syslog(void)
{
	openlog(log_prog, LOG_PID, LOG_DAEMON);
	log_syslog = 1;
}

void dp_vlog(enum dp_log_level lvl, const char *fmt, va_list ap)
{
	static const int prio[] = {LOG_WARNING, LOG_INFO, LOG_DEBUG};
	char line[1024];
	int n;

	if (lvl > log_max)
		return;
	n = snprintf(line, sizeof(line), "%s: ", log_prog);
	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	{
		size_t m = strlen(line + n);

		if (m > 0 && line[n + m - 1] == '\n')
			line[n + m - 1] = '\0';
	}
	/* one reserved byte: the newline below */
	msg_one_line(line + n, sizeof(line) - n - 1);
	if (log_syslog) {
		syslog(prio[lvl], "%s", line + n);
		return;
	}
	n = strlen(line);
	/* One write per line so concurrent writers never interleave within a line. */
	line[n] = '\n';
	if (write(STDERR_FILENO, line, n + 1) < 0) {
		/* nowhere left to report it */
	}
}

void dp_log(enum dp_log_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	dp_vlog(lvl, fmt, ap);
	va_end(ap);
}

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

ssize_t dp_b64url_encode(const void *in, size_t n, char *out, size_t outsz)
{
	const uint8_t *p = in;
	size_t need = (n / 3) * 4 + (n % 3 ? n % 3 + 1 : 0);
	size_t i, o = 0;

	if (need + 1 > outsz)
		return -ENOSPC;
	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		out[o++] = b64url_alphabet[v >> 18];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
		out[o++] = b64url_alphabet[(v >> 6) & 63];
		out[o++] = b64url_alphabet[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)p[i] << 16;
		out[o++] = b64url_alphabet[v >> 18];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		out[o++] = b64url_alphabet[v >> 18];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
		out[o++] = b64url_alphabet[(v >> 6) & 63];
	}
	out[o] = '\0';
	return (ssize_t)o;
}

static int b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

ssize_t dp_b64url_decode(const char *in, size_t n, void *out, size_t outsz)
{
	uint8_t *o = out;
	size_t need, i, k = 0;
	uint32_t acc = 0;
	int bits = 0;

	if (n % 4 == 1)
		return -EINVAL;
	need = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
	if (need > outsz)
		return -ENOSPC;
	for (i = 0; i < n; i++) {
		int v = b64url_value((unsigned char)in[i]);

		if (v < 0)
			return -EINVAL;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			o[k++] = (uint8_t)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	/* Leftover bits must be zero: otherwise two encodings decode to the same bytes. */
	if (acc != 0)
		return -EINVAL;
	return (ssize_t)k;
}

int dp_random(void *buf, size_t n)
{
	uint8_t *p = buf;

	while (n > 0) {
		ssize_t r = getrandom(p, n, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int dp_random_id(char out[DP_ID_LEN])
{
	uint8_t raw[16];
	int err = dp_random(raw, sizeof(raw));

	if (err)
		return err;
	return dp_b64url_encode(raw, sizeof(raw), out, DP_ID_LEN) < 0 ? -ENOSPC : 0;
}

int64_t dp_now(void)
{
	return (int64_t)time(NULL);
}

void dp_timestamp(char out[DP_TS_LEN])
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	dp_timestamp_at(&ts, out);
}

void dp_timestamp_at(const struct timespec *ts, char out[DP_TS_LEN])
{
	struct tm tm;
	char buf[128]; /* roomy: gcc cannot see that tm's fields are small */
	size_t n;

	gmtime_r(&ts->tv_sec, &tm);
	snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts->tv_nsec / 1000);
	n = strnlen(buf, DP_TS_LEN - 1);
	memcpy(out, buf, n);
	out[n] = '\0';
}

int dp_grow(void *arrp, size_t *cap, size_t n, size_t elsize)
{
	size_t ncap = *cap ? *cap * 2 : 32;
	void *arr, *grown;

	if (n < *cap)
		return 0;
	if (ncap < *cap || ncap > SIZE_MAX / elsize)
		return -ENOMEM;
	/* through memcpy: arrp is a T ** for some T, not a void ** */
	memcpy(&arr, arrp, sizeof(arr));
	grown = realloc(arr, ncap * elsize);
	if (!grown)
		return -ENOMEM;
	memcpy(arrp, &grown, sizeof(grown));
	*cap = ncap;
	return 0;
}

ssize_t dp_read_upto(int fd, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, (char *)buf + got, n - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

int dp_read_file(const char *path, size_t max, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t cap = 4096, n = 0;
	char *buf;

	if (fd < 0)
		return -errno;
	buf = malloc(cap + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		ssize_t r;

		if (n == cap) {
			char *nb;

			if (cap > max) {
				free(buf);
				close(fd);
				return -EFBIG;
			}
			cap *= 2;
			nb = realloc(buf, cap + 1);
			if (!nb) {
				free(buf);
				close(fd);
				return -ENOMEM;
			}
			buf = nb;
		}
		r = read(fd, buf + n, cap - n);
		if (r < 0) {
			int e = errno;

			if (e == EINTR)
				continue;
			free(buf);
			close(fd);
			return -e;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (n > max) {
		free(buf);
		return -EFBIG;
	}
	buf[n] = '\0';
	*out = buf;
	if (len)
		*len = n;
	return 0;
}

int dp_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	char tmp[PATH_MAX];
	const char *p = data;
	int fd, err = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	while (len > 0) {
		ssize_t w = write(fd, p, len);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		p += w;
		len -= (size_t)w;
	}
	if (!err && fchmod(fd, mode) < 0)
		err = -errno;
	if (!err && fsync(fd) < 0)
		err = -errno;
	if (close(fd) < 0 && !err)
		err = -errno;
	if (!err && rename(tmp, path) < 0)
		err = -errno;
	if (err)
		unlink(tmp);
	return err;
}

int dp_mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

void dp_hex(const void *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	const uint8_t *p = in;

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

int dp_find_installed(const char *name, int amode, char *out, size_t outsz)
{
	char exe[PATH_MAX], *slash;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n <= 0)
		return -ENOENT;
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	if (!slash)
		return -ENOENT;
	*slash = '\0';
	snprintf(out, outsz, "%s/%s", exe, name);
	if (access(out, amode) == 0)
		return 0;
	snprintf(out, outsz, "%s/../lib/deputy/%s", exe, name);
	return access(out, amode) == 0 ? 0 : -ENOENT;
}

void dp_msghdr_fd(struct msghdr *mh, union dp_fd_cmsg *ctl, int fd)
{
	struct cmsghdr *c;

	memset(ctl, 0, sizeof(*ctl));
	mh->msg_control = ctl->buf;
	mh->msg_controllen = sizeof(ctl->buf);
	c = CMSG_FIRSTHDR(mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
}
