// SPDX-License-Identifier: MIT
/*
 * config: parses and validates deputyd's JSON configuration. Matching requests to its routes
 * is route.c's job (in deputyd); URLs and hosts are taken apart by url.c.
 *
 * The config decides what an agent may do on behalf of a user, so it is read strictly: an
 * unknown key is an error (a typo such as "enforcee" must never silently leave enforcement
 * at a default), every value is type- and range-checked, and every error is one line that
 * names the key path ("routes[2].port: must be an integer from 1 to 65535"). Nothing is
 * half-applied: the caller gets a complete config or an error.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_value.h"
#include "httphead.h"
#include "url.h"

#define CFG_MAX_FILE (1 << 20)
#define CFG_MAX_ROUTES 4096
#define CFG_MAX_ISSUERS 64
#define CFG_MAX_CIDRS 1024
#define CFG_MAX_ROUTE_ADDRS 64
#define CFG_MAX_GLOB 2048
#define CFG_MAX_TOKEN 64     /* HTTP methods and header names */
#define CFG_SUN_PATH_MAX 107 /* sizeof(sun_path) - 1 */

/* Keeps the first error in *first and says whether r is one: parsing goes on after an
 * error so that all of them are reported (cfg_fail records each). */
static bool cfg_keep(int *first, int r)
{
	if (r && !*first)
		*first = r;
	return r != 0;
}

/* ---- objects ----------------------------------------------------------------------- */

/* Header fields whose replacement would change the message framing or its target. */
static const char *const cfg_forbidden_headers[] = {
    "host", "content-length", "transfer-encoding", "connection",       "upgrade",
    "te",   "trailer",	      "keep-alive",	   "proxy-connection", "expect",
};

/* A route's path glob. */
static int cfg_parse_route_path(struct cfg_ctx *c, json_t *v, struct dp_route *rt)
{
	char norm[CFG_MAX_GLOB + 1];
	const char *s = NULL, *why;
	int r;

	if ((r = cfg_get_string(c, "path", v, &s)))
		return r;
	if (s[0] != '/' && s[0] != '*')
		return cfg_fail(c, "path", "must start with '/' or '*'");
	if (strlen(s) > CFG_MAX_GLOB || url_has_ctl_or_space(s))
		return cfg_fail(c, "path",
				"must be at most %d bytes without spaces or control characters",
				CFG_MAX_GLOB);
	/* matched against the path without query or fragment: '#' could never match */
	if (strchr(s, '#'))
		return cfg_fail(c, "path", "must not contain '#'");
	if ((why = cfg_glob_problem(s)))
		return cfg_fail(c, "path", "the glob \"%s\" %s", s, why);
	/* requests are normalised before matching, so a pattern that is not could
	 * never match what it seems to say */
	url_path_normalize(s, strlen(s), norm);
	if (strcmp(norm, s) != 0)
		return cfg_fail(c, "path",
				"must be normalised (no \".\" or \"..\" segments, no "
				"%%-escaped letters or digits): \"%s\"",
				norm);
	return cfg_dup_string(c, "path", s, &rt->path);
}

/* What only a delegate route has: audience, scope and the header that carries the token. */
static int cfg_parse_route_delegate(struct cfg_ctx *c, json_t *obj, struct dp_route *rt)
{
	struct url_parts parts;
	const char *s = NULL;
	json_t *v;
	int r;

	if (!(v = json_object_get(obj, "audience")))
		return cfg_fail(c, "audience", "required with \"action\": \"delegate\"");
	if ((r = cfg_get_string(c, "audience", v, &s)) ||
	    (r = cfg_check_uri(c, "audience", s, &parts)) ||
	    (r = cfg_dup_string(c, "audience", s, &rt->audience)))
		return r;

	if (!(v = json_object_get(obj, "scope")))
		return cfg_fail(c, "scope", "required with \"action\": \"delegate\"");
	if ((r = cfg_get_string(c, "scope", v, &s)))
		return r;
	if (!cfg_is_scope_token(s))
		return cfg_fail(c, "scope",
				"must be one scope (printable, no spaces, at most %d bytes)",
				CFG_MAX_SCOPE);
	if ((r = cfg_dup_string(c, "scope", s, &rt->scope)))
		return r;

	s = "Authorization";
	if ((v = json_object_get(obj, "header"))) {
		if ((r = cfg_get_string(c, "header", v, &s)))
			return r;
		if (!hh_is_token(s, CFG_MAX_TOKEN))
			return cfg_fail(c, "header", "must be an HTTP header name");
		for (size_t i = 0; i < DP_ARRAY_SIZE(cfg_forbidden_headers); i++)
			if (strcasecmp(s, cfg_forbidden_headers[i]) == 0)
				return cfg_fail(c, "header", "\"%s\" cannot carry a token", s);
	}
	return cfg_dup_string(c, "header", s, &rt->header);
}

