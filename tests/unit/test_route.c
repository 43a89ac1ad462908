// SPDX-License-Identifier: MIT
/* Unit tests for daemon/lib/route.c: which route a request falls under, on configs
 * parsed by the real config parser. */
#include <string.h>

#include "route.h"
#include "url.h"
#include "unit.h"

#define HEAD                                                                                       \
	"{\"issuer\": \"https://deputy.test\", \"trusted_issuers\": [{\"issuer\": "                \
	"\"https://idp.test\", \"jwks_file\": \"/j.json\"}], \"routes\": ["

static const char routes[] =
    HEAD "{\"host\": \"mail.internal\", \"port\": 443, \"method\": \"POST\", \"path\": "
	 "\"/api/send*\", \"action\": \"delegate\", \"audience\": \"https://mail.internal\", "
	 "\"scope\": \"email:send\"},"
	 "{\"host\": \"mail.internal\", \"port\": 443, \"path\": \"/api/*\", \"action\": "
	 "\"deny\"},"
	 "{\"host\": \"mail.internal\", \"port\": 443, \"action\": \"passthrough\"},"
	 "{\"host\": \"mail.internal\", \"port\": 8443, \"method\": \"GET\", \"action\": "
	 "\"passthrough\"},"
	 "{\"host\": \"[2001:db8::1]\", \"port\": 80, \"path\": \"/v?/x\", \"action\": "
	 "\"deny\"},"
	 "{\"host\": \"10.0.0.1\", \"port\": 80, \"path\": \"*\", \"action\": \"passthrough\"}"
	 "]}";

static struct dp_config *cfg;
static const struct dp_route *r0, *r1, *r2, *r3, *r4, *r5;

static const struct dp_route *m(const char *host, int port, const char *method, const char *path)
{
	return route_match(cfg, host, port, method, path);
}

static void globs(void)
{
	/* '*' crosses '/', query and fragment stripped */
	check(m("mail.internal", 443, "POST", "/api/send") == r0);
	check(m("mail.internal", 443, "POST", "/api/send/x?y=1") == r0);
	check(m("mail.internal", 443, "POST", "/api/sendmail#frag") == r0);
	check(m("mail.internal", 443, "POST", "/api/other") == r1);
	/* '?' is one character, not a query, in a route's glob */
	check(m("2001:db8::1", 80, "GET", "/v2/x?q") == r4);
	check(m("2001:db8::1", 80, "GET", "/v10/x") == NULL);
	/* '*' alone matches every path; a NULL path only routes without a path */
	check(m("10.0.0.1", 80, "GET", "/a/b/c?d") == r5);
	check(m("10.0.0.1", 80, "GET", NULL) == NULL);
	check(m("mail.internal", 443, NULL, NULL) == r2);
	/* a query string cannot smuggle a match in */
	check(m("mail.internal", 443, "POST", "/x?/api/send") == r2);
}

static void normalisation(void)
{
	/* the path the backend will see: escaped unreserved characters and dot segments */
	check(m("mail.internal", 443, "POST", "/api/%73en%64") == r0);
	check(m("mail.internal", 443, "POST", "/x/../api/send") == r0);
	check(m("mail.internal", 443, "POST", "/./api/./send/.") == r0);
	check(m("mail.internal", 443, "POST", "/../../api/send") == r0);
	check(m("mail.internal", 443, "POST", "/%2e%2E/api/send") == r0);
	/* an escaped '/' is not a separator: it stays encoded and matches neither glob */
	check(m("mail.internal", 443, "POST", "/api%2fsend") == r2);
	check(m("mail.internal", 443, "POST", "/api/send/..") == r1);
	check(m("mail.internal", 443, "POST", "/api/%zzsend") == r1);
	check(m("mail.internal", 443, "POST", "/api/send%") == r0);
	/* repeated slashes are merged, as nginx does */
	check(m("mail.internal", 443, "POST", "//api//send") == r0);
	check(m("mail.internal", 443, "GET", "/api//x") == r1);
}

