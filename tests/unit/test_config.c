// SPDX-License-Identifier: MIT
/* Unit tests for daemon/lib/config.c: parsing, defaults, every kind of refusal (route
 * matching: test_route.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <unistd.h>

#include "config.h"
#include "jwks_fetch.h"
#include "unit.h"

/* The example of the design's "Config" section, verbatim. */
static const char example[] =
    "{\n"
    "  \"issuer\": \"https://deputy.example.internal\",\n"
    "  \"socket\": \"/run/deputy/deputy.sock\",\n"
    "  \"state_dir\": \"/var/lib/deputy\",\n"
    "  \"signing_key\": \"/var/lib/deputy/signing-key.pem\",\n"
    "  \"token_ttl\": 60,\n"
    "  \"http_listen\": \"127.0.0.1:8471\",\n"
    "  \"trusted_issuers\": [\n"
    "    {\"issuer\": \"https://idp.example.internal\", \"jwks_file\": "
    "\"/etc/deputy/idp-jwks.json\"},\n"
    "    {\"issuer\": \"https://login.example.com\", \"jwks_uri\": "
    "\"https://login.example.com/jwks\"}\n"
    "  ],\n"
    "  \"routes\": [\n"
    "    {\"host\": \"mail.internal\", \"port\": 443, \"method\": \"POST\", \"path\": "
    "\"/api/send*\",\n"
    "     \"action\": \"delegate\", \"audience\": \"https://mail.internal\", \"scope\": "
    "\"email:send\"},\n"
    "    {\"host\": \"api.llm-provider.example\", \"port\": 443, \"action\": \"passthrough\"}\n"
    "  ],\n"
    "  \"allow_cidrs\": [\"127.0.0.53/32\"],\n"
    "  \"unrouted\": \"deny\",\n"
    "  \"enforce\": true,\n"
    "  \"kernel\": \"on\",\n"
    "  \"token_binding\": \"request\"\n"
    "}\n";

#define MIN_ISSUERS                                                                                \
	"\"trusted_issuers\": [{\"issuer\": \"https://idp.test\", \"jwks_file\": \"/j.json\"}]"
#define MIN_HEAD "{\"issuer\": \"https://deputy.test\", " MIN_ISSUERS
/* A minimal config with extra top-level members appended, and routes given. */
#define CFG(extra, routes) MIN_HEAD ", \"routes\": [" routes "]" extra "}"
#define DELEGATE                                                                                   \
	"{\"host\": \"a.test\", \"port\": 443, \"action\": \"delegate\", "                         \
	"\"audience\": \"https://a.test\", \"scope\": \"s:x\""

static struct dp_config *parse_ok(const char *text, struct dp_err *err)
{
	struct dp_config *cfg = NULL;

	memset(err, 0, sizeof(*err));
	if (config_parse(text, strlen(text), &cfg, err) != 0)
		return NULL;
	return cfg;
}

/* Parses text expecting a refusal whose message contains want; NULL when it does, else why not. */
static const char *refused(const char *text, const char *want)
{
	static char why[700];
	struct dp_config *cfg = NULL;
	struct dp_err err = {{0}};
	int r = config_parse(text, strlen(text), &cfg, &err);

	if (r == 0) {
		config_free(cfg);
		snprintf(why, sizeof(why), "accepted: %s", text);
		return why;
	}
	if (cfg) {
		snprintf(why, sizeof(why), "error %d but cfg set", r);
		return why;
	}
	if (!strstr(err.msg, want)) {
		snprintf(why, sizeof(why), "message \"%s\" lacks \"%s\"", err.msg, want);
		return why;
	}
	if (strchr(err.msg, '\n')) {
		snprintf(why, sizeof(why), "message has a newline: \"%s\"", err.msg);
		return why;
	}
	return NULL;
}

#define check_refused(text, want)                                                                  \
	do {                                                                                       \
		const char *why_ = refused(text, want);                                            \
		if (why_)                                                                          \
			fail("%s", why_);                                                          \
	} while (0)

static void test_example(void)
{
	struct dp_err err;
	struct dp_config *cfg = parse_ok(example, &err);
	const struct dp_route *r;

	if (!cfg)
		fail("example refused: %s", err.msg);
	check_str(cfg->issuer, "https://deputy.example.internal");
	check_str(cfg->socket, "/run/deputy/deputy.sock");
	check_str(cfg->state_dir, "/var/lib/deputy");
	check_str(cfg->signing_key, "/var/lib/deputy/signing-key.pem");
	check(cfg->token_ttl == 60);
	check_str(cfg->http_listen, "127.0.0.1:8471");
	check(cfg->n_issuers == 2);
	check_str(cfg->issuers[0].issuer, "https://idp.example.internal");
	check_str(cfg->issuers[0].jwks_file, "/etc/deputy/idp-jwks.json");
	check(cfg->issuers[0].jwks_uri == NULL);
	check_str(cfg->issuers[1].issuer, "https://login.example.com");
	check_str(cfg->issuers[1].jwks_uri, "https://login.example.com/jwks");
	check(cfg->issuers[1].jwks_file == NULL);
	check(cfg->n_routes == 2);
	r = &cfg->routes[0];
	check_str(r->host, "mail.internal");
	check(r->port == 443);
	check_str(r->method, "POST");
	check_str(r->path, "/api/send*");
	check(r->action == DP_ACTION_DELEGATE);
	check_str(r->audience, "https://mail.internal");
	check_str(r->scope, "email:send");
	check_str(r->header, "Authorization");
	r = &cfg->routes[1];
	check_str(r->host, "api.llm-provider.example");
	check(r->port == 443 && r->action == DP_ACTION_PASSTHROUGH);
	check(!r->method && !r->path && !r->audience && !r->scope && !r->header);
	check(cfg->n_allow_cidrs == 1);
	check(cfg->allow_cidrs[0].family == AF_INET && cfg->allow_cidrs[0].prefix == 32);
	check(memcmp(cfg->allow_cidrs[0].addr, "\x7f\x00\x00\x35", 4) == 0);
	check_str(cfg->allow_cidrs[0].text, "127.0.0.53/32");
	check(cfg->unrouted == DP_UNROUTED_DENY);
	check(cfg->enforce && cfg->kernel);
	check(cfg->token_binding == DP_BINDING_REQUEST);
	check(cfg->path == NULL);
	config_free(cfg);
}

