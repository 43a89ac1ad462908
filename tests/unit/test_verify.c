// SPDX-License-Identifier: MIT
/*
 * Unit tests of daemon/lib/verify.c, the public verification API (include/deputy/verify.h):
 * a valid token, every refusal with its exact reason, and a key rotation seen through a
 * JWKS URL served on loopback.
 */
#include <deputy/verify.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "jwt_helpers.h"
#include "unit.h"

#define ISS "https://deputy.test"
#define AUD "https://mail.test"

static struct dp_key *key, *rsa, *next;
static char *jwks; /* key's public JWKS, inline */
static int64_t now;

/* A token signed by k with typ and these claims (a JSON object text), or the usual ones. */
static char *sign_with(const struct dp_key *k, const char *typ, const char *claims)
{
	struct dp_err err = {""};
	char *tok = dp_jws_sign_raw(k, typ, claims, strlen(claims), &err);

	if (!tok) {
		fprintf(stderr, "sign: %s\n", err.msg);
		exit(1);
	}
	return tok;
}

/* The claims of a good token, with exp/iat/nbf relative to now and extra members. */
static char *claims_text(int64_t exp_off, const char *extra)
{
	static char buf[1024];

	snprintf(buf, sizeof(buf),
		 "{\"iss\":\"" ISS "\",\"sub\":\"alice@example.com\",\"aud\":\"" AUD "\","
		 "\"act\":{\"sub\":\"agent:mailbot\"},\"scope\":\"email:send\",\"jti\":\"j1\","
		 "\"iat\":%lld,\"exp\":%lld%s%s}",
		 (long long)now, (long long)(now + exp_off), extra ? "," : "", extra ? extra : "");
	return buf;
}

/* Verifies tok against the inline JWKS; returns the reason ("" when valid). */
static const char *reason_of(const char *tok, const char *aud, const char *scope, const char *iss)
{
	static char err[256];
	deputy_verifier *v = deputy_verifier_new(jwks, err, sizeof(err));
	char *claims = NULL;
	int r;

	if (!v)
		return err;
	err[0] = '\0';
	r = deputy_verify(v, tok, aud, scope, iss, &claims, err, sizeof(err));
	deputy_verifier_free(v);
	if (r == 0 && (!claims || !strstr(claims, "\"sub\":\"alice@example.com\"")))
		snprintf(err, sizeof(err), "valid, but claims are %s", claims ? claims : "NULL");
	else if (r == 0 && err[0])
		snprintf(err, sizeof(err), "valid, but a reason was set");
	else if (r != 0 && !err[0])
		snprintf(err, sizeof(err), "refused without a reason");
	free(claims);
	return err;
}

static void valid_token(void)
{
	char *tok = sign_with(key, "at+jwt", claims_text(60, NULL));

	check_str(reason_of(tok, AUD, "email:send", ISS), "");
	check_str(reason_of(tok, AUD, NULL, NULL), "");
	free(tok);
}

static void valid_variants(void)
{
	char *tok;

	/* RFC 7515 §4.1.9: the media type may carry its "application/" prefix. */
	tok = sign_with(key, "application/at+jwt", claims_text(60, NULL));
	check_str(reason_of(tok, AUD, "email:send", NULL), "");
	free(tok);
	/* aud as an array that holds the audience; iat within the clock skew. */
	tok = sign_with(key, "at+jwt",
			"{\"sub\":\"alice@example.com\",\"aud\":[\"x\",\"" AUD "\"],\"jti\":\"j\","
			"\"act\":{\"sub\":\"agent:a\"},\"exp\":99999999999,\"iat\":0}");
	check_str(reason_of(tok, AUD, NULL, NULL), "");
	free(tok);
}

static void one_shot_form(void)
{
	char *tok = sign_with(key, "at+jwt", claims_text(60, NULL)), *claims = NULL;
	char err[256] = "";

	check(deputy_verify_token(jwks, tok, AUD, "email:send", &claims, err, sizeof(err)) == 0);
	check(claims && strstr(claims, "\"jti\":\"j1\""));
	free(claims);
	claims = NULL;
	check(deputy_verify_token(jwks, tok, "https://other", NULL, &claims, err, sizeof(err)) ==
	      -1);
	check(claims == NULL);
	check_str(err, "wrong audience (want \"https://other\")");
	free(tok);
}

