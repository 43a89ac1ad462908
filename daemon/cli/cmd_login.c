// SPDX-License-Identifier: MIT
/*
 * cmd_login: `deputy login`, a grant from the user's OpenID Provider. The OAuth 2.0 Device
 * Authorization Grant (RFC 8628) by default, an RFC 8693 token exchange with
 * --subject-token. The scopes and resources (RFC 8707) the user names are asked for; the
 * access token the IdP returns is the grant (deputyd checks it as it checks any grant). It is
 * stored, mode 0600, where `deputy run --agent NAME` finds it (cli_grant_path), and written
 * only whole: a refusal, a timeout or an expired code leaves no file behind.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "jwks_fetch.h"
#include "jws.h"

#define LOGIN_MAX_RESOURCES 64
#define LOGIN_FORM_MAX 16384
#define LOGIN_DEFAULT_INTERVAL 5 /* RFC 8628 §3.2 */
#define LOGIN_MAX_WAIT 1800	 /* seconds, whatever expires_in says */

static const char login_help[] =
    "usage: deputy login --issuer URI --agent NAME --scope \"S …\" --resource URI…\n"
    "                    [--client-id ID] [--ca-file PEM] [--subject-token FILE]\n"
    "\n"
    "Gets a grant from an OpenID Provider and stores it for `deputy run --agent NAME`.\n"
    "By default with the device flow (RFC 8628): open the address it prints, enter the\n"
    "code, sign in; with --subject-token, by an RFC 8693 token exchange of a token you hold.\n"
    "\n"
    "  --issuer URI         the IdP, as in deputyd's trusted_issuers (its OIDC discovery\n"
    "                       or RFC 8414 metadata names the endpoints)\n"
    "  --agent NAME         the agent the grant is for\n"
    "  --scope S…           the scopes to allow, space-separated; repeatable\n"
    "  --resource URI…      the API base URIs to allow (RFC 8707); repeatable\n"
    "  --client-id ID       the OAuth client registered at the IdP (default: NAME)\n"
    "  --ca-file PEM        CA bundle for an IdP behind a private CA\n"
    "  --subject-token FILE exchange this token ('-': standard input) instead\n"
    "\n"
    "The grant goes to $XDG_CONFIG_HOME/deputy/grants/NAME.jwt (~/.config/… by default).\n";

struct login {
	const char *issuer, *agent, *client_id, *ca_file, *subject_path;
	char scope[4096];
	const char *resources[LOGIN_MAX_RESOURCES];
	size_t n_resources;
	json_t *meta; /* the IdP's metadata */
};

/* application/x-www-form-urlencoded (HTML's rules: unreserved bytes stay, the rest %XX). */
static int form_add(char *form, size_t cap, const char *name, const char *value)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(form);

	if (n + strlen(name) + 2 >= cap)
		return -ENOSPC;
	n += (size_t)sprintf(form + n, "%s%s=", n ? "&" : "", name);
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (n + 4 >= cap)
			return -ENOSPC;
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || (*p && strchr("-._~", *p))) {
			form[n++] = (char)*p;
		} else {
			form[n++] = '%';
			form[n++] = hex[*p >> 4];
			form[n++] = hex[*p & 15];
		}
	}
	form[n] = '\0';
	return 0;
}

/* The request parameters both flows send: client, scope, resources. */
static int form_common(const struct login *l, char *form, size_t cap)
{
	int r = form_add(form, cap, "client_id", l->client_id);

	if (!r)
		r = form_add(form, cap, "scope", l->scope);
	for (size_t i = 0; !r && i < l->n_resources; i++)
		r = form_add(form, cap, "resource", l->resources[i]);
	return r;
}

/* POST form to the metadata's endpoint; the JSON object answered (errors included: OAuth
 * answers them as 400 with a JSON body), or NULL with err. */
static json_t *login_post(const struct login *l, const char *endpoint, const char *form,
			  long *status, struct dp_err *err)
{
	const char *url = jwks_meta_url(l->meta, endpoint, err);
	struct jwks_http req = {
	    .url = url, .ca_file = l->ca_file, .form = form, .any_status = true};
	char *text = NULL;
	size_t len;
	json_t *j;

	if (!url || jwks_http_do(&req, &text, &len, status, err))
		return NULL;
	j = json_loadb(text, len, 0, NULL);
	free(text);
	if (!json_is_object(j)) {
		json_decref(j);
		dp_err_set(err, "%s: HTTP status %ld, not a JSON object", url, *status);
		return NULL;
	}
	return j;
}

static const char *jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* The access token of a successful token response: it must be a JWS, for deputyd checks a
 * grant's signature; an opaque token could never serve. */
