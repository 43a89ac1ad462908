/* SPDX-License-Identifier: MIT */
/*
 * config: deputyd's JSON configuration (design: Config); route matching is in route.h. Every key is
 * validated; an unknown key, a wrong type or an impossible value is an error naming the key, e.g.
 *   "routes[2].port: must be an integer from 1 to 65535".
 */
#ifndef DEPUTY_CONFIG_H
#define DEPUTY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "util.h"

#define DP_DEFAULT_CONFIG "/etc/deputy/deputy.json"

enum dp_action { DP_ACTION_DELEGATE, DP_ACTION_PASSTHROUGH, DP_ACTION_DENY };
enum dp_unrouted { DP_UNROUTED_DENY, DP_UNROUTED_MONITOR };
enum dp_expiry { DP_EXPIRY_DENY, DP_EXPIRY_END };
enum dp_binding { DP_BINDING_REQUEST, DP_BINDING_SESSION };

struct dp_cidr;

/* An MCP route's names (config_mcp.c): scope NULL for "deny". */
struct dp_mcp_rule {
	char *name; /* exact, or "*" for the rest */
	char *scope;
};
struct dp_mcp_map {
	struct dp_mcp_rule *rules;
	size_t n;
	bool present; /* absent: these calls use the route's own scope */
};
struct dp_mcp {
	struct dp_mcp_map tools, resources, prompts;
	bool filter_list; /* tools/list responses cut to the tools the grant allows */
};

struct dp_route {
	char *host;   /* exact host name or address, lower-case */
	int port;     /* 1..65535 */
	char *method; /* upper-case; NULL = any */
	char *path;   /* glob (fnmatch, '*' crosses '/'); NULL = any */
	enum dp_action action;
	char *audience;	 /* delegate only */
	char *scope;	 /* delegate only: exactly one scope token */
	char *header;	 /* delegate only; default "Authorization" */
	bool tls_opaque; /* "tls": "opaque": connections left untouched, logged unmediated */
	/* Where the host is besides its resolved addresses: tokens go only there (bind.c). */
	struct dp_cidr *addrs;
	size_t n_addrs;
	struct dp_mcp *mcp; /* delegate only; NULL: not an MCP route */
};

/* The claims deputy reads from a grant that an issuer may name differently ("claims"). */
enum dp_claim {
	DP_CLAIM_SUB,
	DP_CLAIM_JTI,
	DP_CLAIM_SCOPE,
	DP_CLAIM_RESOURCE,
	DP_CLAIM_AGENT,
	DP_CLAIM_N
};

struct dp_trusted_issuer {
	char *issuer;
	char *jwks_file;	  /* exactly one of jwks_file, jwks_uri, discovery */
	char *jwks_uri;		  /* https:// */
	bool discovery;		  /* jwks_uri from the issuer's OIDC / RFC 8414 metadata */
	char *ca_file;		  /* PEM bundle for this issuer's HTTPS; NULL: the system's */
	char *claims[DP_CLAIM_N]; /* the issuer's name for each; NULL: deputy's own */
};

/* deputy's name of a mappable claim ("sub", "jti", "scope", "resource", "agent"). */
const char *config_claim_name(enum dp_claim c);

struct dp_cidr {
	int family; /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	int prefix;
	char *text; /* as written */
};

struct dp_config {
	char *path; /* where it was loaded from, for SIGHUP */
	char *issuer;
	char *socket;	   /* default /run/deputy/deputy.sock */
	char *state_dir;   /* default /var/lib/deputy */
	char *signing_key; /* default <state_dir>/signing-key.pem */
	int token_ttl;	   /* seconds, default 60, 5..86400 */
	char *http_listen; /* default 127.0.0.1:8471; NULL when disabled ("off" or "") */
	struct dp_trusted_issuer *issuers;
	size_t n_issuers;
	struct dp_route *routes;
	size_t n_routes;
	struct dp_cidr *allow_cidrs;
	size_t n_allow_cidrs;
	char **allow_unix; /* Unix socket paths ("@name": abstract) a session may reach */
	size_t n_allow_unix;
	enum dp_unrouted unrouted;     /* default deny */
	bool enforce;		       /* default true */
	bool kernel;		       /* "kernel": "on" (default) / "off" */
	enum dp_binding token_binding; /* default request */
	bool allow_resolvers;	       /* default true: nameservers of /etc/resolv.conf, port 53 */
	int resolve_interval;	       /* seconds between re-resolving route hosts, default 300 */
	int session_log_max;	       /* bytes of one session's log, default 64 MiB */
	int retention_days; /* closed session logs older than this are removed; 0: never */
	char *cgroup; /* deputy's parent cgroup, relative to the cgroup2 root; default "deputy" */
	bool proxy;   /* "proxy": "on" (default) / "off" */
	char *proxy_listen;	/* loopback IPv4 ADDR:PORT, default 127.0.0.1:8472 */
	char *upstream_ca_file; /* PEM the proxy verifies upstreams with; NULL: system store */
	char *audit_syslog; /* audit_export.syslog: where records go as RFC 5424; NULL: nowhere */
	enum dp_expiry on_grant_expiry; /* default deny: requests refused, the session goes on */
};

/* Every error of one config, one line each (without the file name), in file order: an
 * operator fixes them in one go. The first is also what err says. */
#define CONFIG_MAX_REPORT 32
struct config_report {
	size_t n, more; /* lines kept; errors beyond CONFIG_MAX_REPORT */
	char line[CONFIG_MAX_REPORT][384];
};

/* Parse and validate. 0, or -EINVAL/-errno with err naming the key (or the file problem);
 * with report, every error found goes there too. */
int config_load(const char *path, struct dp_config **out, struct dp_err *err) DP_WUR;
int config_load_report(const char *path, struct dp_config **out, struct dp_err *err,
		       struct config_report *report) DP_WUR;
int config_parse(const char *text, size_t len, struct dp_config **out, struct dp_err *err) DP_WUR;
void config_free(struct dp_config *cfg);

const char *config_action_name(enum dp_action a);

/* The rule for name in m: its exact entry, else "*", else NULL (refused). */
const struct dp_mcp_rule *config_mcp_rule(const struct dp_mcp_map *m, const char *name);
void config_mcp_free(struct dp_mcp *m);

/* "127.0.0.1:8471" or "[::1]:8471" into a socket address. Only loopback addresses
 * (url_addr_is_loopback): -EADDRNOTAVAIL for others, -EINVAL for bad syntax. Port 0 (any)
 * only with allow_port0, for tests. */
int config_parse_listen(const char *text, bool allow_port0, struct sockaddr_storage *ss,
			socklen_t *sslen) DP_WUR;

#endif