static void test_defaults(void)
{
	struct dp_err err;
	struct dp_config *cfg = parse_ok(CFG("", ""), &err);

	if (!cfg)
		fail("minimal config refused: %s", err.msg);
	check_str(cfg->socket, "/run/deputy/deputy.sock");
	check_str(cfg->state_dir, "/var/lib/deputy");
	check_str(cfg->signing_key, "/var/lib/deputy/signing-key.pem");
	check(cfg->token_ttl == 60);
	check_str(cfg->http_listen, "127.0.0.1:8471");
	check(cfg->n_routes == 0 && cfg->n_allow_cidrs == 0 && cfg->n_issuers == 1);
	check(cfg->unrouted == DP_UNROUTED_DENY);
	check(cfg->enforce == true);
	check(cfg->kernel == true);
	check(cfg->token_binding == DP_BINDING_REQUEST);
	check(cfg->allow_resolvers == true);
	check(cfg->resolve_interval == 300);
	check(cfg->session_log_max == 64 << 20);
	check_str(cfg->cgroup, "deputy");
	config_free(cfg);
}

static void test_non_defaults(void)
{
	struct dp_err err;
	struct dp_config *cfg =
	    parse_ok(CFG(", \"state_dir\": \"/srv/dp\", \"http_listen\": \"[::1]:9000\", "
			 "\"unrouted\": \"monitor\","
			 " \"enforce\": false, \"kernel\": \"off\", \"token_binding\": \"session\","
			 " \"allow_resolvers\": false, \"resolve_interval\": 10, \"cgroup\": "
			 "\"test/dp-1.x_y\", \"session_log_max\": 1048576,"
			 " \"token_ttl\": 86400, \"allow_cidrs\": [\"10.0.0.0/8\", \"fd00::/8\", "
			 "\"::1\", \"0.0.0.0/0\"]",
			 DELEGATE ", \"header\": \"X-Deputy-Token\", \"method\": \"post\"}"),
		     &err);

	if (!cfg)
		fail("refused: %s", err.msg);
	check_str(cfg->signing_key, "/srv/dp/signing-key.pem");
	check_str(cfg->http_listen, "[::1]:9000");
	check(cfg->unrouted == DP_UNROUTED_MONITOR);
	check(!cfg->enforce && !cfg->kernel && !cfg->allow_resolvers);
	check(cfg->token_binding == DP_BINDING_SESSION);
	check(cfg->resolve_interval == 10 && cfg->token_ttl == 86400);
	check(cfg->session_log_max == 1 << 20);
	check_str(cfg->cgroup, "test/dp-1.x_y");
	check(cfg->n_allow_cidrs == 4);
	check(cfg->allow_cidrs[1].family == AF_INET6 && cfg->allow_cidrs[1].prefix == 8);
	check(cfg->allow_cidrs[1].addr[0] == 0xfd);
	check(cfg->allow_cidrs[2].family == AF_INET6 && cfg->allow_cidrs[2].prefix == 128);
	check(cfg->allow_cidrs[3].prefix == 0);
	check_str(cfg->routes[0].header, "X-Deputy-Token");
	check_str(cfg->routes[0].method, "POST");
	config_free(cfg);

	cfg = parse_ok(CFG(", \"http_listen\": \"off\"", ""), &err);
	if (!cfg)
		fail("http_listen off refused: %s", err.msg);
	check(cfg->http_listen == NULL);
	config_free(cfg);
}

static void test_hosts_normalised(void)
{
	struct dp_err err;
	struct dp_config *cfg =
	    parse_ok(CFG("", "{\"host\": \"Mail.Internal\", \"port\": 1, \"action\": \"deny\"},"
			     "{\"host\": \"[2001:DB8:0:0::1]\", \"port\": 2, \"action\": \"deny\"},"
			     "{\"host\": \"::1\", \"port\": 3, \"action\": \"deny\"},"
			     "{\"host\": \"192.0.2.7\", \"port\": 65535, \"action\": \"deny\"},"
			     "{\"host\": \"_svc.x-y.test\", \"port\": 5, \"action\": \"deny\"}"),
		     &err);

	if (!cfg)
		fail("refused: %s", err.msg);
	check_str(cfg->routes[0].host, "mail.internal");
	check_str(cfg->routes[1].host, "2001:db8::1");
	check_str(cfg->routes[2].host, "::1");
	check_str(cfg->routes[3].host, "192.0.2.7");
	check_str(cfg->routes[4].host, "_svc.x-y.test");
	check(cfg->routes[3].port == 65535);
	config_free(cfg);
}

static void test_issuer_discovery_ca_claims(void)
{
	struct dp_err err;
	struct dp_config *cfg =
	    parse_ok("{\"issuer\": \"https://x\", \"routes\": [], \"trusted_issuers\": ["
		     "{\"issuer\": \"https://login.example/t1\", \"discovery\": true, "
		     "\"ca_file\": \"/etc/ca.pem\", \"claims\": {\"agent\": \"azp\", "
		     "\"scope\": \"scp\"}},"
		     "{\"issuer\": \"http://127.0.0.1:9\", \"discovery\": true}]}",
		     &err);

	if (!cfg)
		fail("refused: %s", err.msg);
	check(cfg->issuers[0].discovery && !cfg->issuers[0].jwks_uri);
	check_str(cfg->issuers[0].ca_file, "/etc/ca.pem");
	check_str(cfg->issuers[0].claims[DP_CLAIM_AGENT], "azp");
	check_str(cfg->issuers[0].claims[DP_CLAIM_SCOPE], "scp");
	check(!cfg->issuers[0].claims[DP_CLAIM_SUB] && !cfg->issuers[1].ca_file);
	check_str(config_claim_name(DP_CLAIM_RESOURCE), "resource");
	config_free(cfg);
}

