// SPDX-License-Identifier: MIT
/*
 * mint_token: verifies a grant and mints a delegation token from it with deputyd's code,
 * for interop tests (a standard JWT library must accept what deputyd mints).
 *   mint_token --key PEM --idp-iss ISS --idp-jwks FILE --issuer DEPUTY_ISS --agent NAME
 *              --grant TOKEN --aud URI --scope S [--htm M --htu URL] [--ttl N] [--age N]
 * --age N mints as if N seconds ago (for expired tokens). Prints the token.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grant.h"
#include "mint.h"

/* Over 100 lines: a test program's options, then verify and mint, read top to bottom. */
int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"key", required_argument, NULL, 'k'},
	    {"idp-iss", required_argument, NULL, 'i'},
	    {"idp-jwks", required_argument, NULL, 'j'},
	    {"issuer", required_argument, NULL, 'I'},
	    {"agent", required_argument, NULL, 'a'},
	    {"grant", required_argument, NULL, 'g'},
	    {"aud", required_argument, NULL, 'A'},
	    {"scope", required_argument, NULL, 's'},
	    {"htm", required_argument, NULL, 'm'},
	    {"htu", required_argument, NULL, 'u'},
	    {"ttl", required_argument, NULL, 't'},
	    {"age", required_argument, NULL, 'x'},
	    {NULL, 0, NULL, 0},
	};
	const char *key_path = NULL, *grant_text = NULL;
	struct dp_trusted_issuer ti = {0};
	struct dp_config cfg = {0};
	struct mint_request req = {.ttl = 60};
	struct dp_err err = {""};
	struct dp_grant *g = NULL;
	struct dp_trust *trust;
	struct dp_key *key;
	char jti[DP_ID_LEN], *tok = NULL;
	int c, age = 0;

	dp_log_init("mint_token", DP_LOG_WARN);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			key_path = optarg;
			break;
		case 'i':
			ti.issuer = optarg;
			break;
		case 'j':
			ti.jwks_file = optarg;
			break;
		case 'I':
			req.issuer = optarg;
			break;
		case 'a':
			req.agent = optarg;
			break;
		case 'g':
			grant_text = optarg;
			break;
		case 'A':
			req.audience = optarg;
			break;
		case 's':
			req.scope = optarg;
			break;
		case 'm':
			req.htm = optarg;
			break;
		case 'u':
			req.htu = optarg;
			break;
		case 't':
			req.ttl = atoi(optarg);
			break;
		case 'x':
			age = atoi(optarg);
			break;
		default:
			return 2;
		}
	}
	if (!key_path || !ti.issuer || !ti.jwks_file || !req.issuer || !req.agent || !grant_text) {
		fprintf(stderr, "mint_token: missing arguments\n");
		return 2;
	}
	key = dp_key_load_or_create(key_path, &err);
	if (!key) {
		printf("%s\n", err.msg);
		return 1;
	}
	cfg.issuer = (char *)req.issuer;
	cfg.issuers = &ti;
	cfg.n_issuers = 1;
	trust = trust_new(&cfg, &err);
	if (!trust || grant_verify(trust, grant_text, req.issuer, req.agent, dp_now(), &g, &err)) {
		printf("grant: %s\n", err.msg);
		return 1;
	}
	req.grant = g;
	req.session = "sess-test";
	req.now = dp_now() - age;
	if (mint_token(key, &req, &tok, jti, NULL, &err)) {
		printf("mint: %s\n", err.msg);
		return 1;
	}
	printf("%s\n", tok);
	free(tok);
	grant_free(g);
	trust_free(trust);
	dp_key_free(key);
	return 0;
}