static int cfg_parse_cidr_cb(struct cfg_ctx *c, json_t *v, void *item);

static int cfg_parse_route(struct cfg_ctx *c, json_t *obj, struct dp_route *rt)
{
	static const char *const keys[] = {"host",   "port",	 "method", "path",
					   "action", "audience", "scope",  "header",
					   "tls",    "addrs",	 "mcp"};
	char host[INET6_ADDRSTRLEN + URL_HOST_MAX];
	json_t *v;
	const char *s = NULL;
	int r;

	if ((r = cfg_check_object(c, obj, keys, DP_ARRAY_SIZE(keys))) ||
	    (r = cfg_required_string(c, obj, "host", &s)))
		return r;
	if (url_host_normalize(s, host, sizeof(host)))
		return cfg_fail(c, "host", "must be a host name, an IPv4 or an IPv6 address");
	if ((r = cfg_dup_string(c, "host", host, &rt->host)))
		return r;

	if (!(v = json_object_get(obj, "port")))
		return cfg_fail(c, "port", "required");
	if ((r = cfg_get_int(c, "port", v, 1, 65535, &rt->port)))
		return r;

	if ((v = json_object_get(obj, "method"))) {
		if ((r = cfg_get_string(c, "method", v, &s)))
			return r;
		if (!hh_is_token(s, CFG_MAX_TOKEN))
			return cfg_fail(c, "method", "must be an HTTP method such as \"POST\"");
		if ((r = cfg_dup_string(c, "method", s, &rt->method)))
			return r;
		for (char *p = rt->method; *p; p++)
			*p = (char)toupper((unsigned char)*p);
	}

	if ((v = json_object_get(obj, "path")) && (r = cfg_parse_route_path(c, v, rt)))
		return r;

	if (!(v = json_object_get(obj, "action")))
		return cfg_fail(c, "action", "required");
	s = json_is_string(v) ? json_string_value(v) : "";
	if (strcmp(s, "delegate") == 0)
		rt->action = DP_ACTION_DELEGATE;
	else if (strcmp(s, "passthrough") == 0)
		rt->action = DP_ACTION_PASSTHROUGH;
	else if (strcmp(s, "deny") == 0)
		rt->action = DP_ACTION_DENY;
	else
		return cfg_fail(c, "action", "must be \"delegate\", \"passthrough\" or \"deny\"");
	if ((v = json_object_get(obj, "tls"))) {
		int opaque;

		if ((r = cfg_get_choice(c, "tls", v, "intercept", "opaque", &opaque)))
			return r;
		rt->tls_opaque = opaque == 1;
	}

	if ((v = json_object_get(obj, "addrs"))) {
		if (rt->action == DP_ACTION_DENY)
			return cfg_fail(c, "addrs", "a deny route has no destination to name");
		if ((r = cfg_parse_array(c, "addrs", v, CFG_MAX_ROUTE_ADDRS, sizeof(*rt->addrs),
					 (void **)&rt->addrs, &rt->n_addrs, cfg_parse_cidr_cb)))
			return r;
	}

	if (rt->action != DP_ACTION_DELEGATE) {
		static const char *const only_delegate[] = {"audience", "scope", "header", "mcp"};

		for (size_t k = 0; k < DP_ARRAY_SIZE(only_delegate); k++)
			if (json_object_get(obj, only_delegate[k]))
				return cfg_fail(c, only_delegate[k],
						"only allowed with \"action\": \"delegate\"");
		return 0;
	}

	if ((r = cfg_parse_route_delegate(c, obj, rt)))
		return r;
	return (v = json_object_get(obj, "mcp")) ? cfg_parse_route_mcp(c, v, rt) : 0;
}