static void test_http_loopback_jwks(void)
{
	struct dp_err err;
	struct dp_config *cfg =
	    parse_ok("{\"issuer\": \"http://localhost:9\", \"routes\": [], \"trusted_issuers\": ["
		     "{\"issuer\": \"https://a\", \"jwks_uri\": \"http://127.0.0.1:8000/jwks\"},"
		     "{\"issuer\": \"https://b\", \"jwks_uri\": \"http://[::1]/jwks\"},"
		     "{\"issuer\": \"https://c\", \"jwks_uri\": \"http://LOCALHOST:1/j\"}]}",
		     &err);

	if (!cfg)
		fail("refused: %s", err.msg);
	check(cfg->n_issuers == 3);
	config_free(cfg);
	check_refused("{\"issuer\": \"https://d\", \"routes\": [], \"trusted_issuers\": ["
		      "{\"issuer\": \"https://a\", \"jwks_uri\": \"http://idp.example/jwks\"}]}",
		      "trusted_issuers[0].jwks_uri: must be https://");
	/* key fetching applies the same rule to the same URLs */
	check(jwks_url_allowed("http://127.0.0.1:8000/jwks"));
	check(jwks_url_allowed("http://[::1]/jwks"));
	check(jwks_url_allowed("http://LOCALHOST:1/j"));
	check(jwks_url_allowed("https://idp.example/jwks"));
	check(!jwks_url_allowed("http://idp.example/jwks"));
	check(!jwks_url_allowed("http://127.0.0.1.evil.example/j"));
	check(!jwks_url_allowed("http://127.0.0.1@evil.example/j"));
	check(!jwks_url_allowed("ftp://127.0.0.1/j"));
}

/* Syntax, shape and required keys. */
static void test_bad_json(void)
{
	struct dp_config *cfg = NULL;
	struct dp_err err = {{0}};

	check_refused("", "empty");
	check_refused("  \n\t ", "empty");
	check_refused("{\"issuer\": \"https://x\",\n  \"routes\": [,]}", "invalid JSON at 2:");
	check_refused("{\"issuer\": \"https://x\"", "invalid JSON at 1:");
	check_refused("[]", "must be a JSON object");
	check_refused("42", "invalid JSON"); /* jansson refuses non-container roots */
	check_refused(CFG(", \"enforce\": true, \"enforce\": false", ""), "duplicate");
	check(config_parse("{\"issuer\"\0: 1}", 14, &cfg, &err) == -EINVAL && !cfg);
	check(strstr(err.msg, "invalid JSON") != NULL);
}

static void test_missing_required(void)
{
	check_refused("{\"routes\": [], " MIN_ISSUERS "}", "issuer: required");
	check_refused("{\"issuer\": \"https://x\", \"routes\": []}", "trusted_issuers: required");
	check_refused(MIN_HEAD "}", "routes: required");
	check_refused("{\"issuer\": \"https://x\", \"routes\": [], \"trusted_issuers\": []}",
		      "trusted_issuers: must name at least one issuer");
	check_refused(CFG("", "{\"port\": 1, \"action\": \"deny\"}"), "routes[0].host: required");
	check_refused(CFG("", "{\"host\": \"h\", \"action\": \"deny\"}"),
		      "routes[0].port: required");
	check_refused(CFG("", "{\"host\": \"h\", \"port\": 1}"), "routes[0].action: required");
	check_refused(
	    CFG("", "{\"host\": \"h\", \"port\": 1, \"action\": \"delegate\", \"scope\": \"s\"}"),
	    "routes[0].audience: required");
	check_refused(CFG("", "{\"host\": \"h\", \"port\": 1, \"action\": \"delegate\", "
			      "\"audience\": \"https://h\"}"),
		      "routes[0].scope: required");
	check_refused("{\"issuer\": \"https://x\", \"routes\": [], \"trusted_issuers\": "
		      "[{\"jwks_file\": \"/j\"}]}",
		      "trusted_issuers[0].issuer: required");
}

static void test_unknown_keys(void)
{
	check_refused(CFG(", \"enforcee\": true", ""), "unknown key \"enforcee\"");
	check_refused(CFG("", DELEGATE ", \"prt\": 1}"), "routes[0]: unknown key \"prt\"");
	check_refused("{\"issuer\": \"https://x\", \"routes\": [], \"trusted_issuers\": ["
		      "{\"issuer\": \"https://i\", \"jwks_file\": \"/j\", \"kid\": \"k\"}]}",
		      "trusted_issuers[0]: unknown key \"kid\"");
}

/* Every error at once, in file order; the first is what err says; "did you mean". */
static void test_all_errors_reported(void)
{
	static const char text[] =
	    CFG(", \"enforcee\": true, \"token_ttl\": 1, \"frob\": 2",
		"{\"host\": \"b.test\", \"port\": 0, \"action\": \"deny\"}, " DELEGATE
		", \"scpoe\": 1}");
	char path[] = "/tmp/deputy-test-config.XXXXXX";
	struct config_report rep = {0};
	struct dp_config *cfg = NULL;
	struct dp_err err = {{0}};
	int fd = mkstemp(path);

	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		fail("mkstemp: %s", strerror(errno));
	close(fd);
	check(config_load_report(path, &cfg, &err, &rep) == -EINVAL && !cfg);
	unlink(path);
	check(rep.n == 5 && rep.more == 0);
	check_str(rep.line[0], "unknown key \"enforcee\" (did you mean \"enforce\"?)");
	check_str(rep.line[1], "unknown key \"frob\"");
	check_str(rep.line[2], "token_ttl: must be an integer from 5 to 86400");
	check_str(rep.line[3], "routes[0].port: must be an integer from 1 to 65535");
	check_str(rep.line[4], "routes[1]: unknown key \"scpoe\" (did you mean \"scope\"?)");
	check(strstr(err.msg, "enforcee") != NULL); /* the first */
	check_refused(CFG(", \"retention_days\": -1", ""), "retention_days: must be an integer");
	check_refused(CFG("", DELEGATE ", \"path\": \"/a/[b*\"}"), "without its closing ']'");
	check_refused(CFG("", DELEGATE ", \"path\": \"/a\\\\\"}"), "escaping");
}

