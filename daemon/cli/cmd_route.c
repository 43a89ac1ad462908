// SPDX-License-Identifier: MIT
/*
 * cmd_route: `deputy route test METHOD URL --grant FILE --agent NAME`: which route a request
 * would match and what deputyd would decide for a session of that grant, without sending
 * anything. deputyd decides (route_test.c), with the config it runs and the grant checked
 * exactly as `deputy run` would have it checked: a refused grant is refused here too.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cli.h"
#include "locate.h"

static const char route_help[] =
    "usage: deputy route test METHOD URL --grant FILE --agent NAME [--json]\n"
    "                         [--socket PATH] [--config FILE]\n"
    "Shows the route deputyd's running config matches for METHOD URL and the decision a\n"
    "session of agent NAME under the grant would get (delegate, passthrough or deny, and\n"
    "why; mcp for an MCP route's POST, which deputyd decides per call, on its body).\n"
    "Nothing is sent, logged or minted. Exits 0 for delegate, passthrough or mcp, 1 for\n"
    "deny or a refused grant.\n";

static void route_print(json_t *r)
{
	json_t *rt = json_object_get(r, "route");
	const char *note = json_string_value(json_object_get(r, "note"));

	if (json_is_object(rt))
		printf("route:    routes[%lld]: %s:%lld %s %s -> %s%s%s%s%s\n",
		       (long long)json_integer_value(json_object_get(rt, "index")),
		       json_string_value(json_object_get(rt, "host")) ?: "?",
		       (long long)json_integer_value(json_object_get(rt, "port")),
		       json_string_value(json_object_get(rt, "method")) ?: "(any method)",
		       json_string_value(json_object_get(rt, "path")) ?: "(any path)",
		       json_string_value(json_object_get(rt, "action")) ?: "?",
		       json_object_get(rt, "scope") ? " scope " : "",
		       json_string_value(json_object_get(rt, "scope")) ?: "",
		       json_object_get(rt, "audience") ? " audience " : "",
		       json_string_value(json_object_get(rt, "audience")) ?: "");
	else
		printf("route:    none\n");
	printf("user:     %s (%s)\n", json_string_value(json_object_get(r, "user")) ?: "?",
	       json_string_value(json_object_get(r, "agent")) ?: "?");
	printf("decision: %s: %s\n", json_string_value(json_object_get(r, "verdict")) ?: "?",
	       json_string_value(json_object_get(r, "reason")) ?: "");
	if (note)
		printf("note:     %s\n", note);
}

struct route_url {
	char *scheme, *host, *path, *query, *port;
};

static void route_url_free(struct route_url *u)
{
	curl_free(u->scheme);
	curl_free(u->host);
	curl_free(u->path);
	curl_free(u->query);
	curl_free(u->port);
}

/* The URL's parts as a request carries them (libcurl's parser, as url.c uses). */
static int route_url_parse(const char *url, struct route_url *u)
{
	CURLU *h = curl_url();
	int bad;

	memset(u, 0, sizeof(*u));
	bad = !h || curl_url_set(h, CURLUPART_URL, url, 0) != CURLUE_OK ||
	      curl_url_get(h, CURLUPART_SCHEME, &u->scheme, 0) != CURLUE_OK ||
	      curl_url_get(h, CURLUPART_HOST, &u->host, 0) != CURLUE_OK ||
	      curl_url_get(h, CURLUPART_PORT, &u->port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
	      curl_url_get(h, CURLUPART_PATH, &u->path, 0) != CURLUE_OK ||
	      (strcmp(u->scheme, "https") != 0 && strcmp(u->scheme, "http") != 0);
	if (h && !bad)
		curl_url_get(h, CURLUPART_QUERY, &u->query, 0);
	curl_url_cleanup(h);
	return bad ? -1 : 0;
}

/* METHOD URL --grant --agent to the ROUTE_TEST request; its reply's JSON, or NULL. */
static json_t *route_ask(const char *sock, const char *method, const char *url, const char *grant,
			 const char *agent)
{
	static uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
	static struct dcli c;
	char target[8192];
	struct route_url u;
	struct dp_err err;
	struct dp_msg m;
	json_t *out = NULL;
	char *data;

	if (route_url_parse(url, &u) != 0) {
		route_url_free(&u);
		cli_fail("route", "%s: not an http:// or https:// URL", url);
		return NULL;
	}
	snprintf(target, sizeof(target), "%s%s%s", u.path, u.query ? "?" : "",
		 u.query ? u.query : "");
	if (dcli_connect(&c, sock, &err) != 0) {
		route_url_free(&u);
		cli_fail("route", "%s", err.msg);
		return NULL;
	}
	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_ROUTE_TEST, dcli_next_seq(&c), 0);
	dp_msg_put_str(&m, DP_T_GRANT, grant);
	dp_msg_put_str(&m, DP_T_AGENT, agent);
	dp_msg_put_str(&m, DP_T_SCHEME, u.scheme);
	dp_msg_put_str(&m, DP_T_HOST, u.host);
	dp_msg_put_u64(&m, DP_T_PORT, strtoull(u.port, NULL, 10));
	dp_msg_put_str(&m, DP_T_METHOD, method);
	dp_msg_put_str(&m, DP_T_TARGET, target);
	route_url_free(&u);
	if (dcli_call(&c, &m, &err) != 0) {
		dcli_close(&c);
		/* deputyd's refusal reads "grant refused: …" */
		cli_fail("route", "%s", err.msg);
		return NULL;
	}
	data = dcli_field_str(&c, DP_T_DATA);
	dcli_close(&c);
	out = data ? json_loads(data, 0, NULL) : NULL;
	free(data);
	if (!json_is_object(out)) {
		json_decref(out);
		cli_fail("route", "deputyd sent a malformed answer");
		return NULL;
	}
	return out;
}

