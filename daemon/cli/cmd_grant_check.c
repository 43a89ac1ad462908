// SPDX-License-Identifier: MIT
/*
 * cmd_grant_check: `deputy verify --grant FILE [--agent NAME]`, a grant checked with deputyd's
 * own code (grant.c) against deputyd's own config (its issuer as the audience, its trusted
 * issuers with their keys, discovery, CA files and claim names), without opening a session.
 * The claims are printed whatever the verdict: a refused grant is best understood by reading
 * what it says.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "config.h"
#include "grant.h"
#include "jws.h"

static void print_claims(const char *token)
{
	struct dp_err err = {""};
	struct dp_jws jws;
	char *text;

	if (dp_jws_parse(token, &jws, &err))
		return;
	text = json_dumps(jws.claims, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	printf("%s\n", text ? text : "{}");
	free(text);
	dp_jws_clear(&jws);
}

static void print_verdict(const struct dp_grant *g)
{
	char exp[32] = "?";
	struct tm tm;
	time_t t = (time_t)g->exp;

	if (gmtime_r(&t, &tm))
		strftime(exp, sizeof(exp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	printf("valid: user %s, %s, grant %s from %s, until %s\n  scope:", g->sub, g->agent, g->jti,
	       g->iss, exp);
	for (size_t i = 0; i < g->n_scopes; i++)
		printf(" %s", g->scopes[i]);
	printf("\n  resource:");
	for (size_t i = 0; i < g->n_resources; i++)
		printf(" %s", g->resources[i]);
	printf("\n");
}

int cli_verify_grant(const char *grant_path, const char *agent, const char *config)
{
	struct dp_config *cfg = NULL;
	struct dp_trust *trust = NULL;
	struct dp_grant *g = NULL;
	struct dp_err err = {""};
	char agent_id[256], *token;
	int rc;

	if (!config)
		config = getenv("DEPUTY_CONFIG");
	if (!config)
		config = DP_DEFAULT_CONFIG;
	if (agent) {
		if (strncmp(agent, "agent:", 6) == 0)
			agent += 6;
		snprintf(agent_id, sizeof(agent_id), "agent:%s", agent);
	}
	token = cli_read_token(grant_path);
	if (!token || !*token) {
		free(token);
		return cli_fail("verify", "cannot read the grant from %s", grant_path);
	}
	if (config_load(config, &cfg, &err) || !(trust = trust_new(cfg, &err))) {
		rc = cli_fail("verify", "%s", err.msg);
		goto out;
	}
	print_claims(token);
	rc = grant_verify(trust, token, cfg->issuer, agent ? agent_id : NULL, dp_now(), &g, &err);
	if (rc) {
		rc = cli_fail("verify", "grant refused: %s", err.msg);
		goto out;
	}
	print_verdict(g);
	if (!agent)
		printf("  (no --agent: the agent was not compared)\n");
out:
	grant_free(g);
	trust_free(trust);
	config_free(cfg);
	free(token);
	return rc;
}
