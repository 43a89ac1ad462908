// SPDX-License-Identifier: MIT
/*
 * urlpath: the host and request-path normalisation route matching needs (url.h), apart from
 * url.c because it uses no libcurl: the shim compiles it too, so that deputyd and the shim's
 * session table read a host and a path with the very same code.
 */
#include "url.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

static void urlpath_lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

int url_host_normalize(const char *in, char *out, size_t outsz)
{
	char buf[INET6_ADDRSTRLEN + 2];
	struct in6_addr a6;
	struct in_addr a4;
	size_t n = strlen(in);
	const char *last;

	if (n >= 2 && in[0] == '[' && in[n - 1] == ']') {
		if (n - 2 >= sizeof(buf))
			return -EINVAL;
		memcpy(buf, in + 1, n - 2);
		buf[n - 2] = '\0';
		if (inet_pton(AF_INET6, buf, &a6) != 1)
			return -EINVAL;
		return inet_ntop(AF_INET6, &a6, out, (socklen_t)outsz) ? 0 : -EINVAL;
	}
	if (strchr(in, ':')) {
		if (inet_pton(AF_INET6, in, &a6) != 1)
			return -EINVAL;
		return inet_ntop(AF_INET6, &a6, out, (socklen_t)outsz) ? 0 : -EINVAL;
	}
	if (inet_pton(AF_INET, in, &a4) == 1)
		return inet_ntop(AF_INET, &a4, out, (socklen_t)outsz) ? 0 : -EINVAL;
	if (n == 0 || n > URL_HOST_MAX || n >= outsz)
		return -EINVAL;
	for (size_t i = 0, label = 0; i <= n; i++) {
		unsigned char ch = (unsigned char)in[i];

		if (ch == '.' || ch == '\0') {
			if (label == 0 || label > 63)
				return -EINVAL;
			label = 0;
			continue;
		}
		if (!isalnum(ch) && ch != '-' && ch != '_')
			return -EINVAL;
		label++;
	}
	/* an all-digit last label ("10.1.300") is a mistyped address, not a name */
	last = strrchr(in, '.') ? strrchr(in, '.') + 1 : in;
	if (strspn(last, "0123456789") == strlen(last))
		return -EINVAL;
	memcpy(out, in, n + 1);
	urlpath_lower(out);
	return 0;
}

static int url_hexval(unsigned char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = (unsigned char)tolower(ch);
	return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

static bool url_is_unreserved(unsigned char ch)
{
	return isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

/* The byte a "%XY" at in[i] stands for, or -1 when in[i] starts no escape. */
static int url_escape_at(const char *in, size_t n, size_t i)
{
	int hi, lo;

	if (in[i] != '%' || i + 2 >= n || (hi = url_hexval((unsigned char)in[i + 1])) < 0 ||
	    (lo = url_hexval((unsigned char)in[i + 2])) < 0)
		return -1;
	return hi << 4 | lo;
}

/* Normalised so that "/%61dmin", "//admin" or "/x/../admin" cannot slip past a route written
 * for "/admin*": slashes are merged as nginx does before it resolves dot segments. Decoding
 * other escapes would change the path's meaning. */
void url_path_normalize(const char *in, size_t n, char *out)
{
	char dec[URL_PATH_MAX + 1];
	size_t d = 0, o = 0;
	const char *p;

	if (n > URL_PATH_MAX)
		n = URL_PATH_MAX; /* callers refuse longer paths; never overrun dec */
	for (size_t i = 0; i < n; i++) {
		int ch = url_escape_at(in, n, i);

		if (ch >= 0 && url_is_unreserved((unsigned char)ch)) {
			dec[d++] = (char)ch;
			i += 2;
			continue;
		}
		if (in[i] == '/' && d > 0 && dec[d - 1] == '/')
			continue;
		dec[d++] = in[i];
	}
	dec[d] = '\0';

	p = dec;
	while (*p) {
		if (strncmp(p, "../", 3) == 0) {
			p += 3;
		} else if (strncmp(p, "./", 2) == 0) {
			p += 2;
		} else if (strncmp(p, "/./", 3) == 0) {
			p += 2;
		} else if (strcmp(p, "/.") == 0) {
			p = "/";
		} else if (strncmp(p, "/../", 4) == 0 || strcmp(p, "/..") == 0) {
			p = p[3] ? p + 3 : "/";
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--;
		} else if (strcmp(p, ".") == 0 || strcmp(p, "..") == 0) {
			break;
		} else {
			do
				out[o++] = *p++;
			while (*p && *p != '/');
		}
	}
	out[o] = '\0';
}

/* A segment (up to '/' or the end) that is "." or ".." once a ';' parameter, literal or
 * %3B, is cut off, and that has one: Tomcat and Spring read "..;x" as "..". */
static bool url_dot_segment_with_params(const char *seg, size_t n)
{
	size_t dots = 0;

	while (dots < n && seg[dots] == '.')
		dots++;
	if (dots == 0 || dots > 2 || dots == n)
		return false;
	return seg[dots] == ';' || url_escape_at(seg, n, dots) == ';';
}

const char *url_path_ambiguous(const char *path, size_t n)
{
	char dec[URL_PATH_MAX + 1];
	size_t d = 0;

	if (n > URL_PATH_MAX)
		return "the path is too long";
	for (size_t i = 0; i < n; i++) {
		unsigned char raw = (unsigned char)path[i];
		int ch = url_escape_at(path, n, i);

		if (raw < 0x20 || raw == 0x7f || (ch >= 0 && (ch < 0x20 || ch == 0x7f)))
			return "a control byte in the path";
		if (raw == '\\')
			return "a backslash in the path";
		if (ch == '/' || ch == '\\')
			return "an encoded '/' or '\\' in the path";
		if (ch >= 0 && url_is_unreserved((unsigned char)ch)) {
			dec[d++] = (char)ch;
			i += 2;
		} else {
			dec[d++] = path[i];
		}
	}
	dec[d] = '\0';
	for (size_t i = 0; i < d; i++)
		if ((i == 0 || dec[i - 1] == '/') &&
		    url_dot_segment_with_params(dec + i, strcspn(dec + i, "/")))
			return "a ';' parameter on a '.' or '..' segment";
	return NULL;
}

void url_path_strip_params(const char *in, char *out)
{
	bool in_param = false;

	for (; *in; in++) {
		if (*in == '/')
			in_param = false;
		else if (*in == ';')
			in_param = true;
		if (!in_param)
			*out++ = *in;
	}
	*out = '\0';
}
