// SPDX-License-Identifier: MIT
/* Unit tests for daemon/lib/url.c: URL parsing on CURLU with deputy's own strictness, the
 * loopback rule, host and path normalisation, and request-target paths. */
#include <arpa/inet.h>
#include <errno.h>

#include "unit.h"
#include "url.h"

static const char *parse_error(const char *s)
{
	static struct dp_err err;
	struct url_parts u;

	memset(&err, 0, sizeof(err));
	return url_parse_http(s, &u, &err) == 0 ? NULL : err.msg;
}

static void parse_accepts(void)
{
	struct url_parts u;
	struct dp_err err = {{0}};

	check(url_parse_http("https://IdP.Example:8443/a?b", &u, &err) == 0);
	check(u.https);
	check_str(u.host, "idp.example");
	check(url_parse_http("http://[::1]:80/jwks", &u, &err) == 0);
	check(!u.https);
	check_str(u.host, "::1");
	check(url_parse_http("http://localhost", &u, &err) == 0);
	check_str(u.host, "localhost");
}

static void parse_refuses(void)
{
	static const struct {
		const char *url, *why;
	} cases[] = {
	    {"ftp://h/", "must be an https:// or http:// URI"},
	    {"/jwks", "must be an https:// or http:// URI"},
	    {"https://h/a b", "must not contain spaces"},
	    {"https://h/\x7f", "must not contain spaces"},
	    {"https://h/#f", "must not have a fragment"},
	    {"https://", "must have a host"},
	    {"https:///x", "must have a host"},
	    {"https://?q", "must have a host"},
	    {"https://u@h/", "no user info"},
	    {"https://@h/", "no user info"},
	    {"https://u:p@h/", "no user info"},
	    {"https://h:99999/", "bad port"},
	    {"https://[::1/", "bad IPv6"},
	    {"https://ho^st/", "bad host"},
	};

	for (size_t i = 0; i < DP_ARRAY_SIZE(cases); i++) {
		const char *why = parse_error(cases[i].url);

		if (!why || !strstr(why, cases[i].why))
			fail("\"%s\": %s, want \"%s\"", cases[i].url, why ? why : "accepted",
			     cases[i].why);
	}
	{
		static char long_url[URL_MAX + 16] = "https://h/";

		memset(long_url + 10, 'a', URL_MAX);
		check(strstr(parse_error(long_url), "URI too long") != NULL);
	}
}

static void loopback(void)
{
	struct in_addr a4;
	struct url_parts u;

	check(url_host_is_loopback("localhost"));
	check(url_host_is_loopback("LocalHost"));
	check(url_host_is_loopback("127.0.0.1"));
	check(url_host_is_loopback("127.255.0.9"));
	check(url_host_is_loopback("::1"));
	check(url_host_is_loopback("[::1]"));
	check(!url_host_is_loopback("128.0.0.1"));
	check(!url_host_is_loopback("127.0.0.1.evil.example"));
	check(!url_host_is_loopback("::ffff:127.0.0.1"));
	check(!url_host_is_loopback("localhost.example"));
	check(!url_host_is_loopback(""));
	inet_pton(AF_INET, "127.1.2.3", &a4);
	check(url_addr_is_loopback(AF_INET, &a4));
	inet_pton(AF_INET, "10.0.0.1", &a4);
	check(!url_addr_is_loopback(AF_INET, &a4));
	/* the fetch rule: https anywhere, http only to loopback */
	check(url_parse_http("http://127.0.0.1:9/j", &u, NULL) == 0 && url_fetch_allowed(&u));
	check(url_parse_http("https://idp.example/j", &u, NULL) == 0 && url_fetch_allowed(&u));
	check(url_parse_http("http://idp.example/j", &u, NULL) == 0 && !url_fetch_allowed(&u));
}

static void hosts(void)
{
	char out[300];

	check(url_host_normalize("Mail.Internal", out, sizeof(out)) == 0);
	check_str(out, "mail.internal");
	check(url_host_normalize("[2001:DB8:0::1]", out, sizeof(out)) == 0);
	check_str(out, "2001:db8::1");
	check(url_host_normalize("_svc.x-y.test", out, sizeof(out)) == 0);
	check(url_host_normalize("10.1.2.300", out, sizeof(out)) == -EINVAL);
	check(url_host_normalize("a..b", out, sizeof(out)) == -EINVAL);
	check(url_host_normalize("*.example", out, sizeof(out)) == -EINVAL);
	check(url_host_normalize("[::1", out, sizeof(out)) == -EINVAL);
	check(url_host_normalize("", out, sizeof(out)) == -EINVAL);
}

static void paths(void)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
	    {"/a/./b/../c", "/a/c"}, {"/%61%2Fb", "/a%2Fb"}, {"/../../x", "/x"}, {"/x/..", "/"},
	    {"/%7e%2e", "/~."},	     {"/a//b", "/a//b"},     {"/%zz", "/%zz"},	 {"/a%", "/a%"},
	};
	char out[64];

	for (size_t i = 0; i < DP_ARRAY_SIZE(cases); i++) {
		url_path_normalize(cases[i].in, strlen(cases[i].in), out);
		if (strcmp(out, cases[i].want) != 0)
			fail("\"%s\" gives \"%s\", want \"%s\"", cases[i].in, out, cases[i].want);
	}
}

static void target_paths(void)
{
	char out[64];

	check(url_target_path("/a/b?q#f", out, sizeof(out)) == 0);
	check_str(out, "/a/b");
	check(url_target_path("https://h:8443/p/../q?x", out, sizeof(out)) == 0);
	check_str(out, "/p/../q"); /* as sent: normalising is the route's job */
	check(url_target_path("HTTP://h?q", out, sizeof(out)) == 0);
	check_str(out, "/");
	check(url_target_path("h:443", out, sizeof(out)) == -EINVAL);
	check(url_target_path("*", out, sizeof(out)) == -EINVAL);
	check(url_target_path("https://ho^st/x", out, sizeof(out)) == -EINVAL);
	check(url_target_path("/0123456789", out, 8) == -ENOSPC);
}

int main(void)
{
	RUN(parse_accepts);
	RUN(parse_refuses);
	RUN(loopback);
	RUN(hosts);
	RUN(paths);
	RUN(target_paths);
	UNIT_EXIT();
}