static int cfg_parse_issuer_cb(struct cfg_ctx *c, json_t *v, void *item)
{
	return cfg_parse_issuer_entry(c, v, item);
}

static int cfg_parse_route_cb(struct cfg_ctx *c, json_t *v, void *item)
{
	return cfg_parse_route(c, v, item);
}

static int cfg_parse_cidr_cb(struct cfg_ctx *c, json_t *v, void *item)
{
	if (!json_is_string(v))
		return cfg_fail(c, NULL, "must be a string such as \"10.0.0.0/8\"");
	return cfg_parse_cidr(c, NULL, json_string_value(v), item);
}

static int cfg_set_defaults(struct dp_config *cfg)
{
	cfg->socket = strdup("/run/deputy/deputy.sock");
	cfg->state_dir = strdup("/var/lib/deputy");
	cfg->http_listen = strdup("127.0.0.1:8471");
	cfg->cgroup = strdup("deputy");
	cfg->token_ttl = 60;
	cfg->unrouted = DP_UNROUTED_DENY;
	cfg->enforce = true;
	cfg->kernel = true;
	cfg->token_binding = DP_BINDING_REQUEST;
	cfg->allow_resolvers = true;
	cfg->resolve_interval = 300;
	cfg->session_log_max = 64 << 20;
	cfg->retention_days = 90;
	cfg->proxy = true;
	cfg->proxy_listen = strdup("127.0.0.1:8472");
	if (!cfg->socket || !cfg->state_dir || !cfg->http_listen || !cfg->cgroup ||
	    !cfg->proxy_listen)
		return -ENOMEM;
	return 0;
}

/* The proxy's keys. */
static int cfg_parse_proxy(struct cfg_ctx *c, json_t *root, struct dp_config *cfg)
{
	struct sockaddr_storage ss;
	const char *s = NULL;
	socklen_t sl;
	json_t *v;
	int r, choice, first = 0;

	if ((v = json_object_get(root, "proxy")) &&
	    !cfg_keep(&first, cfg_get_choice(c, "proxy", v, "on", "off", &choice)))
		cfg->proxy = choice == 0;
	if ((v = json_object_get(root, "proxy_listen"))) {
		if ((r = cfg_get_string(c, "proxy_listen", v, &s)))
			;
		else if (config_parse_listen(s, false, &ss, &sl) != 0 || ss.ss_family != AF_INET)
			r = cfg_fail(c, "proxy_listen",
				     "must be a loopback IPv4 \"ADDRESS:PORT\" such as "
				     "\"127.0.0.1:8472\"");
		else
			r = cfg_dup_string(c, "proxy_listen", s, &cfg->proxy_listen);
		cfg_keep(&first, r);
	}
	return first;
}

/* One "tls" per destination: the kernel redirects by address and port, so routes naming
 * the same host and port cannot want different things. */
static int cfg_check_routes_tls(struct cfg_ctx *c, const struct dp_config *cfg)
{
	for (size_t i = 1; i < cfg->n_routes; i++)
		for (size_t j = 0; j < i; j++) {
			const struct dp_route *a = &cfg->routes[i], *b = &cfg->routes[j];
			char key[64];

			if (a->port != b->port || strcmp(a->host, b->host) != 0 ||
			    a->tls_opaque == b->tls_opaque)
				continue;
			snprintf(key, sizeof(key), "routes[%zu].tls", i);
			return cfg_fail(c, key, "\"%s\" disagrees with routes[%zu] for %s port %d",
					a->tls_opaque ? "opaque" : "intercept", j, a->host,
					a->port);
		}
	return 0;
}