static void deny_routes_read_leniently(void)
{
	/* a deny route matches whatever the letter case ... */
	check(m("mail.internal", 443, "GET", "/API/x") == r1);
	check(m("mail.internal", 443, "GET", "/Api/%58") == r1);
	check(m("2001:db8::1", 80, "GET", "/V2/X") == r4);
	/* ... and with ';' parameters cut from each segment */
	check(m("mail.internal", 443, "GET", "/api;jsessionid=1/x") == r1);
	check(m("mail.internal", 443, "GET", "/v;a/x") == r2);
	check(m("2001:db8::1", 80, "GET", "/v2;x/x") == r4);
	/* other routes only as written: a delegate route never covers more than it says */
	check(m("mail.internal", 443, "POST", "/API/send") == r1);
	check(m("mail.internal", 443, "POST", "/api/send;x") == r0);
	check(m("mail.internal", 443, "POST", "/Api/Send") == r1);
}

static void long_path_never_matches(void)
{
	static char path[URL_PATH_MAX + 8];

	memset(path, 'a', sizeof(path) - 1);
	path[0] = '/';
	check(m("10.0.0.1", 80, "GET", path) == NULL);
	path[URL_PATH_MAX] = '\0';
	check(m("10.0.0.1", 80, "GET", path) == r5);
}

static void methods(void)
{
	/* exact when set: lower-case requests are not normalised */
	check(m("mail.internal", 8443, "GET", "/") == r3);
	check(m("mail.internal", 8443, "get", "/") == NULL);
	check(m("mail.internal", 8443, "POST", "/") == NULL);
	check(m("mail.internal", 8443, NULL, "/") == NULL);
	/* a route without a method takes any */
	check(m("mail.internal", 443, "DELETE", "/") == r2);
	check(m("mail.internal", 443, "BREW", "/") == r2);
}

static void first_match_wins(void)
{
	/* the same path with another method falls to the next route, and further */
	check(m("mail.internal", 443, "POST", "/api/send") == r0);
	check(m("mail.internal", 443, "GET", "/api/send") == r1);
	check(m("mail.internal", 443, "GET", "/inbox") == r2);
}

static void hosts(void)
{
	/* case-insensitive, one trailing dot, brackets, IPv6 spelled differently */
	check(m("MAIL.Internal", 443, "PUT", "/") == r2);
	check(m("mail.internal.", 443, "PUT", "/") == r2);
	check(m("mail.internal..", 443, "PUT", "/") == NULL);
	check(m("[2001:DB8:0::1]", 80, "GET", "/v1/x") == r4);
	check(m("2001:db8::1", 80, "GET", "/v1/x") == r4);
	/* no partial host matches */
	check(m("evil-mail.internal", 443, "POST", "/api/send") == NULL);
	check(m("mail.internal.evil", 443, "POST", "/api/send") == NULL);
	check(m("mail", 443, "POST", "/api/send") == NULL);
	/* junk hosts never match, never crash */
	check(m("", 443, "GET", "/") == NULL);
	check(m("[", 443, "GET", "/") == NULL);
	check(m(".", 443, "GET", "/") == NULL);
	check(m(NULL, 443, "GET", "/") == NULL);
	check(route_match(NULL, "mail.internal", 443, "GET", "/") == NULL);
}

static void ports(void)
{
	check(m("mail.internal", 80, "POST", "/api/send") == NULL);
	check(m("mail.internal", 8443, "POST", "/api/send") == NULL);
	check(m("10.0.0.1", 80, "GET", "/") == r5);
	check(m("10.0.0.1", 443, "GET", "/") == NULL);
	check(m("10.0.0.1", 0, "GET", "/") == NULL);
}

int main(void)
{
	struct dp_err err = {{0}};

	if (config_parse(routes, strlen(routes), &cfg, &err) != 0) {
		printf("FAIL: config: %s\n", err.msg);
		return 1;
	}
	r0 = &cfg->routes[0], r1 = &cfg->routes[1], r2 = &cfg->routes[2];
	r3 = &cfg->routes[3], r4 = &cfg->routes[4], r5 = &cfg->routes[5];
	RUN(globs);
	RUN(normalisation);
	RUN(deny_routes_read_leniently);
	RUN(long_path_never_matches);
	RUN(methods);
	RUN(first_match_wins);
	RUN(hosts);
	RUN(ports);
	config_free(cfg);
	UNIT_EXIT();
}
