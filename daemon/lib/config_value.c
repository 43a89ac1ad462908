// SPDX-License-Identifier: MIT
/*
 * config_value: the config parser's checks of single JSON values (strings, integers,
 * choices, paths, URIs, HTTP tokens, listen addresses, CIDRs, cgroup paths, path globs), of
 * an object's keys and of arrays of objects, each failing with one line that names the key
 * path. config.c holds the schema that uses them.
 */
#include "config_value.h"

#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cfg_fail(struct cfg_ctx *c, const char *key, const char *fmt, ...)
{
	struct config_report *rep = c->report;
	struct dp_err line;
	char why[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (c->where[0] && key)
		dp_err_set(&line, "%s.%s: %s", c->where, key, why);
	else if (c->where[0] || key)
		dp_err_set(&line, "%s: %s", c->where[0] ? c->where : key, why);
	else
		dp_err_set(&line, "%s", why);
	if (c->err && !c->err->msg[0])
		*c->err = line;
	if (rep && rep->n < CONFIG_MAX_REPORT)
		snprintf(rep->line[rep->n++], sizeof(rep->line[0]), "%s", line.msg);
	else if (rep)
		rep->more++;
	return -EINVAL;
}

/* Edit distance of two short keys, a swap of neighbours counting as one edit (optimal string
 * alignment: "scpoe" is one typo from "scope"); longer keys are "far". */
static size_t cfg_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), m[65][65];

	if (la > 64 || lb > 64)
		return SIZE_MAX;
	for (size_t i = 0; i <= la; i++)
		m[i][0] = i;
	for (size_t j = 0; j <= lb; j++)
		m[0][j] = j;
	for (size_t i = 1; i <= la; i++)
		for (size_t j = 1; j <= lb; j++) {
			size_t best = m[i - 1][j - 1] + (a[i - 1] != b[j - 1]);

			if (m[i - 1][j] + 1 < best)
				best = m[i - 1][j] + 1;
			if (m[i][j - 1] + 1 < best)
				best = m[i][j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    m[i - 2][j - 2] + 1 < best)
				best = m[i - 2][j - 2] + 1;
			m[i][j] = best;
		}
	return m[la][lb];
}

/* The allowed key a typo most likely meant: the nearest within a third of its length (at
 * least 1, at most 3 edits), else NULL. */
static const char *cfg_meant(const char *key, const char *const *allowed, size_t n)
{
	size_t best = SIZE_MAX, limit = strlen(key) / 3;
	const char *meant = NULL;

	if (limit < 1)
		limit = 1;
	if (limit > 3)
		limit = 3;
	for (size_t i = 0; i < n; i++) {
		size_t d = cfg_distance(key, allowed[i]);

		if (d < best) {
			best = d;
			meant = allowed[i];
		}
	}
	return best <= limit ? meant : NULL;
}

/* ---- character classes ------------------------------------------------------------- */

/* RFC 6749 §3.3 scope-token: printable ASCII except space, '"' and '\'. */
bool cfg_is_scope_token(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > CFG_MAX_SCOPE)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 0x21 || ch > 0x7e || ch == '"' || ch == '\\')
			return false;
	}
	return true;
}

/* ---- value checkers: each takes the JSON value of one key --------------------------- */

int cfg_get_string(struct cfg_ctx *c, const char *key, json_t *v, const char **out)
{
	if (!json_is_string(v))
		return cfg_fail(c, key, "must be a string");
	*out = json_string_value(v);
	return 0;
}

