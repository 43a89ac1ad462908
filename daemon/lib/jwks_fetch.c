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
#include <openssl/evp.h>

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

int jwks_http_do(const struct jwks_http *req, char **out, size_t *len, long *status,
		 struct dp_err *err)
{
	struct fetch_buf b = {0};
	char cerr[CURL_ERROR_SIZE] = "";
	const char *ca = req->ca_file ? req->ca_file : getenv("DEPUTY_CA_FILE");
	const char *url = req->url;
	CURLcode rc;
	CURL *c;

	*status = 0;
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
	if (req->form)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->form);
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
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
	if (*status != 200 && !req->any_status) {
		free(b.data);
		dp_err_set(err, "%s: HTTP status %ld", url, *status);
		return -EIO;
	}
	if (!b.data) {
		dp_err_set(err, "%s: empty answer (HTTP status %ld)", url, *status);
		return -EIO;
	}
	*out = b.data;
	*len = b.len;
	return 0;
}

int jwks_fetch_url(const char *url, const char *ca_file, char **out, size_t *len,
		   struct dp_err *err)
{
	const struct jwks_http req = {.url = url, .ca_file = ca_file};
	long status;

	return jwks_http_do(&req, out, len, &status, err);
}

struct dp_keyset *jwks_load(const char *src, struct dp_err *err)
{
	return jwks_load_ca(src, NULL, err);
}

struct dp_keyset *jwks_load_ca(const char *src, const char *ca_file, struct dp_err *err)
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
		r = jwks_fetch_url(src, ca_file, &text, &len, err);
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

/* ---- issuer metadata ------------------------------------------------------------------- */

int jwks_meta_parse(const char *text, size_t len, const char *issuer, json_t **meta,
		    struct dp_err *err)
{
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	const char *iss;
	char b1[72], b2[72];

	*meta = NULL;
	if (!json_is_object(root)) {
		json_decref(root);
		dp_err_set(err, "discovery document is not a JSON object");
		return -EINVAL;
	}
	iss = json_string_value(json_object_get(root, "issuer"));
	if (!iss) {
		json_decref(root);
		dp_err_set(err, "discovery document has no \"issuer\"");
		return -EINVAL;
	}
	if (strcmp(iss, issuer) != 0) {
		dp_err_set(err, "discovery document names issuer \"%s\", expected \"%s\"",
			   DP_SAFE(b1, iss), DP_SAFE(b2, issuer));
		json_decref(root);
		return -EINVAL;
	}
	*meta = root;
	return 0;
}

const char *jwks_meta_url(const json_t *meta, const char *name, struct dp_err *err)
{
	const json_t *v = json_object_get(meta, name);
	const char *s = json_string_value(v);

	if (!v) {
		dp_err_set(err, "discovery document has no %s", name);
		return NULL;
	}
	if (!s || !jwks_url_allowed(s)) {
		dp_err_set(err,
			   "discovery document's %s is not an https:// URL (http:// only to "
			   "loopback)",
			   name);
		return NULL;
	}
	return s;
}

/* RFC 8414 §3.1: "https://as/tenant" -> "https://as/.well-known/oauth-authorization-server/tenant"
 */
static int meta_url_8414(const char *issuer, char *out, size_t outsz)
{
	const char *host = strstr(issuer, "://");
	const char *path;
	size_t plen;

	if (!host)
		return -EINVAL;
	path = strchr(host + 3, '/');
	if (!path)
		path = issuer + strlen(issuer);
	plen = strlen(path);
	if (plen && path[plen - 1] == '/')
		plen--;
	if ((size_t)snprintf(out, outsz, "%.*s/.well-known/oauth-authorization-server%.*s",
			     (int)(path - issuer), issuer, (int)plen, path) >= outsz)
		return -ENAMETOOLONG;
	return 0;
}