static void claim_refusals(void)
{
	static const struct {
		int64_t exp_off;
		const char *extra, *want;
	} cases[] = {
	    {-1, NULL, "token expired"},
	    {0, NULL, "token expired"},
	    {60, "\"nbf\":99999999999", "token not yet valid (nbf)"},
	    {60, "\"nbf\":\"soon\"", "token not yet valid (nbf)"},
	};
	char *tok;

	for (size_t i = 0; i < DP_ARRAY_SIZE(cases); i++) {
		tok = sign_with(key, "at+jwt", claims_text(cases[i].exp_off, cases[i].extra));
		check_str(reason_of(tok, AUD, NULL, NULL), cases[i].want);
		free(tok);
	}
	tok = sign_with(key, "at+jwt", "{\"sub\":\"u\",\"aud\":\"" AUD "\"}");
	check_str(reason_of(tok, AUD, NULL, NULL), "token has no exp");
	free(tok);
	tok = sign_with(key, "at+jwt", "{\"sub\":\"u\",\"aud\":\"" AUD "\",\"exp\":\"later\"}");
	check_str(reason_of(tok, AUD, NULL, NULL), "token exp is not a number");
	free(tok);
	tok = sign_with(key, "at+jwt",
			"{\"sub\":\"u\",\"aud\":\"" AUD
			"\",\"exp\":99999999999,\"iat\":99999999999}");
	check_str(reason_of(tok, AUD, NULL, NULL), "token not yet valid (iat)");
	free(tok);
	tok = sign_with(key, "at+jwt", "{\"sub\":\"u\",\"exp\":99999999999}");
	check_str(reason_of(tok, AUD, NULL, NULL), "wrong audience (want \"" AUD "\")");
	free(tok);
}

static void audience_issuer_scope_refusals(void)
{
	char *tok = sign_with(key, "at+jwt", claims_text(60, NULL));

	check_str(reason_of(tok, "https://evil.test", NULL, NULL),
		  "wrong audience (want \"https://evil.test\")");
	check_str(reason_of(tok, NULL, NULL, NULL), "wrong audience (want \"\")");
	check_str(reason_of(tok, AUD, NULL, "https://other-deputy"),
		  "wrong issuer (want \"https://other-deputy\")");
	check_str(reason_of(tok, AUD, "email:read", NULL), "scope \"email:read\" not granted");
	/* a scope is a whole space-separated word, not a prefix */
	check_str(reason_of(tok, AUD, "email", NULL), "scope \"email\" not granted");
	free(tok);
}

static void required_claim_refusals(void)
{
	static const struct {
		const char *drop, *want;
	} cases[] = {
	    {"\"sub\":\"alice@example.com\",", "token has no sub"},
	    {"\"jti\":\"j1\",", "token has no jti"},
	    {"\"act\":{\"sub\":\"agent:mailbot\"},", "token has no act.sub"},
	};

	for (size_t i = 0; i < DP_ARRAY_SIZE(cases); i++) {
		char buf[1024], *at, *tok;

		snprintf(buf, sizeof(buf), "%s", claims_text(60, NULL));
		at = strstr(buf, cases[i].drop);
		if (!at)
			fail("case %zu: %s not in the claims", i, cases[i].drop);
		memmove(at, at + strlen(cases[i].drop), strlen(at + strlen(cases[i].drop)) + 1);
		tok = sign_with(key, "at+jwt", buf);
		check_str(reason_of(tok, AUD, NULL, NULL), cases[i].want);
		free(tok);
	}
}