static void test_wrong_types(void)
{
	check_refused("{\"issuer\": 1, \"routes\": [], " MIN_ISSUERS "}",
		      "issuer: must be a string");
	check_refused(CFG(", \"socket\": true", ""), "socket: must be a string");
	check_refused(CFG(", \"state_dir\": [\"/x\"]", ""), "state_dir: must be a string");
	check_refused(CFG(", \"signing_key\": null", ""), "signing_key: must be a string");
	check_refused(CFG(", \"token_ttl\": \"60\"", ""), "token_ttl: must be an integer");
	check_refused(CFG(", \"token_ttl\": 60.0", ""), "token_ttl: must be an integer");
	check_refused(CFG(", \"http_listen\": 8471", ""), "http_listen: must be a string");
	check_refused("{\"issuer\": \"https://x\", \"routes\": [], \"trusted_issuers\": {}}",
		      "trusted_issuers: must be an array");
	check_refused(
	    "{\"issuer\": \"https://x\", \"routes\": [], \"trusted_issuers\": [\"https://i\"]}",
	    "trusted_issuers[0]: must be an object");
	check_refused(MIN_HEAD ", \"routes\": {}}", "routes: must be an array");
	check_refused(CFG("", "[]"), "routes[0]: must be an object");
	check_refused(CFG(", \"allow_cidrs\": \"10.0.0.0/8\"", ""),
		      "allow_cidrs: must be an array");
	check_refused(CFG(", \"allow_cidrs\": [10]", ""), "allow_cidrs[0]: must be a string");
	check_refused(CFG(", \"unrouted\": false", ""),
		      "unrouted: must be \"deny\" or \"monitor\"");
	check_refused(CFG(", \"enforce\": \"yes\"", ""), "enforce: must be true or false");
	check_refused(CFG(", \"enforce\": 1", ""), "enforce: must be true or false");
	check_refused(CFG(", \"kernel\": true", ""), "kernel: must be \"on\" or \"off\"");
	check_refused(CFG(", \"token_binding\": 1", ""),
		      "token_binding: must be \"request\" or \"session\"");
	check_refused(CFG(", \"allow_resolvers\": \"true\"", ""),
		      "allow_resolvers: must be true or false");
	check_refused(CFG(", \"resolve_interval\": \"300\"", ""),
		      "resolve_interval: must be an integer");
	check_refused(CFG(", \"cgroup\": 5", ""), "cgroup: must be a string");
	check_refused(CFG("", "{\"host\": 1, \"port\": 1, \"action\": \"deny\"}"),
		      "routes[0].host: must be a string");
	check_refused(CFG("", "{\"host\": \"h\", \"port\": \"443\", \"action\": \"deny\"}"),
		      "routes[0].port: must be an integer from 1 to 65535");
	check_refused(
	    CFG("", "{\"host\": \"h\", \"port\": 1, \"action\": \"deny\", \"method\": [\"GET\"]}"),
	    "routes[0].method: must be a string");
	check_refused(
	    CFG("", "{\"host\": \"h\", \"port\": 1, \"action\": \"deny\", \"path\": null}"),
	    "routes[0].path: must be a string");
	check_refused(CFG("", "{\"host\": \"h\", \"port\": 1, \"action\": 0}"),
		      "routes[0].action: must be");
	check_refused(CFG("", DELEGATE ", \"header\": 5}"), "routes[0].header: must be a string");
	check_refused(CFG("", "{\"host\": \"h\", \"port\": 1, \"action\": \"delegate\", "
			      "\"audience\": 1, \"scope\": \"s\"}"),
		      "routes[0].audience: must be a string");
	check_refused("{\"issuer\": \"https://x\", \"routes\": [], \"trusted_issuers\": ["
		      "{\"issuer\": \"https://i\", \"jwks_file\": 1}]}",
		      "trusted_issuers[0].jwks_file: must be a string");
}

static void test_impossible_values(void)
{
	check_refused("{\"issuer\": \"deputy.example\", \"routes\": [], " MIN_ISSUERS "}",
		      "issuer: must be an https:// or http:// URI");
	check_refused("{\"issuer\": \"https://\", \"routes\": [], " MIN_ISSUERS "}",
		      "issuer: URI must have a host");
	check_refused("{\"issuer\": \"https://a b\", \"routes\": [], " MIN_ISSUERS "}",
		      "issuer: URI must not contain");
	check_refused(CFG(", \"socket\": \"run/deputy.sock\"", ""),
		      "socket: must be an absolute path");
	check_refused(CFG(", \"socket\": "
			  "\"/run/"
			  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
			  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\"",
			  ""),
		      "socket: path too long");
	check_refused(CFG(", \"state_dir\": \"var/lib\"", ""),
		      "state_dir: must be an absolute path");
	check_refused(CFG(", \"signing_key\": \"key.pem\"", ""),
		      "signing_key: must be an absolute path");
	check_refused(CFG(", \"token_ttl\": 4", ""),
		      "token_ttl: must be an integer from 5 to 86400");
	check_refused(CFG(", \"token_ttl\": 86401", ""),
		      "token_ttl: must be an integer from 5 to 86400");
	check_refused(CFG(", \"token_ttl\": -60", ""), "token_ttl: must be");
	check_refused(CFG(", \"token_ttl\": 99999999999999999", ""), "token_ttl: must be");
	check_refused(CFG(", \"resolve_interval\": 9", ""),
		      "resolve_interval: must be an integer from 10 to 86400");
	check_refused(CFG(", \"http_listen\": \"0.0.0.0:8471\"", ""),
		      "http_listen: must be a loopback address");
	check_refused(CFG(", \"http_listen\": \"[::]:8471\"", ""),
		      "http_listen: must be a loopback address");
	check_refused(CFG(", \"http_listen\": \"10.1.2.3:80\"", ""),
		      "http_listen: must be a loopback address");
	check_refused(CFG(", \"http_listen\": \"127.0.0.1\"", ""),
		      "http_listen: must be \"ADDRESS:PORT\"");
	check_refused(CFG(", \"http_listen\": \"127.0.0.1:0\"", ""), "http_listen: must be");
	check_refused(CFG(", \"http_listen\": \"127.0.0.1:65536\"", ""), "http_listen: must be");
	check_refused(CFG(", \"http_listen\": \"::1:8471\"", ""), "http_listen: must be");
	check_refused(CFG(", \"http_listen\": \"localhost:8471\"", ""), "http_listen: must be");
	check_refused(CFG(", \"unrouted\": \"allow\"", ""),
		      "unrouted: must be \"deny\" or \"monitor\"");
	check_refused(CFG(", \"kernel\": \"yes\"", ""), "kernel: must be \"on\" or \"off\"");
	check_refused(CFG(", \"token_binding\": \"connection\"", ""), "token_binding: must be");
	check_refused(CFG(", \"cgroup\": \"/deputy\"", ""),
		      "cgroup: must be a relative cgroup path");
	check_refused(CFG(", \"cgroup\": \"deputy/../..\"", ""), "cgroup: must be a relative");
	check_refused(CFG(", \"cgroup\": \"a//b\"", ""), "cgroup: must be a relative");
	check_refused(CFG(", \"cgroup\": \"a/\"", ""), "cgroup: must be a relative");
	check_refused(CFG(", \"cgroup\": \"a b\"", ""), "cgroup: must be a relative");
	check_refused(CFG(", \"cgroup\": \"\"", ""), "cgroup: must be a relative");
}

