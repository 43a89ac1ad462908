// SPDX-License-Identifier: MIT
/*
 * cli_token: `deputy grant` (issue a grant JWT from an issuer key, for hosts without an
 * IdP, and print that key's public JWKS for deputyd's jwks_file) and `deputy verify` (what
 * a backend does with a delegation token). Neither talks to deputyd.
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <deputy/verify.h>

#include "cli.h"
#include "config.h"
#include "jws.h"

#define GRANT_DEFAULT_TTL 3600
#define GRANT_MAX_TTL (366 * 86400)
#define GRANT_MAX_VALUES 64
#define CLI_CONFIG_MAX (1024 * 1024)

static const char grant_usage[] =
    "usage: deputy grant --key PEM --iss URI --user USER --agent NAME --scope \"S …\"\n"
    "                    --resource URI… [--ttl D] [--aud URI | --config FILE]\n"
    "       deputy grant --key PEM --jwks\n"
    "\n"
    "Prints a grant JWT signed with the issuer key PEM (EC P-256 -> ES256, RSA -> RS256;\n"
    "kid = the key's RFC 7638 thumbprint), for hosts where no IdP issues grants.\n"
    "\n"
    "  --key PEM        the issuer's private key (unencrypted PEM)\n"
    "  --iss URI        the issuer, as listed in deputyd's trusted_issuers\n"
    "  --user USER      the user the agent acts for (claim sub)\n"
    "  --agent NAME     the agent allowed to act (NAME or agent:NAME; claim may_act.sub)\n"
    "  --scope S…       the scopes the user allows, space-separated; repeatable\n"
    "  --resource URI…  the API base URIs the user allows; repeatable, several values\n"
    "  --ttl D          lifetime: seconds, or a number with s, m, h or d (default 1h)\n"
    "  --aud URI        deputyd's issuer URI (claim aud); by default the \"issuer\" of\n"
    "                   deputyd's config: --config FILE, $DEPUTY_CONFIG, or\n"
    "                   /etc/deputy/deputy.json\n"
    "  --jwks           print the public JWKS of --key instead (for a jwks_file) and exit\n"
    "\n"
    "A grant lets whoever holds it run agents as USER: keep the file it goes to readable by\n"
    "that user only, mode 0600 (umask 077).\n";

static const char verify_usage[] =
    "usage: deputy verify --jwks FILE|URL --audience AUD [--scope S] [--issuer ISS] TOKEN\n"
    "       deputy verify --grant FILE [--agent NAME] [--config FILE]\n"
    "\n"
    "Verifies a deputy delegation token as a backend does: ES256 only, typ at+jwt, a kid\n"
    "of the JWKS, the signature, exp, iat/nbf (60 s skew), aud, and sub, jti and act.sub.\n"
    "TOKEN may be - to read it from stdin. Prints the claims and exits 0 when valid;\n"
    "prints the reason and exits 1 when not.\n"
    "\n"
    "  --jwks FILE|URL  deputyd's JWKS (its state directory's jwks.json, or\n"
    "                   http://127.0.0.1:8471/.well-known/jwks.json)\n"
    "  --audience AUD   this API's base URI; the token's aud must name it\n"
    "  --scope S        a scope the token must carry\n"
    "  --issuer ISS     the deputyd issuer the token must come from\n"
    "\n"
    "With --grant, checks a grant exactly as deputyd would, with deputyd's config\n"
    "(--config FILE, $DEPUTY_CONFIG, or /etc/deputy/deputy.json): prints its claims and\n"
    "the verdict; --agent NAME also checks that the grant lets agent NAME act.\n";

/* "--name value" or "--name=value": the value, advancing *i; NULL when argv[*i] is not
 * --name. A missing value is reported and *bad set. */