static char *login_token(const json_t *resp, struct dp_err *err)
{
	const char *tok = jstr(resp, "access_token");
	struct dp_jws jws;
	struct dp_err perr = {""};

	if (!tok || !*tok) {
		dp_err_set(err, "the IdP's answer has no access_token");
		return NULL;
	}
	if (dp_jws_parse(tok, &jws, &perr)) {
		dp_err_set(err,
			   "the IdP issued an access token that is not a JWT (%s): configure it "
			   "to issue JWT access tokens for deputyd's audience",
			   perr.msg);
		return NULL;
	}
	dp_jws_clear(&jws);
	return strdup(tok);
}

static const char *oauth_error(const json_t *resp, char *buf, size_t cap)
{
	const char *e = jstr(resp, "error"), *d = jstr(resp, "error_description");

	snprintf(buf, cap, "%s%s%s%s", e ? e : "error", d ? " (" : "", d ? d : "", d ? ")" : "");
	return buf;
}

/* RFC 8628 §3.4/§3.5: poll at the interval until the user has decided or the code expired. */
static char *login_poll(const struct login *l, const char *device_code, long interval,
			time_t deadline, struct dp_err *err)
{
	char form[LOGIN_FORM_MAX] = "", why[400];
	long status;

	if (form_add(form, sizeof(form), "grant_type",
		     "urn:ietf:params:oauth:grant-type:device_code") ||
	    form_add(form, sizeof(form), "device_code", device_code) ||
	    form_add(form, sizeof(form), "client_id", l->client_id)) {
		dp_err_set(err, "request too large");
		return NULL;
	}
	for (;;) {
		json_t *resp;
		const char *e;
		char *tok;

		if (time(NULL) + interval > deadline) {
			dp_err_set(err, "the device code expired before the sign-in was completed");
			return NULL;
		}
		sleep((unsigned)interval);
		resp = login_post(l, "token_endpoint", form, &status, err);
		if (!resp)
			return NULL;
		e = jstr(resp, "error");
		if (status == 200 && !e) {
			tok = login_token(resp, err);
			json_decref(resp);
			return tok;
		}
		if (e && strcmp(e, "authorization_pending") == 0) {
			json_decref(resp);
			continue;
		}
		if (e && strcmp(e, "slow_down") == 0) {
			interval += 5; /* §3.5: for this and every later request */
			json_decref(resp);
			continue;
		}
		if (e && strcmp(e, "access_denied") == 0)
			dp_err_set(err, "the sign-in was denied");
		else if (e && strcmp(e, "expired_token") == 0)
			dp_err_set(err, "the device code expired before the sign-in was completed");
		else
			dp_err_set(err, "token endpoint: %s", oauth_error(resp, why, sizeof(why)));
		json_decref(resp);
		return NULL;
	}
}

static char *login_device(const struct login *l, struct dp_err *err)
{
	char form[LOGIN_FORM_MAX] = "", why[400];
	const char *device_code, *user_code, *uri, *complete;
	json_int_t expires, interval;
	json_t *resp;
	long status;
	char *tok;

	if (form_common(l, form, sizeof(form))) {
		dp_err_set(err, "request too large");
		return NULL;
	}
	resp = login_post(l, "device_authorization_endpoint", form, &status, err);
	if (!resp)
		return NULL;
	device_code = jstr(resp, "device_code");
	user_code = jstr(resp, "user_code");
	uri = jstr(resp, "verification_uri");
	complete = jstr(resp, "verification_uri_complete");
	expires = json_integer_value(json_object_get(resp, "expires_in"));
	interval = json_integer_value(json_object_get(resp, "interval"));
	if (status != 200 || !device_code || !user_code || !uri || expires <= 0) {
		dp_err_set(err, "device authorization: %s",
			   status == 200 ? "the answer lacks device_code, user_code, "
					   "verification_uri or expires_in"
					 : oauth_error(resp, why, sizeof(why)));
		json_decref(resp);
		return NULL;
	}
	if (interval <= 0)
		interval = LOGIN_DEFAULT_INTERVAL;
	fprintf(stderr, "To sign in, open %s and enter the code %s\n", uri, user_code);
	if (complete)
		fprintf(stderr, "(or open %s)\n", complete);
	fflush(stderr);
	tok = login_poll(l, device_code, (long)interval,
			 time(NULL) + (expires < LOGIN_MAX_WAIT ? expires : LOGIN_MAX_WAIT), err);
	json_decref(resp);
	return tok;
}