/* deputyd's JWKS endpoint: a loopback address, or off. */
static int cfg_parse_http_listen(struct cfg_ctx *c, json_t *v, struct dp_config *cfg)
{
	struct sockaddr_storage ss;
	const char *s = NULL;
	socklen_t sl;
	int r;

	if ((r = cfg_get_string(c, "http_listen", v, &s)))
		return r;
	if (s[0] == '\0' || strcmp(s, "off") == 0) {
		free(cfg->http_listen);
		cfg->http_listen = NULL;
	} else {
		r = config_parse_listen(s, false, &ss, &sl);
		if (r == -EADDRNOTAVAIL)
			return cfg_fail(c, "http_listen",
					"must be a loopback address (127.0.0.0/8 or [::1])");
		if (r)
			return cfg_fail(c, "http_listen",
					"must be \"ADDRESS:PORT\" (\"127.0.0.1:8471\", "
					"\"[::1]:8471\") or \"off\"");
		if ((r = cfg_dup_string(c, "http_listen", s, &cfg->http_listen)))
			return r;
	}
	return 0;
}

/* The optional settings that choose a mode or a bound. */
static int cfg_parse_switches(struct cfg_ctx *c, json_t *root, struct dp_config *cfg)
{
	const char *s = NULL;
	int first = 0, choice;
	json_t *v;

	if ((v = json_object_get(root, "unrouted")) &&
	    !cfg_keep(&first, cfg_get_choice(c, "unrouted", v, "deny", "monitor", &choice)))
		cfg->unrouted = choice ? DP_UNROUTED_MONITOR : DP_UNROUTED_DENY;
	if ((v = json_object_get(root, "enforce")))
		cfg_keep(&first, cfg_get_bool(c, "enforce", v, &cfg->enforce));
	if ((v = json_object_get(root, "kernel")) &&
	    !cfg_keep(&first, cfg_get_choice(c, "kernel", v, "on", "off", &choice)))
		cfg->kernel = choice == 0;
	if ((v = json_object_get(root, "token_binding")) &&
	    !cfg_keep(&first, cfg_get_choice(c, "token_binding", v, "request", "session", &choice)))
		cfg->token_binding = choice ? DP_BINDING_SESSION : DP_BINDING_REQUEST;
	if ((v = json_object_get(root, "on_grant_expiry")) &&
	    !cfg_keep(&first, cfg_get_choice(c, "on_grant_expiry", v, "deny", "end", &choice)))
		cfg->on_grant_expiry = choice ? DP_EXPIRY_END : DP_EXPIRY_DENY;
	if ((v = json_object_get(root, "allow_resolvers")))
		cfg_keep(&first, cfg_get_bool(c, "allow_resolvers", v, &cfg->allow_resolvers));
	if ((v = json_object_get(root, "resolve_interval")))
		cfg_keep(&first,
			 cfg_get_int(c, "resolve_interval", v, 10, 86400, &cfg->resolve_interval));
	/* At most what a restarted deputyd reads back to resume a session (audit_log_reopen);
	 * at least room for a few records of the largest size. */
	if ((v = json_object_get(root, "session_log_max")))
		cfg_keep(&first, cfg_get_int(c, "session_log_max", v, 1 << 20, 256 << 20,
					     &cfg->session_log_max));
	/* 0 keeps logs forever; the upper bound only catches a unit mistake (seconds?) */
	if ((v = json_object_get(root, "retention_days")))
		cfg_keep(&first,
			 cfg_get_int(c, "retention_days", v, 0, 36500, &cfg->retention_days));
	if ((v = json_object_get(root, "cgroup"))) {
		if (cfg_keep(&first, cfg_get_string(c, "cgroup", v, &s)))
			;
		else if (!cfg_cgroup_path_ok(s))
			cfg_keep(&first,
				 cfg_fail(c, "cgroup",
					  "must be a relative cgroup path of [A-Za-z0-9._-] "
					  "components (no \"..\", no leading '/')"));
		else
			cfg_keep(&first, cfg_dup_string(c, "cgroup", s, &cfg->cgroup));
	}
	if ((v = json_object_get(root, "upstream_ca_file")))
		cfg_keep(&first, cfg_get_abs_path(c, "upstream_ca_file", v, CFG_MAX_PATH,
						  &cfg->upstream_ca_file));
	cfg_keep(&first, cfg_parse_proxy(c, root, cfg));
	return first;
}