static const char *opt_value(int argc, char **argv, int *i, const char *name, int *bad)
{
	size_t n = strlen(name);
	const char *a = argv[*i];

	if (strncmp(a, name, n) != 0)
		return NULL;
	if (a[n] == '=')
		return a + n + 1;
	if (a[n] != '\0')
		return NULL;
	if (*i + 1 >= argc) {
		cli_fail(argv[0], "%s needs a value", name);
		*bad = 1;
		return NULL;
	}
	return argv[++*i];
}

/* Seconds from "3600", "90s", "15m", "8h", "1d"; -1 when not that. */
static long parse_duration(const char *s)
{
	char *end;
	long v, mult = 1;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || v <= 0)
		return -1;
	if (*end) {
		if (end[1])
			return -1;
		switch (*end) {
		case 's':
			mult = 1;
			break;
		case 'm':
			mult = 60;
			break;
		case 'h':
			mult = 3600;
			break;
		case 'd':
			mult = 86400;
			break;
		default:
			return -1;
		}
	}
	if (v > GRANT_MAX_TTL / mult)
		return -1;
	return v * mult;
}

static bool plain_text(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

/* The "issuer" of deputyd's config, for a grant's default audience. */
static char *config_issuer(const char *path, struct dp_err *err)
{
	json_error_t jerr;
	json_t *root;
	char *text = NULL, *iss = NULL;
	size_t len = 0;
	int r = dp_read_file(path, CLI_CONFIG_MAX, &text, &len);

	if (r) {
		dp_err_set(err, "%s: %s", path, strerror(-r));
		return NULL;
	}
	root = json_loadb(text, len, 0, &jerr);
	free(text);
	if (json_is_string(json_object_get(root, "issuer")))
		iss = strdup(json_string_value(json_object_get(root, "issuer")));
	else
		dp_err_set(err, "%s: no \"issuer\" string", path);
	json_decref(root);
	return iss;
}

static int grant_print_jwks(const char *key_path)
{
	struct dp_err err = {""};
	struct dp_key *key = dp_key_load_private_pem(key_path, &err);
	char *jwks;

	if (!key)
		return cli_fail("grant", "%s", err.msg);
	jwks = dp_key_jwks_json(key);
	dp_key_free(key);
	if (!jwks)
		return cli_fail("grant", "cannot encode the JWKS");
	printf("%s\n", jwks);
	free(jwks);
	return 0;
}

/* Over 100 lines: most of it is the option loop and each option's own check, which read
 * best beside each other; the grant itself is built in the last few lines. */
int cmd_grant(int argc, char **argv)
{
	const char *key_path = NULL, *iss = NULL, *user = NULL, *agent = NULL, *aud = NULL;
	const char *config = NULL, *ttl_text = NULL, *v;
	const char *resources[GRANT_MAX_VALUES];
	char scope[4096] = "", agent_id[256], jti[DP_ID_LEN];
	size_t n_res = 0, slen = 0;
	int jwks_only = 0, bad = 0, rc = 1;
	struct dp_err err = {""};
	struct dp_key *key = NULL;
	char *aud_owned = NULL, *tok = NULL;
	json_t *claims = NULL, *res;
	long ttl = GRANT_DEFAULT_TTL;
	int64_t now;

	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			fputs(grant_usage, stdout);
			return 0;
		}
		if ((v = opt_value(argc, argv, &i, "--key", &bad)))
			key_path = v;
		else if ((v = opt_value(argc, argv, &i, "--iss", &bad)))
			iss = v;
		else if ((v = opt_value(argc, argv, &i, "--user", &bad)))
			user = v;
		else if ((v = opt_value(argc, argv, &i, "--agent", &bad)))
			agent = v;
		else if ((v = opt_value(argc, argv, &i, "--aud", &bad)))
			aud = v;
		else if ((v = opt_value(argc, argv, &i, "--config", &bad)))
			config = v;
		else if ((v = opt_value(argc, argv, &i, "--ttl", &bad)))
			ttl_text = v;
		else if ((v = opt_value(argc, argv, &i, "--scope", &bad))) {
			size_t n = strlen(v);

			if (slen + n + 2 > sizeof(scope))
				return cli_fail("grant", "--scope: too long");
			if (slen)
				scope[slen++] = ' ';
			memcpy(scope + slen, v, n + 1);
			slen += n;
		} else if ((v = opt_value(argc, argv, &i, "--resource", &bad))) {
			/* --resource A B C: every following argument that is not an option */
			for (;;) {
				if (n_res == GRANT_MAX_VALUES)
					return cli_fail("grant", "more than %d resources",
							GRANT_MAX_VALUES);
				resources[n_res++] = v;
				if (i + 1 >= argc || argv[i + 1][0] == '-')
					break;
				v = argv[++i];
			}
		} else if (strcmp(argv[i], "--jwks") == 0)
			jwks_only = 1;
		else if (!bad) {
			cli_fail("grant", "unexpected argument \"%s\" (see --help)", argv[i]);
			return 2;
		}
		if (bad)
			return 2;
	}
	if (!key_path) {
		cli_fail("grant", "--key PEM is required (see --help)");
		return 2;
	}
	if (jwks_only)
		return grant_print_jwks(key_path);
	if (!iss || !user || !agent || !slen || !n_res) {
		cli_fail("grant", "--iss, --user, --agent, --scope and --resource are required "
				  "(see --help)");
		return 2;
	}
	if (!plain_text(iss) || !plain_text(user) || !plain_text(scope))
		return cli_fail("grant", "--iss, --user and --scope must be non-empty text");
	if (strncmp(agent, "agent:", 6) == 0)
		agent += 6;
	if (!*agent || strpbrk(agent, " \t") || !plain_text(agent) || strlen(agent) > 200)
		return cli_fail("grant", "--agent: \"%s\" is not an agent name", agent);
	snprintf(agent_id, sizeof(agent_id), "agent:%s", agent);
	for (size_t i = 0; i < n_res; i++) {
		if (!plain_text(resources[i]) || strpbrk(resources[i], " \t"))
			return cli_fail("grant", "--resource: \"%s\" is not a URI", resources[i]);
		/* a route's audience is an http(s) URI: a bare host could never match one */
		if (strncmp(resources[i], "https://", 8) != 0 &&
		    strncmp(resources[i], "http://", 7) != 0)
			return cli_fail("grant",
					"--resource: \"%s\" has no scheme: an API base URI such "
					"as https://%s",
					resources[i], resources[i]);
	}
	if (ttl_text && (ttl = parse_duration(ttl_text)) < 0)
		return cli_fail("grant",
				"--ttl: \"%s\" is not a duration like 3600, 90s, 15m, 8h, 1d",
				ttl_text);
	if (!aud) {
		if (!config)
			config = getenv("DEPUTY_CONFIG");
		if (!config)
			config = DP_DEFAULT_CONFIG;
		aud = aud_owned = config_issuer(config, &err);
		if (!aud)
			return cli_fail(
			    "grant",
			    "no audience: give --aud URI (deputyd's issuer) or --config "
			    "FILE (%s)",
			    err.msg);
	}

	key = dp_key_load_private_pem(key_path, &err);
	if (!key) {
		cli_fail("grant", "%s", err.msg);
		goto out;
	}
	if (dp_random_id(jti)) {
		cli_fail("grant", "no randomness");
		goto out;
	}
	now = dp_now();
	res = json_array();
	for (size_t i = 0; i < n_res; i++)
		json_array_append_new(res, json_string(resources[i]));
	claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:o, s:{s:s}}", "iss", iss, "sub",
			   user, "aud", aud, "iat", (json_int_t)now, "exp", (json_int_t)(now + ttl),
			   "jti", jti, "scope", scope, "resource", res, "may_act", "sub", agent_id);
	if (!claims) {
		cli_fail("grant", "arguments are not valid UTF-8");
		goto out;
	}
	tok = dp_jws_sign(key, "JWT", claims, &err);
	if (!tok) {
		cli_fail("grant", "%s", err.msg);
		goto out;
	}
	printf("%s\n", tok);
	if (!isatty(STDOUT_FILENO))
		fprintf(stderr,
			"deputy: grant: whoever can read this grant can run agents as %s "
			"until it expires: keep its file mode 0600\n",
			user);
	rc = 0;