static void header_refusals(void)
{
	const char *claims = claims_text(60, NULL);
	char *tok, *pem;

	tok = th_craft("{\"alg\":\"none\",\"typ\":\"at+jwt\"}", claims, "", 0);
	check_str(reason_of(tok, AUD, NULL, NULL), "alg \"none\" refused (only ES256)");
	free(tok);
	/* HS256 keyed with the public key: the algorithm-confusion attack. */
	pem = th_public_pem(th_write_key("EC", "verify-hs"));
	tok = th_hs256("{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", claims, pem, strlen(pem));
	check_str(reason_of(tok, AUD, NULL, NULL), "alg \"HS256\" refused (only ES256)");
	free(tok);
	free(pem);
	tok = sign_with(rsa, "at+jwt", claims);
	check_str(reason_of(tok, AUD, NULL, NULL), "alg \"RS256\" refused (only ES256)");
	free(tok);
	tok = sign_with(key, NULL, claims);
	check_str(reason_of(tok, AUD, NULL, NULL), "token has no typ (want at+jwt)");
	free(tok);
	tok = sign_with(key, "JWT", claims);
	check_str(reason_of(tok, AUD, NULL, NULL), "typ \"JWT\" is not at+jwt");
	free(tok);
	tok = th_craft("{\"alg\":\"ES256\",\"typ\":\"at+jwt\"}", claims, "sig", 3);
	check_str(reason_of(tok, AUD, NULL, NULL), "token has no kid");
	free(tok);
	tok = sign_with(next, "at+jwt", claims);
	{
		char want[128];

		snprintf(want, sizeof(want), "unknown kid \"%s\"", dp_key_kid(next));
		check_str(reason_of(tok, AUD, NULL, NULL), want);
	}
	free(tok);
}

static void signature_and_format_refusals(void)
{
	char *tok = sign_with(key, "at+jwt", claims_text(60, NULL)), *forged;

	/* a payload raised to another audience keeps the old signature */
	forged = th_swap_payload(tok, claims_text(3600, "\"admin\":true"));
	check_str(reason_of(forged, AUD, NULL, NULL), "bad signature");
	free(forged);
	check_str(reason_of("a.b", AUD, NULL, NULL),
		  "malformed token: not a compact JWS (need 3 parts)");
	check(strncmp(reason_of("", AUD, NULL, NULL), "malformed token: ", 17) == 0);
	free(tok);
}

static void bad_arguments(void)
{
	char err[256] = "";

	check(deputy_verifier_new(NULL, err, sizeof(err)) == NULL);
	check_str(err, "no JWKS given");
	check(deputy_verifier_new("{\"nokeys\":1}", err, sizeof(err)) == NULL);
	check_str(err, "JWKS has no \"keys\" array");
	check(deputy_verify(NULL, "x", AUD, NULL, NULL, NULL, err, sizeof(err)) == -1);
	check_str(err, "no verifier or no token");
	/* a too short buffer still gets a terminated, cut reason */
	check(deputy_verifier_new(NULL, err, 4) == NULL);
	check_str(err, "no ");
}

/* ---- a JWKS URL on loopback, for rotation ------------------------------------------------ */

static struct {
	int fd;
	int port;
	pthread_mutex_t lock;
	char *body; /* the JWKS served now */
	atomic_int fetches;
	atomic_bool stop;
	pthread_t thread;
} srv = {.fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER};

static void *srv_loop(void *arg)
{
	(void)arg;
	while (!atomic_load(&srv.stop)) {
		char req[4096], head[128];
		size_t n = 0;
		int c = accept(srv.fd, NULL, NULL);

		if (c < 0)
			continue;
		while (n < sizeof(req) - 1) {
			ssize_t r = read(c, req + n, sizeof(req) - 1 - n);

			if (r <= 0)
				break;
			n += (size_t)r;
			req[n] = '\0';
			if (strstr(req, "\r\n\r\n"))
				break;
		}
		pthread_mutex_lock(&srv.lock);
		snprintf(head, sizeof(head),
			 "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
			 strlen(srv.body));
		if (write(c, head, strlen(head)) < 0 || write(c, srv.body, strlen(srv.body)) < 0)
			perror("test jwks server");
		pthread_mutex_unlock(&srv.lock);
		atomic_fetch_add(&srv.fetches, 1);
		close(c);
	}
	return NULL;
}

static int srv_start(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);

	srv.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (srv.fd < 0 || bind(srv.fd, (struct sockaddr *)&a, sizeof(a)) || listen(srv.fd, 8) ||
	    getsockname(srv.fd, (struct sockaddr *)&a, &alen))
		return -errno;
	srv.port = ntohs(a.sin_port);
	return pthread_create(&srv.thread, NULL, srv_loop, NULL) ? -EAGAIN : 0;
}