/* "audit_export": {"syslog": PATH}: the object's presence turns the export on, so
 * {"syslog": "/dev/log"} and {} say the same. */
static int cfg_parse_audit_export(struct cfg_ctx *c, json_t *v, struct dp_config *cfg)
{
	static const char *const keys[] = {"syslog"};
	json_t *path;
	int r;

	if (!json_is_object(v))
		return cfg_fail(c, "audit_export",
				"must be an object such as {\"syslog\": \"/dev/log\"}");
	snprintf(c->where, sizeof(c->where), "audit_export");
	if ((r = cfg_check_keys(c, v, keys, DP_ARRAY_SIZE(keys))))
		return r;
	if ((path = json_object_get(v, "syslog")))
		r = cfg_get_abs_path(c, "syslog", path, CFG_SUN_PATH_MAX, &cfg->audit_syslog);
	else if (!(cfg->audit_syslog = strdup("/dev/log")))
		r = -ENOMEM;
	c->where[0] = '\0';
	return r;
}

/* issuer, socket, state_dir, signing_key, token_ttl, http_listen: where deputyd is. */
static int cfg_parse_place(struct cfg_ctx *c, json_t *root, struct dp_config *cfg)
{
	struct url_parts parts;
	const char *s = NULL;
	int first = 0, r;
	json_t *v;

	if (!(v = json_object_get(root, "issuer")))
		cfg_keep(&first, cfg_fail(c, "issuer", "required"));
	else if (!(r = cfg_get_string(c, "issuer", v, &s)) &&
		 !(r = cfg_check_uri(c, "issuer", s, &parts)))
		r = cfg_dup_string(c, "issuer", s, &cfg->issuer);
	if (v)
		cfg_keep(&first, r);
	if ((v = json_object_get(root, "socket")))
		cfg_keep(&first, cfg_get_abs_path(c, "socket", v, CFG_SUN_PATH_MAX, &cfg->socket));
	if ((v = json_object_get(root, "state_dir")))
		cfg_keep(&first,
			 cfg_get_abs_path(c, "state_dir", v, CFG_MAX_PATH - 64, &cfg->state_dir));
	if ((v = json_object_get(root, "signing_key"))) {
		cfg_keep(&first,
			 cfg_get_abs_path(c, "signing_key", v, CFG_MAX_PATH, &cfg->signing_key));
	} else {
		size_t n = strlen(cfg->state_dir) + sizeof("/signing-key.pem");

		cfg->signing_key = malloc(n);
		if (!cfg->signing_key)
			return -ENOMEM;
		/* "/" as state_dir must not give "//signing-key.pem" */
		snprintf(cfg->signing_key, n, "%s%ssigning-key.pem", cfg->state_dir,
			 cfg->state_dir[strlen(cfg->state_dir) - 1] == '/' ? "" : "/");
	}
	if ((v = json_object_get(root, "token_ttl")))
		cfg_keep(&first, cfg_get_int(c, "token_ttl", v, 5, 86400, &cfg->token_ttl));
	if ((v = json_object_get(root, "http_listen")))
		cfg_keep(&first, cfg_parse_http_listen(c, v, cfg));
	return first;
}

