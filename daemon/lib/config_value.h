/* SPDX-License-Identifier: MIT */
/* config_value: value checkers private to the config parser (config.c, config_value.c). */
#ifndef DEPUTY_CONFIG_VALUE_H
#define DEPUTY_CONFIG_VALUE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "url.h"
#include "util.h"

#define CFG_MAX_SCOPE 256
#define CFG_MAX_CGROUP 255
#define CFG_MAX_PATH 4096

/* A key path for error messages, built up as the parser descends ("routes[2].port"). */
struct config_report;
struct cfg_ctx {
	struct dp_err *err;
	char where[128];
	struct config_report *report; /* every error, when the caller wants them all */
};

/* Sets err to "<where>.<key>: <why>" (unless it holds an earlier error: the first stays),
 * adds it to the report, and returns -EINVAL. */
int cfg_fail(struct cfg_ctx *c, const char *key, const char *fmt, ...) DP_PRINTF(3, 4);

/* RFC 6749 §3.3 scope-token of at most CFG_MAX_SCOPE bytes. */
bool cfg_is_scope_token(const char *s);

/* Each takes the JSON value v of key; 0 or -EINVAL/-ENOMEM with err set. */
int cfg_get_string(struct cfg_ctx *c, const char *key, json_t *v, const char **out);
int cfg_dup_string(struct cfg_ctx *c, const char *key, const char *s, char **out);
/* These three take v == NULL (an optional key not given) as nothing to do: 0, *out untouched,
 * so that optional settings read as one call each. */
int cfg_get_int(struct cfg_ctx *c, const char *key, json_t *v, int lo, int hi, int *out);
int cfg_get_bool(struct cfg_ctx *c, const char *key, json_t *v, bool *out);
/* One of two words; *out is 0 for the first, 1 for the second. */
int cfg_get_choice(struct cfg_ctx *c, const char *key, json_t *v, const char *a, const char *b,
		   int *out);
int cfg_get_abs_path(struct cfg_ctx *c, const char *key, json_t *v, size_t max, char **out);
/* An http(s) URI as issuers and audiences are written (url_parse_http, lower-case scheme). */
int cfg_check_uri(struct cfg_ctx *c, const char *key, const char *s, struct url_parts *parts);
/* "10.0.0.0/8", "fd00::/8" or a bare address into out (its text copied); host bits beyond
 * the prefix are an error. */
struct dp_cidr;
int cfg_parse_cidr(struct cfg_ctx *c, const char *key, const char *s, struct dp_cidr *out);
/* A relative cgroup path of [A-Za-z0-9._-] components, none "." or "..". */
bool cfg_cgroup_path_ok(const char *s);
/* Why fnmatch(3) would not read the glob s as written, or NULL. */
const char *cfg_glob_problem(const char *s);
/* Refuses any key of obj not in allowed: each one reported, with the allowed key it most
 * likely meant ("did you mean"). */
int cfg_check_keys(struct cfg_ctx *c, json_t *obj, const char *const *allowed, size_t n);
/* "allow_unix": absolute socket paths or "@name" for abstract ones, at most 107 bytes of
 * name each (sun_path); v NULL gives the default, nscd's socket. */
int cfg_parse_allow_unix(struct cfg_ctx *c, json_t *v, char ***out, size_t *n_out);
/* An object with only the allowed keys: what every object of the config is checked for first. */
int cfg_check_object(struct cfg_ctx *c, json_t *obj, const char *const *allowed, size_t n);
/* obj's string key, which must be there. */
int cfg_required_string(struct cfg_ctx *c, json_t *obj, const char *key, const char **out);
/* obj's "issuer": required, an http(s) URI (the top level's and a trusted issuer's). */
int cfg_get_issuer(struct cfg_ctx *c, json_t *obj, char **out);
/* An array of at most max objects of elsize bytes each, *out calloc'd (also on failure, with
 * *n_out set, so that the caller frees what was filled), each parsed by parse_one with its
 * index in the key path. */
int cfg_parse_array(struct cfg_ctx *c, const char *key, json_t *arr, size_t max, size_t elsize,
		    void **out, size_t *n_out,
		    int (*parse_one)(struct cfg_ctx *, json_t *, void *));

struct dp_route;
/* A route's "mcp" object (config_mcp.c), after its action and method are known. */
int cfg_parse_route_mcp(struct cfg_ctx *c, json_t *obj, struct dp_route *rt);

struct dp_trusted_issuer;
/* One object of "trusted_issuers" (config_issuer.c). */
int cfg_parse_issuer_entry(struct cfg_ctx *c, json_t *obj, struct dp_trusted_issuer *ti);

#endif