static void srv_serve(char *body)
{
	pthread_mutex_lock(&srv.lock);
	free(srv.body);
	srv.body = body;
	pthread_mutex_unlock(&srv.lock);
}

static void srv_stop(void)
{
	if (srv.fd < 0)
		return;
	atomic_store(&srv.stop, true);
	shutdown(srv.fd, SHUT_RDWR);
	pthread_join(srv.thread, NULL);
	close(srv.fd);
	free(srv.body);
}

/* Both keys' JWKS: what an issuer publishes while it rotates. */
static char *two_key_jwks(void)
{
	json_t *j = json_pack("{s:[O,O]}", "keys", dp_key_jwk(key), dp_key_jwk(next));
	char *s = json_dumps(j, JSON_COMPACT);

	json_decref(j);
	return s;
}

/* An unknown kid refetches a URL's keys, but not more often than every 30 s: a stream of
 * tokens with random kids must not turn a backend into a fetch amplifier. */
static void kid_rotation_through_url(void)
{
	char url[64], err[256] = "";
	char *old_tok = sign_with(key, "at+jwt", claims_text(600, NULL));
	char *new_tok = sign_with(next, "at+jwt", claims_text(600, NULL));
	deputy_verifier *v;
	int r;

	srv_serve(dp_key_jwks_json(key));
	if (srv_start())
		skip("no loopback listener: %s", strerror(errno));
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/jwks.json", srv.port);
	v = deputy_verifier_new(url, err, sizeof(err));
	if (!v)
		fail("verifier_new(%s): %s", url, err);
	check(atomic_load(&srv.fetches) == 1);
	r = deputy_verify(v, old_tok, AUD, NULL, NULL, NULL, err, sizeof(err));
	check(r == 0);
	srv_serve(two_key_jwks());
	r = deputy_verify(v, new_tok, AUD, NULL, NULL, NULL, err, sizeof(err));
	check(r == -1);
	check(strncmp(err, "unknown kid", 11) == 0);
	check(atomic_load(&srv.fetches) == 1); /* too soon to ask again */
	/* VERIFY_REFETCH_S is 30 s and the verifier reads the real clock. */
	sleep(31);
	r = deputy_verify(v, new_tok, AUD, NULL, NULL, NULL, err, sizeof(err));
	if (r != 0)
		fail("after 31 s the rotated key is still refused: %s", err);
	check(atomic_load(&srv.fetches) == 2);
	check(deputy_verify(v, old_tok, AUD, NULL, NULL, NULL, err, sizeof(err)) == 0);
	check(deputy_verify(v, new_tok, AUD, NULL, NULL, NULL, err, sizeof(err)) == 0);
	check(atomic_load(&srv.fetches) == 2); /* known kids fetch nothing */
	deputy_verifier_free(v);
	free(old_tok);
	free(new_tok);
}

int main(void)
{
	struct dp_err err = {""};

	dp_log_init("test_verify", DP_LOG_WARN);
	now = dp_now();
	key = dp_key_load_private_pem(th_write_key("EC", "verify-key"), &err);
	rsa = dp_key_load_private_pem(th_write_key("RSA", "verify-rsa"), &err);
	next = dp_key_load_private_pem(th_write_key("EC", "verify-next"), &err);
	if (!key || !rsa || !next) {
		fprintf(stderr, "keys: %s\n", err.msg);
		return 1;
	}
	jwks = dp_key_jwks_json(key);
	{
		/* the RSA key is in the JWKS too: only its alg may refuse it, not its kid */
		json_t *j = json_pack("{s:[O,O]}", "keys", dp_key_jwk(key), dp_key_jwk(rsa));

		free(jwks);
		jwks = json_dumps(j, JSON_COMPACT);
		json_decref(j);
	}
	RUN(valid_token);
	RUN(valid_variants);
	RUN(one_shot_form);
	RUN(claim_refusals);
	RUN(audience_issuer_scope_refusals);
	RUN(required_claim_refusals);
	RUN(header_refusals);
	RUN(signature_and_format_refusals);
	RUN(bad_arguments);
	RUN(kid_rotation_through_url);
	srv_stop();
	free(jwks);
	dp_key_free(key);
	dp_key_free(rsa);
	dp_key_free(next);
	th_cleanup();
	UNIT_EXIT();
}