int jwks_discover(const char *issuer, const char *ca_file, json_t **meta, struct dp_err *err)
{
	char url[URL_MAX + 64], *text = NULL;
	struct dp_err e1 = {""}, e2 = {""};
	size_t len, ilen = strlen(issuer);
	int r;

	/* OIDC Discovery §4: the issuer with any trailing '/' removed, then the suffix */
	if (ilen && issuer[ilen - 1] == '/')
		ilen--;
	if ((size_t)snprintf(url, sizeof(url), "%.*s/.well-known/openid-configuration", (int)ilen,
			     issuer) >= sizeof(url)) {
		dp_err_set(err, "issuer URL too long");
		return -ENAMETOOLONG;
	}
	r = jwks_fetch_url(url, ca_file, &text, &len, &e1);
	if (r == 0) {
		r = jwks_meta_parse(text, len, issuer, meta, err);
		free(text);
		return r;
	}
	if (meta_url_8414(issuer, url, sizeof(url)) ||
	    jwks_fetch_url(url, ca_file, &text, &len, &e2)) {
		/* the OIDC failure says more: most IdPs serve that one */
		dp_err_set(err, "no discovery document: %s", e1.msg);
		return r;
	}
	r = jwks_meta_parse(text, len, issuer, meta, err);
	free(text);
	return r;
}

/* ---- a trusted issuer's keys, cached ------------------------------------------------------ */

/* <cache_dir>/<hex of the first 16 bytes of SHA-256(issuer)>.jwks: one file per issuer, a
 * name no issuer URL can steer. */
static int issuer_cache_path(const struct jwks_issuer *src, char *out, size_t outsz)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char hex[33];

	if (!EVP_Digest(src->issuer, strlen(src->issuer), md, &mdlen, EVP_sha256(), NULL))
		return -EIO;
	dp_hex(md, 16, hex);
	if ((size_t)snprintf(out, outsz, "%s/%s.jwks", src->cache_dir, hex) >= outsz)
		return -ENAMETOOLONG;
	return 0;
}

static struct dp_keyset *issuer_fetch(const struct jwks_issuer *src, char **text, size_t *len,
				      struct dp_err *err)
{
	const char *uri = src->jwks_uri;
	struct dp_keyset *ks = NULL;
	json_t *meta = NULL;

	if (!uri) {
		if (jwks_discover(src->issuer, src->ca_file, &meta, err))
			return NULL;
		uri = jwks_meta_url(meta, "jwks_uri", err);
	}
	if (uri && jwks_fetch_url(uri, src->ca_file, text, len, err) == 0) {
		ks = dp_keyset_parse(*text, *len, err);
		if (!ks) {
			char why[sizeof(err->msg)];

			snprintf(why, sizeof(why), "%s", err->msg);
			dp_err_set(err, "%s: %s", uri, why);
			free(*text);
			*text = NULL;
		}
	}
	json_decref(meta);
	return ks;
}

struct dp_keyset *jwks_issuer_load(const struct jwks_issuer *src, struct dp_err *err)
{
	char path[4096], *text = NULL;
	struct dp_keyset *ks;
	size_t len = 0;
	int r;

	ks = issuer_fetch(src, &text, &len, err);
	if (!src->cache_dir || issuer_cache_path(src, path, sizeof(path)))
		goto out;
	if (ks) {
		if (dp_mkdir_p(src->cache_dir, 0755) || dp_write_file_atomic(path, text, len, 0644))
			pr_debug("trusted issuer %s: keys not cached in %s", src->issuer,
				 src->cache_dir);
		goto out;
	}
	r = dp_read_file(path, JWKS_FETCH_MAX, &text, &len);
	if (r)
		goto out;
	ks = dp_keyset_parse(text, len, NULL);
	if (ks)
		pr_warn("trusted issuer %s: %s; using the %zu cached keys", src->issuer, err->msg,
			dp_keyset_count(ks));
out:
	free(text);
	return ks;
}