int cmd_route(int argc, char **argv)
{
	static const struct option opts[] = {{"grant", required_argument, NULL, 'g'},
					     {"agent", required_argument, NULL, 'a'},
					     {"json", no_argument, NULL, 'j'},
					     {"socket", required_argument, NULL, 's'},
					     {"config", required_argument, NULL, 'c'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *grant_path = NULL, *agent = NULL, *sock_opt = NULL, *config = NULL, *sock;
	bool as_json = false;
	struct dp_err err;
	char *grant;
	json_t *r;
	int opt, rc;

	if (argc >= 2 && cli_is_help(argv[1]))
		return fputs(route_help, stdout), 0;
	if (argc < 2 || strcmp(argv[1], "test") != 0)
		return fputs(route_help, stderr), 2;
	optind = 2;
	while ((opt = getopt_long(argc, argv, "g:a:js:h", opts, NULL)) != -1) {
		if (opt == 'g')
			grant_path = optarg;
		else if (opt == 'a')
			agent = optarg;
		else if (opt == 'j')
			as_json = true;
		else if (opt == 's')
			sock_opt = optarg;
		else if (opt == 'c')
			config = optarg;
		else if (opt == 'h')
			return fputs(route_help, stdout), 0;
		else
			return fputs(route_help, stderr), 2;
	}
	if (optind != argc - 2 || !grant_path || !agent) {
		cli_fail("route", "METHOD, URL, --grant and --agent are required (see --help)");
		return 2;
	}
	grant = cli_read_token(grant_path);
	if (!grant || !*grant) {
		free(grant);
		return cli_fail("route", "cannot read the grant from %s", grant_path);
	}
	sock = cli_socket(sock_opt, config, &err);
	r = sock ? route_ask(sock, argv[optind], argv[optind + 1], grant, agent) : NULL;
	free(grant);
	if (!sock)
		return cli_fail("route", "%s", err.msg);
	if (!r)
		return 1;
	if (as_json) {
		char *line = json_dumps(r, JSON_COMPACT);

		puts(line ? line : "{}");
		free(line);
	} else {
		route_print(r);
	}
	rc = strcmp(json_string_value(json_object_get(r, "verdict")) ?: "", "deny") == 0;
	json_decref(r);
	return rc;
}
