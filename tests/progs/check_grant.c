// SPDX-License-Identifier: MIT
/*
 * check_grant: runs deputyd's grant verification on one grant, for interop tests.
 *   check_grant ISSUER JWKS AUDIENCE AGENT TOKEN|-
 * JWKS is a file or an https:// URL (the trusted issuer's jwks_file / jwks_uri).
 * Prints "ok <sub> <scope…>" and exits 0, or the refusal reason and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grant.h"
#include "jwks_fetch.h"

int main(int argc, char **argv)
{
	struct dp_trusted_issuer ti = {0};
	struct dp_config cfg = {0};
	struct dp_err err = {""};
	struct dp_grant *g = NULL;
	struct dp_trust *trust;
	char buf[DP_JWS_MAX_LEN + 64], *token;
	int r;

	if (argc != 6) {
		fprintf(stderr, "usage: check_grant ISSUER JWKS AUDIENCE AGENT TOKEN|-\n");
		return 2;
	}
	dp_log_init("check_grant", DP_LOG_WARN);
	token = argv[5];
	if (strcmp(token, "-") == 0) {
		size_t n = fread(buf, 1, sizeof(buf) - 1, stdin);

		buf[n] = '\0';
		buf[strcspn(buf, "\r\n")] = '\0';
		token = buf;
	}
	ti.issuer = argv[1];
	if (jwks_is_url(argv[2]))
		ti.jwks_uri = argv[2];
	else
		ti.jwks_file = argv[2];
	cfg.issuer = argv[3];
	cfg.issuers = &ti;
	cfg.n_issuers = 1;
	trust = trust_new(&cfg, &err);
	if (!trust) {
		printf("%s\n", err.msg);
		return 1;
	}
	r = grant_verify(trust, token, argv[3], argv[4], dp_now(), &g, &err);
	if (r) {
		printf("%s\n", err.msg);
	} else {
		printf("ok %s", g->sub);
		for (size_t i = 0; i < g->n_scopes; i++)
			printf(" %s", g->scopes[i]);
		printf("\n");
	}
	grant_free(g);
	trust_free(trust);
	return r ? 1 : 0;
}
