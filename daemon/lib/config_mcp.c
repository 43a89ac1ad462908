// SPDX-License-Identifier: MIT
/*
 * config_mcp: a route's "mcp" object (design: Policy: routes, MCP routes): the scope of each
 * tool, resource and prompt, and whether tools/list is filtered; and the lookup deputyd
 * decides with. Names are compared exactly (MCP names are case-sensitive); "*" is the rest;
 * a name no entry and no "*" covers is refused, so a tool added to a server later is not
 * allowed by accident.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "config_value.h"
#include "mcp.h"

#define CFG_MAX_MCP_RULES 256

static int cfg_mcp_map(struct cfg_ctx *c, const char *key, json_t *obj, struct dp_mcp_map *map)
{
	const char *name;
	json_t *v;

	if (!json_is_object(obj))
		return cfg_fail(c, key, "must be an object of NAME: SCOPE or \"deny\"");
	if (json_object_size(obj) > CFG_MAX_MCP_RULES)
		return cfg_fail(c, key, "at most %d entries", CFG_MAX_MCP_RULES);
	map->present = true;
	map->rules = calloc(json_object_size(obj) + 1, sizeof(*map->rules));
	if (!map->rules)
		return -ENOMEM;
	json_object_foreach(obj, name, v)
	{
		struct dp_mcp_rule *r = &map->rules[map->n];
		size_t len = strlen(name);
		const char *s;
		bool ctl = false;

		for (size_t i = 0; i < len; i++)
			ctl |= (unsigned char)name[i] < 0x20 || name[i] == 0x7f;
		if (len == 0 || len > MCP_NAME_MAX || ctl)
			return cfg_fail(c, key,
					"names must be 1 to %d bytes without control characters",
					MCP_NAME_MAX);
		if (!json_is_string(v))
			return cfg_fail(c, key, "\"%.64s\": the scope must be a string", name);
		s = json_string_value(v);
		if (strcmp(s, "deny") != 0 && !cfg_is_scope_token(s))
			return cfg_fail(c, key, "\"%.64s\": must be one scope or \"deny\"", name);
		r->name = strdup(name);
		r->scope = strcmp(s, "deny") == 0 ? NULL : strdup(s);
		map->n++;
		if (!r->name || (strcmp(s, "deny") != 0 && !r->scope))
			return -ENOMEM;
	}
	return 0;
}

int cfg_parse_route_mcp(struct cfg_ctx *c, json_t *obj, struct dp_route *rt)
{
	static const char *const keys[] = {"tools", "resources", "prompts", "filter_list"};
	static const char *const maps[] = {"tools", "resources", "prompts"};
	char saved[sizeof(c->where)];
	json_t *v;
	int r = 0;

	if (rt->action != DP_ACTION_DELEGATE)
		return cfg_fail(c, "mcp", "only allowed with \"action\": \"delegate\"");
	/* MCP's Streamable HTTP posts every call: a route that cannot see a POST has no call
	 * to decide on. */
	if (rt->method && strcmp(rt->method, "POST") != 0)
		return cfg_fail(c, "mcp",
				"needs a route that allows POST (\"method\" unset or \"POST\")");
	if (!json_is_object(obj))
		return cfg_fail(c, "mcp", "must be an object");
	rt->mcp = calloc(1, sizeof(*rt->mcp));
	if (!rt->mcp)
		return -ENOMEM;
	memcpy(saved, c->where, sizeof(saved));
	snprintf(c->where + strlen(c->where), sizeof(c->where) - strlen(c->where), ".mcp");
	r = cfg_check_keys(c, obj, keys, DP_ARRAY_SIZE(keys));
	for (size_t i = 0; !r && i < DP_ARRAY_SIZE(maps); i++) {
		struct dp_mcp_map *m = i == 0	? &rt->mcp->tools
				       : i == 1 ? &rt->mcp->resources
						: &rt->mcp->prompts;

		if ((v = json_object_get(obj, maps[i])))
			r = cfg_mcp_map(c, maps[i], v, m);
	}
	if (!r && (v = json_object_get(obj, "filter_list")))
		r = cfg_get_bool(c, "filter_list", v, &rt->mcp->filter_list);
	memcpy(c->where, saved, sizeof(saved));
	return r;
}

static void config_mcp_map_free(struct dp_mcp_map *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->rules[i].name);
		free(m->rules[i].scope);
	}
	free(m->rules);
}

void config_mcp_free(struct dp_mcp *m)
{
	if (!m)
		return;
	config_mcp_map_free(&m->tools);
	config_mcp_map_free(&m->resources);
	config_mcp_map_free(&m->prompts);
	free(m);
}

const struct dp_mcp_rule *config_mcp_rule(const struct dp_mcp_map *m, const char *name)
{
	const struct dp_mcp_rule *rest = NULL;

	for (size_t i = 0; i < m->n; i++) {
		if (strcmp(m->rules[i].name, name) == 0)
			return &m->rules[i];
		if (strcmp(m->rules[i].name, "*") == 0)
			rest = &m->rules[i];
	}
	return rest;
}