int cfg_dup_string(struct cfg_ctx *c, const char *key, const char *s, char **out)
{
	free(*out);
	*out = strdup(s);
	if (!*out) {
		dp_err_set(c->err, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

int cfg_get_int(struct cfg_ctx *c, const char *key, json_t *v, int lo, int hi, int *out)
{
	json_int_t i;

	if (!v)
		return 0;
	if (!json_is_integer(v))
		return cfg_fail(c, key, "must be an integer from %d to %d", lo, hi);
	i = json_integer_value(v);
	if (i < lo || i > hi)
		return cfg_fail(c, key, "must be an integer from %d to %d", lo, hi);
	*out = (int)i;
	return 0;
}

int cfg_get_bool(struct cfg_ctx *c, const char *key, json_t *v, bool *out)
{
	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return cfg_fail(c, key, "must be true or false");
	*out = json_is_true(v);
	return 0;
}

/* One of two words; *out is 0 for the first, 1 for the second. */
int cfg_get_choice(struct cfg_ctx *c, const char *key, json_t *v, const char *a, const char *b,
		   int *out)
{
	const char *s = json_is_string(v) ? json_string_value(v) : NULL;

	if (!v)
		return 0;
	if (s && strcmp(s, a) == 0)
		*out = 0;
	else if (s && strcmp(s, b) == 0)
		*out = 1;
	else
		return cfg_fail(c, key, "must be \"%s\" or \"%s\"", a, b);
	return 0;
}

int cfg_get_abs_path(struct cfg_ctx *c, const char *key, json_t *v, size_t max, char **out)
{
	const char *s = NULL;
	int r = cfg_get_string(c, key, v, &s);

	if (r)
		return r;
	if (s[0] != '/')
		return cfg_fail(c, key, "must be an absolute path");
	if (strlen(s) > max)
		return cfg_fail(c, key, "path too long (at most %zu bytes)", max);
	return cfg_dup_string(c, key, s, out);
}

/*
 * An http(s) URI as issuers and audiences are written. It is compared byte for byte
 * elsewhere, so it is not normalised, and its scheme must be written in lower case.
 */
int cfg_check_uri(struct cfg_ctx *c, const char *key, const char *s, struct url_parts *parts)
{
	struct dp_err uerr;
	int r;

	if (strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0)
		return cfg_fail(c, key, "must be an https:// or http:// URI");
	r = url_parse_http(s, parts, &uerr);
	if (r == -ENOMEM) {
		dp_err_set(c->err, "out of memory");
		return r;
	}
	return r ? cfg_fail(c, key, "%s", uerr.msg) : 0;
}

int cfg_check_keys(struct cfg_ctx *c, json_t *obj, const char *const *allowed, size_t n)
{
	const char *key, *meant;
	json_t *v;
	int r = 0;

	json_object_foreach(obj, key, v)
	{
		size_t i;

		for (i = 0; i < n; i++)
			if (strcmp(key, allowed[i]) == 0)
				break;
		if (i == n) {
			char shown[64];

			/* keys are printed quoted; cut absurd ones and hide control bytes */
			snprintf(shown, sizeof(shown), "%s", key);
			for (char *p = shown; *p; p++)
				if ((unsigned char)*p < 0x20 || *p == '"')
					*p = '?';
			meant = cfg_meant(key, allowed, n);
			if (meant)
				r = cfg_fail(c, NULL, "unknown key \"%s\" (did you mean \"%s\"?)",
					     shown, meant);
			else
				r = cfg_fail(c, NULL, "unknown key \"%s\"", shown);
		}
	}
	return r;
}

int cfg_check_object(struct cfg_ctx *c, json_t *obj, const char *const *allowed, size_t n)
{
	if (!json_is_object(obj))
		return cfg_fail(c, NULL, "must be an object");
	return cfg_check_keys(c, obj, allowed, n);
}

int cfg_required_string(struct cfg_ctx *c, json_t *obj, const char *key, const char **out)
{
	json_t *v = json_object_get(obj, key);

	if (!v)
		return cfg_fail(c, key, "required");
	return cfg_get_string(c, key, v, out);
}

int cfg_get_issuer(struct cfg_ctx *c, json_t *obj, char **out)
{
	struct url_parts parts;
	const char *s = NULL;
	int r;

	if ((r = cfg_required_string(c, obj, "issuer", &s)) ||
	    (r = cfg_check_uri(c, "issuer", s, &parts)))
		return r;
	return cfg_dup_string(c, "issuer", s, out);
}

/* Arrays of objects: counted, bounded, each element parsed with its index in the path. */
int cfg_parse_array(struct cfg_ctx *c, const char *key, json_t *arr, size_t max, size_t elsize,
		    void **out, size_t *n_out, int (*parse_one)(struct cfg_ctx *, json_t *, void *))
{
	size_t n;
	char *items;

	if (!json_is_array(arr))
		return cfg_fail(c, key, "must be an array");
	n = json_array_size(arr);
	if (n > max)
		return cfg_fail(c, key, "at most %zu entries", max);
	items = calloc(n ? n : 1, elsize);
	if (!items) {
		dp_err_set(c->err, "out of memory");
		return -ENOMEM;
	}
	*out = items;
	*n_out = n; /* config_free frees partially filled arrays too */
	int first = 0;

	for (size_t i = 0; i < n; i++) {
		struct cfg_ctx sub = {.err = c->err, .report = c->report};
		int r;

		/* nested arrays (a route's addrs) keep the whole key path */
		if (c->where[0])
			snprintf(sub.where, sizeof(sub.where), "%s.%s[%zu]", c->where, key, i);
		else
			snprintf(sub.where, sizeof(sub.where), "%s[%zu]", key, i);
		/* the next element is checked too: every broken one is reported */
		r = parse_one(&sub, json_array_get(arr, i), items + i * elsize);
		if (r == -ENOMEM)
			return r;
		if (r && !first)
			first = r;
	}
	return first;
}

/* ---- network values, cgroup paths, globs ---------------------------------------------- */

int config_parse_listen(const char *text, bool allow_port0, struct sockaddr_storage *ss,
			socklen_t *sslen)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *h = text, *he;
	struct sockaddr_in6 *s6;
	struct sockaddr_in *s4;
	char *end;
	void *addr;
	int family;
	long port;

	if (!text || strlen(text) > INET6_ADDRSTRLEN + 8)
		return -EINVAL;
	if (text[0] == '[') {
		const char *rb = strchr(text, ']');

		if (!rb || rb[1] != ':')
			return -EINVAL;
		h = text + 1;
		he = rb;
		colon = rb + 1;
	} else {
		colon = strrchr(text, ':');
		if (!colon || memchr(text, ':', (size_t)(colon - text)))
			return -EINVAL; /* an IPv6 address needs its brackets here */
		he = colon;
	}
	if (he == h || (size_t)(he - h) >= sizeof(host))
		return -EINVAL;
	memcpy(host, h, (size_t)(he - h));
	host[he - h] = '\0';
	if (!isdigit((unsigned char)colon[1]))
		return -EINVAL;
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno || *end || port < (allow_port0 ? 0 : 1) || port > 65535)
		return -EINVAL;

	memset(ss, 0, sizeof(*ss));
	s6 = (struct sockaddr_in6 *)ss;
	s4 = (struct sockaddr_in *)ss;
	family = text[0] == '[' ? AF_INET6 : AF_INET;
	addr = family == AF_INET6 ? (void *)&s6->sin6_addr : (void *)&s4->sin_addr;
	if (inet_pton(family, host, addr) != 1)
		return -EINVAL;
	if (!url_addr_is_loopback(family, addr))
		return -EADDRNOTAVAIL;
	ss->ss_family = (sa_family_t)family;
	if (family == AF_INET6)
		s6->sin6_port = htons((uint16_t)port);
	else
		s4->sin_port = htons((uint16_t)port);
	*sslen = family == AF_INET6 ? sizeof(*s6) : sizeof(*s4);
	return 0;
}

static int cfg_parse_unix_cb(struct cfg_ctx *c, json_t *v, void *item)
{
	const char *s = NULL;
	size_t n;
	int r;

	if ((r = cfg_get_string(c, NULL, v, &s)))
		return r;
	n = json_string_length(v);
	if ((s[0] != '/' && s[0] != '@') || n < 2 || strlen(s) != n)
		return cfg_fail(c, NULL,
				"must be an absolute socket path or \"@name\" (abstract socket)");
	/* sun_path holds 108 bytes: a path and its NUL, or an abstract name after a NUL. */
	if (n > 107 + (s[0] == '@'))
		return cfg_fail(c, NULL, "longer than a Unix socket address (107 bytes)");
	return cfg_dup_string(c, NULL, s, item);
}

int cfg_parse_allow_unix(struct cfg_ctx *c, json_t *v, char ***out, size_t *n_out)
{
	/* glibc asks nscd (when it runs) for names and users; where it is not running, the
	 * connect fails either way. /var/run is a link to /run, but the hook sees the path as
	 * written, and glibc writes the old one. */
	static const char *const defaults[] = {"/var/run/nscd/socket", "/run/nscd/socket"};

	if (v)
		return cfg_parse_array(c, "allow_unix", v, 256, sizeof(char *), (void **)out, n_out,
				       cfg_parse_unix_cb);
	*out = calloc(DP_ARRAY_SIZE(defaults), sizeof(char *));
	if (!*out)
		return -ENOMEM;
	for (*n_out = 0; *n_out < DP_ARRAY_SIZE(defaults); (*n_out)++)
		if (!((*out)[*n_out] = strdup(defaults[*n_out])))
			return -ENOMEM;
	return 0;
}

/*
 * "10.0.0.0/8", "fd00::/8", or a bare address (one host). Host bits set beyond the prefix
 * are refused rather than silently masked: "10.1.2.3/8" is more likely a typo for a /32
 * than a wish to open a whole /8.
 */
int cfg_parse_cidr(struct cfg_ctx *c, const char *key, const char *s, struct dp_cidr *out)
{
	char addr[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	int maxp, prefix;

	if (alen == 0 || alen >= sizeof(addr))
		return cfg_fail(c, key, "\"%s\" is not an address or CIDR", s);
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, addr, out->addr) == 1) {
		out->family = AF_INET;
		maxp = 32;
	} else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
		out->family = AF_INET6;
		maxp = 128;
	} else {
		return cfg_fail(c, key, "\"%s\" is not an address or CIDR", s);
	}
	prefix = maxp;
	if (slash) {
		const char *p = slash + 1;

		/* digits only: no sign, no spaces, no leading zeros beyond "0" */
		if (!*p || strlen(p) > 3 || (p[0] == '0' && p[1]))
			return cfg_fail(c, key, "\"%s\": bad prefix length", s);
		prefix = 0;
		for (; *p; p++) {
			if (!isdigit((unsigned char)*p))
				return cfg_fail(c, key, "\"%s\": bad prefix length", s);
			prefix = prefix * 10 + (*p - '0');
		}
		if (prefix > maxp)
			return cfg_fail(c, key, "\"%s\": prefix length must be at most %d", s,
					maxp);
	}
	for (int bit = prefix; bit < maxp; bit++) {
		if (out->addr[bit / 8] & (0x80 >> (bit % 8)))
			return cfg_fail(c, key,
					"\"%s\": address has bits set beyond the /%d prefix", s,
					prefix);
	}
	out->prefix = prefix;
	return cfg_dup_string(c, key, s, &out->text);
}