static int cfg_parse_issuers(struct cfg_ctx *c, json_t *root, struct dp_config *cfg)
{
	json_t *v;
	int r;

	if (!(v = json_object_get(root, "trusted_issuers")))
		return cfg_fail(c, "trusted_issuers", "required");
	if ((r = cfg_parse_array(c, "trusted_issuers", v, CFG_MAX_ISSUERS, sizeof(*cfg->issuers),
				 (void **)&cfg->issuers, &cfg->n_issuers, cfg_parse_issuer_cb)))
		return r;
	if (cfg->n_issuers == 0)
		return cfg_fail(c, "trusted_issuers", "must name at least one issuer");
	for (size_t i = 1; i < cfg->n_issuers; i++)
		for (size_t j = 0; j < i; j++)
			if (strcmp(cfg->issuers[i].issuer, cfg->issuers[j].issuer) == 0) {
				char key[64];

				snprintf(key, sizeof(key), "trusted_issuers[%zu].issuer", i);
				return cfg_fail(c, key, "duplicate of trusted_issuers[%zu]", j);
			}
	return 0;
}

/* Each top-level key is checked even after an error in another, so that every error of the
 * file is reported at once; within one route or issuer, the first error is. */
static int cfg_parse_top(struct cfg_ctx *c, json_t *root, struct dp_config *cfg)
{
	static const char *const keys[] = {
	    "issuer",	     "socket",		"state_dir",	    "signing_key",
	    "token_ttl",     "http_listen",	"trusted_issuers",  "routes",
	    "allow_cidrs",   "unrouted",	"enforce",	    "kernel",
	    "token_binding", "allow_resolvers", "resolve_interval", "cgroup",
	    "proxy",	     "proxy_listen",	"upstream_ca_file", "session_log_max",
	    "audit_export",  "retention_days",	"allow_unix",	    "on_grant_expiry",
	};
	int first = 0, routes_ok;
	json_t *v;

	if (!json_is_object(root))
		return cfg_fail(c, NULL, "the config must be a JSON object");
	cfg_keep(&first, cfg_check_keys(c, root, keys, DP_ARRAY_SIZE(keys)));
	cfg_keep(&first, cfg_parse_place(c, root, cfg));
	cfg_keep(&first, cfg_parse_issuers(c, root, cfg));
	if (!(v = json_object_get(root, "routes")))
		routes_ok = cfg_fail(c, "routes", "required");
	else
		routes_ok =
		    cfg_parse_array(c, "routes", v, CFG_MAX_ROUTES, sizeof(*cfg->routes),
				    (void **)&cfg->routes, &cfg->n_routes, cfg_parse_route_cb);
	cfg_keep(&first, routes_ok);
	if ((v = json_object_get(root, "allow_cidrs")))
		cfg_keep(&first,
			 cfg_parse_array(c, "allow_cidrs", v, CFG_MAX_CIDRS,
					 sizeof(*cfg->allow_cidrs), (void **)&cfg->allow_cidrs,
					 &cfg->n_allow_cidrs, cfg_parse_cidr_cb));
	cfg_keep(&first, cfg_parse_allow_unix(c, json_object_get(root, "allow_unix"),
					      &cfg->allow_unix, &cfg->n_allow_unix));
	if ((v = json_object_get(root, "audit_export")))
		cfg_keep(&first, cfg_parse_audit_export(c, v, cfg));
	cfg_keep(&first, cfg_parse_switches(c, root, cfg));
	/* across routes: only when each of them parsed */
	if (routes_ok == 0)
		cfg_keep(&first, cfg_check_routes_tls(c, cfg));
	return first;
}

static int config_parse_report(const char *text, size_t len, struct dp_config **out,
			       struct dp_err *err, struct config_report *report)
{
	struct cfg_ctx c = {.err = err, .report = report};
	struct dp_config *cfg;
	json_error_t jerr;
	json_t *root;
	size_t i;
	int r;

	*out = NULL;
	if (err)
		err->msg[0] = '\0'; /* cfg_fail keeps the first error it is given */
	for (i = 0; i < len; i++)
		if (!isspace((unsigned char)text[i]))
			break;
	if (i == len) {
		dp_err_set(err, "the config is empty");
		return -EINVAL;
	}
	if (len > CFG_MAX_FILE) {
		dp_err_set(err, "the config is larger than %d bytes", CFG_MAX_FILE);
		return -EFBIG;
	}
	/* Duplicate keys are refused: two parsers (or two readers) must never disagree on
	 * which of two "enforce" keys counts. */
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		char near[sizeof(jerr.text) * 4];