/* RFC 8693 §2.1: the user's token for a grant with the scopes and resources asked for. */
static char *login_exchange(const struct login *l, struct dp_err *err)
{
	char form[LOGIN_FORM_MAX] = "", why[400], *subject = cli_read_token(l->subject_path);
	json_t *resp;
	long status;
	char *tok = NULL;

	if (!subject || !*subject) {
		free(subject);
		dp_err_set(err, "cannot read the subject token from %s", l->subject_path);
		return NULL;
	}
	if (form_add(form, sizeof(form), "grant_type",
		     "urn:ietf:params:oauth:grant-type:token-exchange") ||
	    form_add(form, sizeof(form), "subject_token", subject) ||
	    form_add(form, sizeof(form), "subject_token_type",
		     "urn:ietf:params:oauth:token-type:access_token") ||
	    form_common(l, form, sizeof(form))) {
		free(subject);
		dp_err_set(err, "request too large");
		return NULL;
	}
	free(subject);
	resp = login_post(l, "token_endpoint", form, &status, err);
	if (!resp)
		return NULL;
	if (status == 200 && !jstr(resp, "error"))
		tok = login_token(resp, err);
	else
		dp_err_set(err, "token exchange: %s", oauth_error(resp, why, sizeof(why)));
	json_decref(resp);
	return tok;
}

static int login_args(int argc, char **argv, struct login *l)
{
	static const struct option opts[] = {{"issuer", required_argument, NULL, 'i'},
					     {"agent", required_argument, NULL, 'a'},
					     {"scope", required_argument, NULL, 's'},
					     {"resource", required_argument, NULL, 'r'},
					     {"client-id", required_argument, NULL, 'c'},
					     {"ca-file", required_argument, NULL, 'C'},
					     {"subject-token", required_argument, NULL, 't'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	size_t slen = 0;
	int opt;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'i':
			l->issuer = optarg;
			break;
		case 'a':
			l->agent = strncmp(optarg, "agent:", 6) == 0 ? optarg + 6 : optarg;
			break;
		case 's':
			if (slen + strlen(optarg) + 2 > sizeof(l->scope))
				return cli_fail("login", "--scope: too long");
			slen += (size_t)sprintf(l->scope + slen, "%s%s", slen ? " " : "", optarg);
			break;
		case 'r':
			/* --resource A B C: also the following arguments that are not options */
			for (const char *v = optarg; v;
			     v = optind < argc && argv[optind][0] != '-' ? argv[optind++] : NULL) {
				if (l->n_resources == LOGIN_MAX_RESOURCES)
					return cli_fail("login", "more than %d resources",
							LOGIN_MAX_RESOURCES);
				l->resources[l->n_resources++] = v;
			}
			break;
		case 'c':
			l->client_id = optarg;
			break;
		case 'C':
			l->ca_file = optarg;
			break;
		case 't':
			l->subject_path = optarg;
			break;
		case 'h':
			fputs(login_help, stdout);
			return -1;
		default:
			fputs(login_help, stderr);
			return 2;
		}
	}
	if (optind < argc)
		return cli_fail("login", "unexpected argument \"%s\" (see --help)", argv[optind]),
		       2;
	if (!l->issuer || !l->agent || !slen || !l->n_resources)
		return cli_fail("login", "--issuer, --agent, --scope and --resource are required "
					 "(see --help)"),
		       2;
	if (!*l->agent || strpbrk(l->agent, " \t/") || strlen(l->agent) > 200 || l->agent[0] == '.')
		return cli_fail("login", "--agent: \"%s\" is not an agent name", l->agent);
	if (!l->client_id)
		l->client_id = l->agent;
	return 0;
}

int cmd_login(int argc, char **argv)
{
	struct login l = {0};
	struct dp_err err = {""};
	char path[PATH_MAX], *tok;
	int r = login_args(argc, argv, &l);

	if (r)
		return r < 0 ? 0 : r;
	if (cli_grant_path(l.agent, path, sizeof(path)))
		return cli_fail("login", "no config directory: set HOME or XDG_CONFIG_HOME");
	if (jwks_discover(l.issuer, l.ca_file, &l.meta, &err))
		return cli_fail("login", "%s: %s", l.issuer, err.msg);
	tok = l.subject_path ? login_exchange(&l, &err) : login_device(&l, &err);
	json_decref(l.meta);
	if (!tok)
		return cli_fail("login", "%s", err.msg);
	r = cli_grant_store(path, tok);
	free(tok);
	if (r)
		return cli_fail("login", "%s: %s", path, strerror(-r));
	fprintf(stderr, "deputy: login: grant for agent:%s stored in %s\n", l.agent, path);
	return 0;
}