static void test_bad_issuers(void)
{
#define ISS(entries)                                                                               \
	"{\"issuer\": \"https://x\", \"routes\": [], \"trusted_issuers\": [" entries "]}"
	check_refused(ISS("{\"issuer\": \"https://i\"}"),
		      "trusted_issuers[0]: needs jwks_file, jwks_uri or \"discovery\": true");
	check_refused(ISS("{\"issuer\": \"https://i\", \"jwks_file\": \"/j\", \"jwks_uri\": "
			  "\"https://i/j\"}"),
		      "trusted_issuers[0]: give one of jwks_file, jwks_uri or \"discovery\": true");
	check_refused(ISS("{\"issuer\": \"https://i\", \"jwks_uri\": \"https://i/j\", "
			  "\"discovery\": true}"),
		      "trusted_issuers[0]: give one of jwks_file, jwks_uri or \"discovery\": true");
	check_refused(ISS("{\"issuer\": \"http://idp.example\", \"discovery\": true}"),
		      "trusted_issuers[0].discovery: the issuer must be https://");
	check_refused(ISS("{\"issuer\": \"https://i\", \"discovery\": 1}"),
		      "trusted_issuers[0].discovery:");
	check_refused(ISS("{\"issuer\": \"https://i\", \"discovery\": true, \"ca_file\": \"ca\"}"),
		      "trusted_issuers[0].ca_file:");
	check_refused(ISS("{\"issuer\": \"https://i\", \"discovery\": true, \"claims\": "
			  "{\"user\": \"upn\"}}"),
		      "trusted_issuers[0].claims.user: unknown (mappable: sub, jti, scope, "
		      "resource, agent)");
	check_refused(ISS("{\"issuer\": \"https://i\", \"discovery\": true, \"claims\": "
			  "{\"agent\": \"aud\"}}"),
		      "trusted_issuers[0].claims.agent: \"aud\" carries a check of its own");
	check_refused(ISS("{\"issuer\": \"https://i\", \"discovery\": true, \"claims\": "
			  "{\"agent\": \"\"}}"),
		      "trusted_issuers[0].claims.agent: must be a claim name");
	check_refused(ISS("{\"issuer\": \"https://i\", \"discovery\": true, \"claims\": []}"),
		      "trusted_issuers[0].claims: must be an object");
	check_refused(ISS("{\"issuer\": \"https://i\", \"jwks_file\": \"/j\"},"
			  "{\"issuer\": \"https://i\", \"jwks_file\": \"/k\"}"),
		      "trusted_issuers[1].issuer: duplicate of trusted_issuers[0]");
	check_refused(ISS("{\"issuer\": \"ftp://i\", \"jwks_file\": \"/j\"}"),
		      "trusted_issuers[0].issuer: must be an https:// or http:// URI");
	check_refused(ISS("{\"issuer\": \"https://i\", \"jwks_file\": \"j.json\"}"),
		      "trusted_issuers[0].jwks_file: must be an absolute path");
	check_refused(ISS("{\"issuer\": \"https://i\", \"jwks_uri\": \"/jwks\"}"),
		      "trusted_issuers[0].jwks_uri: must be an https:// or http:// URI");
	check_refused(
	    ISS("{\"issuer\": \"https://i\", \"jwks_uri\": \"http://127.0.0.1.evil.example/j\"}"),
	    "trusted_issuers[0].jwks_uri: must be https://");
	check_refused(ISS("{\"issuer\": \"https://i\", \"jwks_uri\": \"https://u@i/j\"}"),
		      "trusted_issuers[0].jwks_uri: URI must have a host");
	check_refused(ISS("{\"issuer\": \"https://i\", \"jwks_uri\": \"https://@i/j\"}"),
		      "trusted_issuers[0].jwks_uri: URI must have a host");
	check_refused(ISS("{\"issuer\": \"https:///i\", \"jwks_file\": \"/j\"}"),
		      "trusted_issuers[0].issuer: URI must have a host");
	check_refused(ISS("{\"issuer\": \"HTTPS://i\", \"jwks_file\": \"/j\"}"),
		      "trusted_issuers[0].issuer: must be an https:// or http:// URI");
	check_refused(ISS("{\"issuer\": \"https://i#f\", \"jwks_file\": \"/j\"}"),
		      "trusted_issuers[0].issuer: URI must not have a fragment");
	check_refused(ISS("{\"issuer\": \"https://i:99999\", \"jwks_file\": \"/j\"}"),
		      "trusted_issuers[0].issuer: URI has a bad port");
	check_refused(ISS("{\"issuer\": \"https://[::1\", \"jwks_file\": \"/j\"}"),
		      "trusted_issuers[0].issuer: URI has a bad IPv6 literal");
	check_refused(ISS("{\"issuer\": \"https://i\", \"jwks_uri\": \"http://[::2]/j\"}"),
		      "trusted_issuers[0].jwks_uri: must be https://");
#undef ISS
}

