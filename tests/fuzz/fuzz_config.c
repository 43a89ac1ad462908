// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the config parser. A config is written by an operator, not an
 * attacker, but deputyd parses it as root and must refuse, never crash on, anything.
 * Accepted configs are also matched against routes derived from the input.
 */
#include "../../daemon/lib/util.c"
#include "../../daemon/lib/jsonw.c"
#include "../../daemon/lib/httphead.c"
#include "../../daemon/lib/url.c"
#include "../../daemon/lib/urlpath.c"
#include "../../daemon/lib/config_value.c"
#include "../../daemon/lib/config.c"
#include "../../daemon/lib/config_issuer.c"
#include "../../daemon/lib/config_mcp.c"
#include "../../daemon/lib/route.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dp_config *cfg = NULL;
	struct dp_err err = {{0}};

	if (config_parse((const char *)data, size, &cfg, &err) != 0) {
		if (cfg || !err.msg[0] || strchr(err.msg, '\n'))
			__builtin_trap(); /* an error must be reported, once, on one line */
		return 0;
	}
	for (size_t i = 0; i < cfg->n_routes; i++) {
		const struct dp_route *rt = &cfg->routes[i];
		const struct dp_route *m =
		    route_match(cfg, rt->host, rt->port, rt->method, rt->path);

		/* a route's own fields, used as a request, match it or an earlier route */
		if (m && m > rt)
			__builtin_trap();
		(void)route_match(cfg, rt->host, rt->port, "GET", "/a/b?c");
		if (rt->path && !strpbrk(rt->path, "*?[\\") && !m)
			__builtin_trap();
	}
	config_free(cfg);
	return 0;
}