/*
 * A relative cgroup path under the cgroup2 root: components of [A-Za-z0-9._-], none of
 * them "." or "..", no leading, trailing or doubled '/'. deputyd creates and removes
 * directories under it as root, so nothing may point outside the hierarchy.
 */
bool cfg_cgroup_path_ok(const char *s)
{
	size_t n = strlen(s);
	const char *comp = s;

	if (n == 0 || n > CFG_MAX_CGROUP)
		return false;
	for (size_t i = 0; i <= n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '/' || ch == '\0') {
			size_t clen = (size_t)(s + i - comp);

			if (clen == 0 || (clen == 1 && comp[0] == '.') ||
			    (clen == 2 && comp[0] == '.' && comp[1] == '.'))
				return false;
			comp = s + i + 1;
			continue;
		}
		if (!isalnum(ch) && ch != '.' && ch != '_' && ch != '-')
			return false;
	}
	return true;
}

/* What fnmatch(3) would not read as written: a '[' whose class never ends matches a literal
 * '[' there, and a trailing '\\' escapes nothing, so the route would silently mean another
 * path than it seems to. NULL when well-formed. */
const char *cfg_glob_problem(const char *s)
{
	for (const char *p = s; *p; p++) {
		if (*p == '\\') {
			if (!*++p)
				return "ends with an escaping '\\'";
		} else if (*p == '[') {
			const char *q = p + 1;

			if (*q == '!' || *q == '^')
				q++;
			if (*q == ']')
				q++; /* a ']' first in the class is one of its characters */
			q = strchr(q, ']');
			if (!q)
				return "has a '[' without its closing ']'";
			p = q;
		}
	}
	return NULL;
}