static void test_bad_routes(void)
{
#define ROUTE(body) CFG("", "{\"host\": \"h.test\", \"port\": 443, " body "}")
	check_refused(ROUTE("\"action\": \"allow\""),
		      "routes[0].action: must be \"delegate\", \"passthrough\" or \"deny\"");
	check_refused(CFG("", "{\"host\": \"h\", \"port\": 0, \"action\": \"deny\"}"),
		      "routes[0].port: must be an integer from 1 to 65535");
	check_refused(CFG("", "{\"host\": \"h\", \"action\": \"deny\", \"port\": 1},"
			      "{\"host\": \"h\", \"port\": 1, \"action\": \"deny\"},"
			      "{\"host\": \"h\", \"port\": 65536, \"action\": \"deny\"}"),
		      "routes[2].port: must be an integer from 1 to 65535");
	check_refused(ROUTE("\"action\": \"passthrough\", \"audience\": \"https://h\""),
		      "routes[0].audience: only allowed with \"action\": \"delegate\"");
	check_refused(ROUTE("\"action\": \"deny\", \"scope\": \"s\""),
		      "routes[0].scope: only allowed with \"action\": \"delegate\"");
	check_refused(ROUTE("\"action\": \"deny\", \"header\": \"X-T\""),
		      "routes[0].header: only allowed with");
	check_refused(CFG("", DELEGATE ", \"scope\": \"a b\"}"), "duplicate"); /* JSON dup key */
	check_refused(CFG("", "{\"host\": \"h\", \"port\": 1, \"action\": \"delegate\", "
			      "\"audience\": \"https://h\", \"scope\": \"email:send email:read\"}"),
		      "routes[0].scope: must be one scope");
	check_refused(CFG("", "{\"host\": \"h\", \"port\": 1, \"action\": \"delegate\", "
			      "\"audience\": \"https://h\", \"scope\": \"\"}"),
		      "routes[0].scope: must be one scope");
	check_refused(CFG("", "{\"host\": \"h\", \"port\": 1, \"action\": \"delegate\", "
			      "\"audience\": \"mail.internal\", \"scope\": \"s\"}"),
		      "routes[0].audience: must be an https:// or http:// URI");
	check_refused(ROUTE("\"action\": \"deny\", \"method\": \"GE T\""),
		      "routes[0].method: must be an HTTP method");
	check_refused(ROUTE("\"action\": \"deny\", \"method\": \"\""),
		      "routes[0].method: must be an HTTP method");
	check_refused(ROUTE("\"action\": \"deny\", \"method\": \"G(ET\""),
		      "routes[0].method: must be an HTTP method");
	check_refused(ROUTE("\"action\": \"deny\", \"path\": \"api/*\""),
		      "routes[0].path: must start with '/' or '*'");
	check_refused(ROUTE("\"action\": \"deny\", \"path\": \"\""),
		      "routes[0].path: must start with");
	check_refused(ROUTE("\"action\": \"deny\", \"path\": \"/a b\""),
		      "routes[0].path: must be at most");
	check_refused(ROUTE("\"action\": \"deny\", \"path\": \"/a#b\""),
		      "routes[0].path: must not contain '#'");
	check_refused(ROUTE("\"action\": \"deny\", \"path\": \"/a/../admin*\""),
		      "routes[0].path: must be normalised");
	check_refused(ROUTE("\"action\": \"deny\", \"path\": \"/%61dmin\""),
		      "routes[0].path: must be normalised");
	check_refused(CFG("", DELEGATE ", \"header\": \"X Token\"}"),
		      "routes[0].header: must be an HTTP header name");
	check_refused(CFG("", DELEGATE ", \"header\": \"X-Token:\"}"),
		      "routes[0].header: must be an HTTP header name");
	check_refused(CFG("", DELEGATE ", \"header\": \"content-length\"}"),
		      "routes[0].header: \"content-length\" cannot carry");
	check_refused(CFG("", DELEGATE ", \"header\": \"Host\"}"), "routes[0].header:");
	check_refused(CFG("", "{\"host\": \"\", \"port\": 1, \"action\": \"deny\"}"),
		      "routes[0].host: must be a host name");
	check_refused(CFG("", "{\"host\": \"a..b\", \"port\": 1, \"action\": \"deny\"}"),
		      "routes[0].host: must be");
	check_refused(CFG("", "{\"host\": \"*.example\", \"port\": 1, \"action\": \"deny\"}"),
		      "routes[0].host: must be");
	check_refused(CFG("", "{\"host\": \"h/x\", \"port\": 1, \"action\": \"deny\"}"),
		      "routes[0].host: must be");
	check_refused(CFG("", "{\"host\": \"10.1.2.300\", \"port\": 1, \"action\": \"deny\"}"),
		      "routes[0].host: must be");
	check_refused(CFG("", "{\"host\": \"[::1\", \"port\": 1, \"action\": \"deny\"}"),
		      "routes[0].host: must be");
	check_refused(CFG("", "{\"host\": \"1:2:3\", \"port\": 1, \"action\": \"deny\"}"),
		      "routes[0].host: must be");
	check_refused(
	    CFG("",
		"{\"host\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.b\","
		" \"port\": 1, \"action\": \"deny\"}"),
	    "routes[0].host: must be");
#undef ROUTE
}

static void test_bad_cidrs(void)
{
	check_refused(CFG(", \"allow_cidrs\": [\"10.0.0.0/8\", \"10.1.2.3/8\"]", ""),
		      "allow_cidrs[1]: \"10.1.2.3/8\": address has bits set beyond the /8 prefix");
	check_refused(CFG(", \"allow_cidrs\": [\"10.0.0.0/33\"]", ""),
		      "allow_cidrs[0]: \"10.0.0.0/33\": prefix length must be at most 32");
	check_refused(CFG(", \"allow_cidrs\": [\"fd00::/129\"]", ""),
		      "allow_cidrs[0]: \"fd00::/129\": prefix length must be at most 128");
	check_refused(CFG(", \"allow_cidrs\": [\"10.0.0.0/\"]", ""),
		      "allow_cidrs[0]: \"10.0.0.0/\": bad prefix length");
	check_refused(CFG(", \"allow_cidrs\": [\"10.0.0.0/-1\"]", ""),
		      "allow_cidrs[0]: \"10.0.0.0/-1\": bad prefix length");
	check_refused(CFG(", \"allow_cidrs\": [\"10.0.0.0/08\"]", ""), "bad prefix length");
	check_refused(CFG(", \"allow_cidrs\": [\"10.0.0/8\"]", ""),
		      "allow_cidrs[0]: \"10.0.0/8\" is not an address or CIDR");
	check_refused(CFG(", \"allow_cidrs\": [\"example.com/32\"]", ""), "is not an address");
	check_refused(CFG(", \"allow_cidrs\": [\"\"]", ""), "allow_cidrs[0]:");
}