out:
	free(tok);
	json_decref(claims);
	dp_key_free(key);
	free(aud_owned);
	return rc;
}

/* A token from stdin: one line, surrounding whitespace dropped, bounded. */
static char *read_token_stdin(void)
{
	size_t cap = DP_JWS_MAX_LEN + 2, n;
	char *buf = malloc(cap + 1), *s, *e;

	if (!buf)
		return NULL;
	n = fread(buf, 1, cap, stdin);
	buf[n] = '\0';
	for (s = buf; isspace((unsigned char)*s); s++)
		;
	for (e = s + strlen(s); e > s && isspace((unsigned char)e[-1]); e--)
		;
	*e = '\0';
	memmove(buf, s, (size_t)(e - s) + 1);
	return buf;
}

int cmd_verify(int argc, char **argv)
{
	const char *jwks = NULL, *aud = NULL, *scope = NULL, *issuer = NULL, *token = NULL, *v;
	const char *grant = NULL, *agent = NULL, *config = NULL;
	char why[512] = "", *claims = NULL, *owned = NULL;
	deputy_verifier *ver;
	json_t *root;
	int bad = 0, rc;

	/* Shaped like grant's loop: each command names its own options, and a table of them
	 * would be no shorter than the loop. */
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			fputs(verify_usage, stdout);
			return 0;
		}
		if ((v = opt_value(argc, argv, &i, "--jwks", &bad)))
			jwks = v;
		else if ((v = opt_value(argc, argv, &i, "--audience", &bad)))
			aud = v;
		else if ((v = opt_value(argc, argv, &i, "--scope", &bad)))
			scope = v;
		else if ((v = opt_value(argc, argv, &i, "--issuer", &bad)))
			issuer = v;
		else if ((v = opt_value(argc, argv, &i, "--grant", &bad)))
			grant = v;
		else if ((v = opt_value(argc, argv, &i, "--agent", &bad)))
			agent = v;
		else if ((v = opt_value(argc, argv, &i, "--config", &bad)))
			config = v;
		else if (!bad && !token && (argv[i][0] != '-' || strcmp(argv[i], "-") == 0))
			token = argv[i];
		else if (!bad) {
			cli_fail("verify", "unexpected argument \"%.40s\" (see --help)", argv[i]);
			return 2;
		}
		if (bad)
			return 2;
	}
	if (grant && !jwks && !aud && !token)
		return cli_verify_grant(grant, agent, config);
	if (!jwks || !aud || !token || grant || agent || config) {
		cli_fail("verify", "--jwks, --audience and TOKEN are required (see --help)");
		return 2;
	}
	if (strcmp(token, "-") == 0) {
		token = owned = read_token_stdin();
		if (!token)
			return cli_fail("verify", "cannot read the token from stdin");
	}
	ver = deputy_verifier_new(jwks, why, sizeof(why));
	if (!ver) {
		free(owned);
		return cli_fail("verify", "%s", why);
	}
	rc = deputy_verify(ver, token, aud, scope, issuer, &claims, why, sizeof(why));
	deputy_verifier_free(ver);
	free(owned);
	if (rc)
		return cli_fail("verify", "%s", why);
	root = json_loads(claims, 0, NULL);
	free(claims);
	if (!root)
		return cli_fail("verify", "cannot print the claims");
	claims = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	printf("%s\n", claims ? claims : "{}");
	free(claims);
	return 0;
}