		/* jansson quotes the input near the error raw */
		dp_err_set(err, "invalid JSON at %d:%d: %s", jerr.line, jerr.column,
			   dp_escape(jerr.text, strlen(jerr.text), near, sizeof(near)));
		return -EINVAL;
	}
	cfg = calloc(1, sizeof(*cfg));
	if (!cfg || cfg_set_defaults(cfg)) {
		config_free(cfg);
		json_decref(root);
		dp_err_set(err, "out of memory");
		return -ENOMEM;
	}
	r = cfg_parse_top(&c, root, cfg);
	json_decref(root);
	if (r) {
		if (r == -ENOMEM && err && !err->msg[0])
			dp_err_set(err, "out of memory");
		config_free(cfg);
		return r;
	}
	*out = cfg;
	return 0;
}

int config_parse(const char *text, size_t len, struct dp_config **out, struct dp_err *err)
{
	return config_parse_report(text, len, out, err, NULL);
}

int config_load(const char *path, struct dp_config **out, struct dp_err *err)
{
	return config_load_report(path, out, err, NULL);
}

int config_load_report(const char *path, struct dp_config **out, struct dp_err *err,
		       struct config_report *report)
{
	struct dp_err perr = {{0}};
	char *text;
	size_t len;
	int r;

	*out = NULL;
	r = dp_read_file(path, CFG_MAX_FILE, &text, &len);
	if (r == -EFBIG) {
		dp_err_set(err, "%s: larger than %d bytes", path, CFG_MAX_FILE);
		return r;
	}
	if (r) {
		dp_err_set(err, "%s: %s", path, strerror(-r));
		return r;
	}
	r = config_parse_report(text, len, out, &perr, report);
	free(text);
	if (r) {
		dp_err_set(err, "%s: %s", path, perr.msg);
		return r;
	}
	(*out)->path = strdup(path);
	if (!(*out)->path) {
		config_free(*out);
		*out = NULL;
		dp_err_set(err, "%s: out of memory", path);
		return -ENOMEM;
	}
	return 0;
}

/* Field by field, like trust_free and session_free: the structs differ, only the shape of
 * freeing them is common. */
void config_free(struct dp_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n_routes; i++) {
		struct dp_route *rt = &cfg->routes[i];

		free(rt->host);
		free(rt->method);
		free(rt->path);
		free(rt->audience);
		free(rt->scope);
		free(rt->header);
		for (size_t k = 0; k < rt->n_addrs; k++)
			free(rt->addrs[k].text);
		free(rt->addrs);
		config_mcp_free(rt->mcp);
	}
	free(cfg->routes);
	for (size_t i = 0; i < cfg->n_issuers; i++) {
		free(cfg->issuers[i].issuer);
		free(cfg->issuers[i].jwks_file);
		free(cfg->issuers[i].jwks_uri);
		free(cfg->issuers[i].ca_file);
		for (size_t k = 0; k < DP_CLAIM_N; k++)
			free(cfg->issuers[i].claims[k]);
	}
	free(cfg->issuers);
	for (size_t i = 0; i < cfg->n_allow_cidrs; i++)
		free(cfg->allow_cidrs[i].text);
	free(cfg->allow_cidrs);
	for (size_t i = 0; i < cfg->n_allow_unix; i++)
		free(cfg->allow_unix[i]);
	free(cfg->allow_unix);
	free(cfg->path);
	free(cfg->issuer);
	free(cfg->socket);
	free(cfg->state_dir);
	free(cfg->signing_key);
	free(cfg->upstream_ca_file);
	free(cfg->http_listen);
	free(cfg->cgroup);
	free(cfg->audit_syslog);
	free(cfg->proxy_listen);
	free(cfg);
}

const char *config_action_name(enum dp_action a)
{
	switch (a) {
	case DP_ACTION_DELEGATE:
		return "delegate";
	case DP_ACTION_PASSTHROUGH:
		return "passthrough";
	case DP_ACTION_DENY:
		return "deny";
	}
	return "unknown";
}
