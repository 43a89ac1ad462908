// SPDX-License-Identifier: MIT
/* jwks_fetch: loading key sets from files, inline JSON and URLs (see jwks_fetch.h). */
#include "jwks_fetch.h"

#include <ctype.h>
#include <stdio.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "url.h"

struct fetch_buf {
	char *data;
	size_t len;
	bool too_big;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

bool jwks_is_url(const char *src)
{
	return strncasecmp(src, "https://", 8) == 0 || strncasecmp(src, "http://", 7) == 0;
}

bool jwks_url_allowed(const char *url)
{
	struct url_parts u;

	return url_parse_http(url, &u, NULL) == 0 && url_fetch_allowed(&u);
}

static size_t fetch_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct fetch_buf *b = userdata;
	size_t n = size * nmemb;
	char *nd;

	if (b->len + n > JWKS_FETCH_MAX) {
		b->too_big = true;
		return 0; /* aborts the transfer */
	}
	nd = realloc(b->data, b->len + n + 1);
	if (!nd)
		return 0;
	b->data = nd;
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

int jwks_fetch_url(const char *url, char **out, size_t *len, struct dp_err *err)
{
	struct fetch_buf b = {0};
	char cerr[CURL_ERROR_SIZE] = "";
	const char *ca = getenv("DEPUTY_CA_FILE");
	long status = 0;
	CURLcode rc;
	CURL *c;

	if (!jwks_url_allowed(url)) {
		dp_err_set(err, "%s: only https:// (or http:// to loopback) is allowed", url);
		return -EINVAL;
	}
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK) {
		dp_err_set(err, "libcurl initialisation failed");
		return -ENOSYS;
	}
	c = curl_easy_init();
	if (!c) {
		dp_err_set(err, "out of memory");
		return -ENOMEM;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)JWKS_FETCH_TIMEOUT);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)JWKS_FETCH_TIMEOUT);
	curl_easy_setopt(c, CURLOPT_MAXFILESIZE, (long)JWKS_FETCH_MAX);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fetch_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "deputy");
	/* The proxy of an agent's environment has no business in key fetching. */
	curl_easy_setopt(c, CURLOPT_PROXY, "");
	if (ca && *ca)
		curl_easy_setopt(c, CURLOPT_CAINFO, ca);
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	if (b.too_big || rc == CURLE_FILESIZE_EXCEEDED) {
		free(b.data);
		dp_err_set(err, "%s: answer larger than %d bytes", url, JWKS_FETCH_MAX);
		return -EFBIG;
	}
	if (rc != CURLE_OK) {
		free(b.data);
		dp_err_set(err, "%s: %s", url, cerr[0] ? cerr : curl_easy_strerror(rc));
		return -EIO;
	}
	if (status != 200) {
		free(b.data);
		dp_err_set(err, "%s: HTTP status %ld", url, status);
		return -EIO;
	}
	if (!b.data) {
		dp_err_set(err, "%s: empty answer", url);
		return -EIO;
	}
	*out = b.data;
	*len = b.len;
	return 0;
}

struct dp_keyset *jwks_load(const char *src, struct dp_err *err)
{
	struct dp_keyset *ks;
	const char *p = src;
	char *text = NULL;
	size_t len = 0;
	int r;

	while (isspace((unsigned char)*p))
		p++;
	if (*p == '{')
		return dp_keyset_parse(p, strlen(p), err);
	if (jwks_is_url(src)) {
		r = jwks_fetch_url(src, &text, &len, err);
	} else {
		r = dp_read_file(src, JWKS_FETCH_MAX, &text, &len);
		if (r)
			dp_err_set(err, "%s: %s", src,
				   r == -EFBIG ? "JWKS file too large" : strerror(-r));
	}
	if (r)
		return NULL;
	ks = dp_keyset_parse(text, len, err);
	free(text);
	if (!ks && err) {
		char why[sizeof(err->msg)];

		snprintf(why, sizeof(why), "%s", err->msg);
		dp_err_set(err, "%s: %s", src, why);
	}
	if (ks && dp_keyset_count(ks) == 0)
		pr_warn("JWKS %s holds no usable key", src);
	return ks;
}