/* A route's addrs: CIDRs like allow_cidrs, errors naming the route and the entry. */
static void test_route_addrs(void)
{
	struct dp_config *cfg = NULL;
	struct dp_err err = {{0}};
	const char *ok = CFG("", "{\"host\": \"h.test\", \"port\": 443, \"action\": "
				 "\"passthrough\"},"
				 "{\"host\": \"h.test\", \"port\": 443, \"action\": "
				 "\"passthrough\", \"addrs\": [\"10.0.0.0/8\", \"::1\"]}");

	check(config_parse(ok, strlen(ok), &cfg, &err) == 0);
	if (!cfg)
		return;
	check(cfg->routes[0].n_addrs == 0 && cfg->routes[0].addrs == NULL);
	check(cfg->routes[1].n_addrs == 2);
	check(cfg->routes[1].addrs[0].family == AF_INET && cfg->routes[1].addrs[0].prefix == 8);
	check(cfg->routes[1].addrs[1].family == AF_INET6 && cfg->routes[1].addrs[1].prefix == 128);
	config_free(cfg);
	check_refused(CFG("", "{\"host\": \"h.test\", \"port\": 443, \"action\": "
			      "\"passthrough\", \"addrs\": [\"10.0.0.0/8\", \"10.1.2.3/8\"]}"),
		      "routes[0].addrs[1]: \"10.1.2.3/8\": address has bits set beyond the /8");
	check_refused(CFG("", "{\"host\": \"h.test\", \"port\": 443, \"action\": "
			      "\"passthrough\", \"addrs\": \"10.0.0.0/8\"}"),
		      "routes[0].addrs: must be an array");
	check_refused(CFG("", "{\"host\": \"h.test\", \"port\": 443, \"action\": "
			      "\"deny\", \"addrs\": [\"10.0.0.1\"]}"),
		      "routes[0].addrs: a deny route has no destination to name");
}

static void test_mcp_routes(void)
{
#define MCP(m) CFG("", DELEGATE ", \"mcp\": " m "}")
	static const char ok[] =
	    MCP("{\"tools\": {\"send_email\": \"email:send\", \"*\": \"deny\"}, "
		"\"prompts\": {}, \"filter_list\": true}");
	struct dp_err err;
	struct dp_config *cfg = parse_ok(ok, &err);
	const struct dp_mcp_rule *r;

	if (!cfg)
		fail("refused: %s", err.msg);
	check(cfg->routes[0].mcp && cfg->routes[0].mcp->filter_list);
	check(cfg->routes[0].mcp->tools.present && !cfg->routes[0].mcp->resources.present);
	r = config_mcp_rule(&cfg->routes[0].mcp->tools, "send_email");
	check(r && strcmp(r->scope, "email:send") == 0);
	r = config_mcp_rule(&cfg->routes[0].mcp->tools, "Send_email"); /* exact names */
	check(r && !r->scope);
	check(!config_mcp_rule(&cfg->routes[0].mcp->prompts, "p"));
	config_free(cfg);
	check_refused(MCP("{\"tool\": {}}"), "routes[0].mcp: unknown key \"tool\"");
	check_refused(MCP("[]"), "routes[0].mcp: must be an object");
	check_refused(MCP("{\"tools\": []}"), "routes[0].mcp.tools: must be an object");
	check_refused(MCP("{\"tools\": {\"a\": 1}}"), "routes[0].mcp.tools: \"a\": the scope must");
	check_refused(MCP("{\"tools\": {\"a\": \"x y\"}}"), "must be one scope or \"deny\"");
	check_refused(MCP("{\"tools\": {\"\": \"s\"}}"), "names must be 1 to");
	check_refused(MCP("{\"filter_list\": \"yes\"}"), "routes[0].mcp.filter_list: must be");
	check_refused(CFG("", "{\"host\": \"h\", \"port\": 1, \"action\": \"passthrough\", "
			      "\"mcp\": {}}"),
		      "routes[0].mcp: only allowed with \"action\": \"delegate\"");
	check_refused(CFG("", DELEGATE ", \"method\": \"GET\", \"mcp\": {}}"),
		      "routes[0].mcp: needs a route that allows POST");
#undef MCP
}

static void test_error_is_one_line_and_bounded(void)
{
	/* a long hostile key is cut and control bytes hidden in the message */
	char text[4096];
	struct dp_config *cfg = NULL;
	struct dp_err err = {{0}};

	snprintf(text, sizeof(text), CFG(", \"%s\\nx\": 1", ""),
		 "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
		 "kkkkk");
	check(config_parse(text, strlen(text), &cfg, &err) == -EINVAL);
	check(strstr(err.msg, "unknown key \"kkk") != NULL);
	check(strchr(err.msg, '\n') == NULL);
	check(strlen(err.msg) < 120);
}

static void test_load(void)
{
	char path[] = "/tmp/deputy-test-config.XXXXXX";
	struct dp_config *cfg = NULL;
	struct dp_err err = {{0}};
	int fd = mkstemp(path);
	FILE *f;

	if (fd < 0)
		fail("mkstemp: %s", strerror(errno));
	f = fdopen(fd, "w");
	fputs(example, f);
	fclose(f);
	if (config_load(path, &cfg, &err) != 0) {
		unlink(path);
		fail("load: %s", err.msg);
	}
	check_str(cfg->path, path);
	config_free(cfg);

	/* errors name the file */
	f = fopen(path, "w");
	fputs(CFG(", \"token_ttl\": 0", ""), f);
	fclose(f);
	cfg = NULL;
	if (config_load(path, &cfg, &err) == 0) {
		config_free(cfg);
		unlink(path);
		fail("bad ttl accepted");
	}
	if (strncmp(err.msg, path, strlen(path)) != 0 || !strstr(err.msg, ": token_ttl: must be")) {
		unlink(path);
		fail("message: %s", err.msg);
	}

	/* oversized file */
	f = fopen(path, "w");
	for (int i = 0; i < (1 << 20) / 16 + 1; i++)
		fputs("                ", f);
	fclose(f);
	check(config_load(path, &cfg, &err) == -EFBIG && !cfg);
	check(strstr(err.msg, "larger than") != NULL);
	unlink(path);

	check(config_load(path, &cfg, &err) == -ENOENT && !cfg);
	check(strstr(err.msg, path) && strstr(err.msg, "No such file"));
}

