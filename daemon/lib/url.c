// SPDX-License-Identifier: MIT
/*
 * url: URL, host and request-path handling shared by the config parser, key fetching, route
 * matching, decisions and htu (see url.h). Parsing an URL is libcurl's job (CURLU), so that
 * deputy reads a URL exactly as the libcurl that fetches it does; the checks around it are
 * deputy's own, and they are stricter than curl where a lenient reading could be abused
 * ("https:///x" is host "x" to curl, "https://u@h" carries credentials).
 */
#include "url.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

bool url_has_ctl_or_space(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f)
			return true;
	return false;
}

static void url_str_lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

static bool url_curl_has(CURLU *u, CURLUPart part)
{
	char *v = NULL;
	bool has = curl_url_get(u, part, &v, 0) == CURLUE_OK && v;

	curl_free(v);
	return has;
}

/* Into a fresh CURLU, or NULL with the curl error in *rc. */
static CURLU *url_curl_parse(const char *s, unsigned int flags, CURLUcode *rc)
{
	CURLU *u = curl_url();

	*rc = u ? curl_url_set(u, CURLUPART_URL, s, flags) : CURLUE_OUT_OF_MEMORY;
	if (*rc != CURLUE_OK) {
		curl_url_cleanup(u);
		return NULL;
	}
	return u;
}

static int url_reason(struct dp_err *err, int rc, const char *why)
{
	dp_err_set(err, "%s", why);
	return rc;
}

int url_parse_http(const char *s, struct url_parts *out, struct dp_err *err)
{
	const char *host_missing = "URI must have a host (and no user info)";
	char *scheme = NULL, *host = NULL;
	const char *auth;
	CURLUcode rc;
	CURLU *u;
	size_t hn;
	int r = 0;

	memset(out, 0, sizeof(*out));
	if (strncasecmp(s, "https://", 8) != 0 && strncasecmp(s, "http://", 7) != 0)
		return url_reason(err, -EINVAL, "must be an https:// or http:// URI");
	if (strlen(s) > URL_MAX) {
		dp_err_set(err, "URI too long (at most %d bytes)", URL_MAX);
		return -EINVAL;
	}
	if (url_has_ctl_or_space(s))
		return url_reason(err, -EINVAL,
				  "URI must not contain spaces or control characters");
	if (strchr(s, '#'))
		return url_reason(err, -EINVAL, "URI must not have a fragment");
	/* curl reads "https:///x" as host "x"; an empty authority is no host to us */
	auth = strstr(s, "://") + 3;
	if (*auth == '/' || *auth == '?' || *auth == '\0')
		return url_reason(err, -EINVAL, host_missing);
	u = url_curl_parse(s, 0, &rc);
	if (!u) {
		switch (rc) {
		case CURLUE_OUT_OF_MEMORY:
			return url_reason(err, -ENOMEM, "out of memory");
		case CURLUE_NO_HOST:
		case CURLUE_BAD_LOGIN:
		case CURLUE_BAD_USER:
		case CURLUE_BAD_PASSWORD:
			return url_reason(err, -EINVAL, host_missing);
		case CURLUE_BAD_IPV6:
			return url_reason(err, -EINVAL, "URI has a bad IPv6 literal");
		case CURLUE_BAD_PORT_NUMBER:
			return url_reason(err, -EINVAL, "URI has a bad port");
		default:
			return url_reason(err, -EINVAL, "URI has a bad host");
		}
	}
	if (url_curl_has(u, CURLUPART_USER) || url_curl_has(u, CURLUPART_PASSWORD) ||
	    url_curl_has(u, CURLUPART_OPTIONS)) {
		r = url_reason(err, -EINVAL, host_missing);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		r = url_reason(err, -EINVAL, host_missing);
		goto out;
	}
	out->https = strcmp(scheme, "https") == 0;
	hn = strlen(host);
	if (hn >= 2 && host[0] == '[' && host[hn - 1] == ']') {
		memmove(host, host + 1, hn - 2);
		host[hn -= 2] = '\0';
	}
	if (hn == 0 || hn >= sizeof(out->host)) {
		r = url_reason(err, -EINVAL, "URI has a bad host");
		goto out;
	}
	memcpy(out->host, host, hn + 1);
	url_str_lower(out->host);
out:
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return r;
}

bool url_addr_is_loopback(int family, const void *addr)
{
	if (family == AF_INET) {
		const unsigned char *b = addr;

		return b[0] == 127;
	}
	return family == AF_INET6 && IN6_IS_ADDR_LOOPBACK((const struct in6_addr *)addr);
}

bool url_host_is_loopback(const char *host)
{
	unsigned char a[sizeof(struct in6_addr)];
	char buf[INET6_ADDRSTRLEN + 1];
	size_t n = strlen(host);

	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(buf)) {
		memcpy(buf, host + 1, n - 2);
		buf[n - 2] = '\0';
		return inet_pton(AF_INET6, buf, a) == 1 && url_addr_is_loopback(AF_INET6, a);
	}
	if (inet_pton(AF_INET, host, a) == 1)
		return url_addr_is_loopback(AF_INET, a);
	return inet_pton(AF_INET6, host, a) == 1 && url_addr_is_loopback(AF_INET6, a);
}

bool url_fetch_allowed(const struct url_parts *u)
{
	return u->https || url_host_is_loopback(u->host);
}

static int url_copy_path(const char *p, size_t n, char *out, size_t outsz)
{
	if (n + 1 > outsz)
		return -ENOSPC;
	memcpy(out, p, n);
	out[n] = '\0';
	return 0;
}

int url_target_path(const char *target, char *out, size_t outsz)
{
	char *path = NULL;
	CURLUcode rc;
	CURLU *u;
	int r;

	if (target[0] == '/')
		return url_copy_path(target, strcspn(target, "?#"), out, outsz);
	if (strncasecmp(target, "http://", 7) != 0 && strncasecmp(target, "https://", 8) != 0)
		return -EINVAL; /* authority-form and asterisk-form have no path */
	/* The path as the client wrote it: the route sees it normalised by url_path_normalize,
	 * htu carries it as sent. */
	u = url_curl_parse(target, CURLU_PATH_AS_IS | CURLU_ALLOW_SPACE, &rc);
	if (!u)
		return rc == CURLUE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
	rc = curl_url_get(u, CURLUPART_PATH, &path, 0);
	r = rc != CURLUE_OK ? -EINVAL : url_copy_path(path, strlen(path), out, outsz);
	curl_free(path);
	curl_url_cleanup(u);
	return r;
}