/* The proxy's keys and route "tls" (design: Config, layer 4). */
static void test_proxy_keys(void)
{
	struct dp_err err;
	struct dp_config *cfg = parse_ok(CFG("", DELEGATE "}"), &err);

	if (!cfg)
		fail("minimal config refused: %s", err.msg);
	check(cfg->proxy == true);
	check_str(cfg->proxy_listen, "127.0.0.1:8472");
	check(cfg->routes[0].tls_opaque == false);
	check(cfg->upstream_ca_file == NULL); /* the system store */
	config_free(cfg);

	cfg = parse_ok(CFG(", \"proxy\": \"off\", \"proxy_listen\": \"127.0.0.2:9000\"",
			   DELEGATE ", \"tls\": \"opaque\"}, " DELEGATE ", \"tls\": \"opaque\", "
				    "\"method\": \"GET\"}, {\"host\": \"a.test\", \"port\": 8443, "
				    "\"action\": \"passthrough\", \"tls\": \"intercept\"}"),
		       &err);
	if (!cfg)
		fail("proxy keys refused: %s", err.msg);
	check(cfg->proxy == false);
	check_str(cfg->proxy_listen, "127.0.0.2:9000");
	check(cfg->routes[0].tls_opaque && cfg->routes[1].tls_opaque);
	check(!cfg->routes[2].tls_opaque);
	config_free(cfg);

	check_refused(CFG(", \"proxy\": true", ""), "proxy: must be \"on\" or \"off\"");
	check_refused(CFG(", \"proxy_listen\": \"[::1]:8472\"", ""),
		      "proxy_listen: must be a loopback IPv4");
	check_refused(CFG(", \"proxy_listen\": \"10.0.0.1:8472\"", ""),
		      "proxy_listen: must be a loopback IPv4");
	check_refused(CFG(", \"proxy_listen\": \"127.0.0.1\"", ""), "proxy_listen: must be");
	check_refused(CFG(", \"proxy_listen\": 8472", ""), "proxy_listen: must be a string");
	check_refused(CFG("", DELEGATE ", \"tls\": \"pinned\"}"),
		      "routes[0].tls: must be \"intercept\" or \"opaque\"");
	check_refused(CFG("", DELEGATE "}, " DELEGATE ", \"tls\": \"opaque\"}"),
		      "routes[1].tls: \"opaque\" disagrees with routes[0] for a.test port 443");
}

/* upstream_ca_file: the proxy's trust anchors for upstreams (the default is with the proxy's
 * other keys). */
static void test_upstream_ca_file(void)
{
	struct dp_err err;
	struct dp_config *cfg = parse_ok(
	    CFG(", \"upstream_ca_file\": \"/etc/deputy/upstream.pem\"", DELEGATE "}"), &err);
	if (!cfg)
		fail("upstream_ca_file refused: %s", err.msg);
	check_str(cfg->upstream_ca_file, "/etc/deputy/upstream.pem");
	config_free(cfg);
	check_refused(CFG(", \"upstream_ca_file\": \"ca.pem\"", ""), "upstream_ca_file: ");
	check_refused(CFG(", \"upstream_ca_file\": 1", ""), "upstream_ca_file: must be");
}

static void test_action_names(void)
{
	check_str(config_action_name(DP_ACTION_DELEGATE), "delegate");
	check_str(config_action_name(DP_ACTION_PASSTHROUGH), "passthrough");
	check_str(config_action_name(DP_ACTION_DENY), "deny");
}

static void test_parse_listen(void)
{
	struct sockaddr_storage ss;
	socklen_t sl;

	check(config_parse_listen("127.0.0.1:8471", false, &ss, &sl) == 0);
	check(ss.ss_family == AF_INET && sl == sizeof(struct sockaddr_in));
	check(ntohs(((struct sockaddr_in *)&ss)->sin_port) == 8471);
	check(config_parse_listen("127.1.2.3:1", false, &ss, &sl) == 0);
	check(config_parse_listen("[::1]:65535", false, &ss, &sl) == 0);
	check(ss.ss_family == AF_INET6 && ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) == 65535);
	check(config_parse_listen("127.0.0.1:0", false, &ss, &sl) == -EINVAL);
	check(config_parse_listen("127.0.0.1:0", true, &ss, &sl) == 0);
	check(config_parse_listen("127.0.0.1:+80", false, &ss, &sl) == -EINVAL);
	check(config_parse_listen("127.0.0.1:80x", false, &ss, &sl) == -EINVAL);
	check(config_parse_listen("127.0.0.1:", false, &ss, &sl) == -EINVAL);
	check(config_parse_listen(":80", false, &ss, &sl) == -EINVAL);
	check(config_parse_listen("[::1]80", false, &ss, &sl) == -EINVAL);
	check(config_parse_listen("[127.0.0.1]:80", false, &ss, &sl) == -EINVAL);
	check(config_parse_listen("192.168.1.1:80", false, &ss, &sl) == -EADDRNOTAVAIL);
	check(config_parse_listen("[::ffff:127.0.0.1]:80", false, &ss, &sl) == -EADDRNOTAVAIL);
	check(config_parse_listen(NULL, false, &ss, &sl) == -EINVAL);
}

int main(void)
{
	RUN(test_example);
	RUN(test_defaults);
	RUN(test_non_defaults);
	RUN(test_hosts_normalised);
	RUN(test_http_loopback_jwks);
	RUN(test_issuer_discovery_ca_claims);
	RUN(test_bad_json);
	RUN(test_missing_required);
	RUN(test_unknown_keys);
	RUN(test_all_errors_reported);
	RUN(test_wrong_types);
	RUN(test_impossible_values);
	RUN(test_bad_issuers);
	RUN(test_bad_routes);
	RUN(test_bad_cidrs);
	RUN(test_route_addrs);
	RUN(test_mcp_routes);
	RUN(test_error_is_one_line_and_bounded);
	RUN(test_load);
	RUN(test_proxy_keys);
	RUN(test_upstream_ca_file);
	RUN(test_action_names);
	RUN(test_parse_listen);
	UNIT_EXIT();
}
