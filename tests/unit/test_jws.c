// SPDX-License-Identifier: MIT
/* Unit tests of daemon/jws.c (and the base64url of util.c that JWS stands on). */
#include <errno.h>
#include <sys/stat.h>

#include "jwt_helpers.h"
#include "unit.h"

static void b64url_vectors(void)
{
	/* RFC 4648 §10 vectors, unpadded as RFC 7515 wants them */
	static const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *want[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
	char out[32], back[32];

	for (size_t i = 0; i < DP_ARRAY_SIZE(in); i++) {
		ssize_t n = dp_b64url_encode(in[i], strlen(in[i]), out, sizeof(out));

		check(n == (ssize_t)strlen(want[i]));
		check_str(out, want[i]);
		n = dp_b64url_decode(out, strlen(out), back, sizeof(back));
		check(n == (ssize_t)strlen(in[i]));
		check(memcmp(back, in[i], (size_t)n) == 0);
	}
	/* the URL-safe alphabet: 0xfb 0xff -> "-_8" */
	check(dp_b64url_encode("\xfb\xff", 2, out, sizeof(out)) == 3);
	check_str(out, "-_8");
}

static void b64url_refusals(void)
{
	char out[32];

	check(dp_b64url_decode("Zg==", 4, out, sizeof(out)) == -EINVAL);   /* padding */
	check(dp_b64url_decode("Z", 1, out, sizeof(out)) == -EINVAL);	   /* impossible length */
	check(dp_b64url_decode("Zh", 2, out, sizeof(out)) == -EINVAL);	   /* non-zero spare bits */
	check(dp_b64url_decode("Zm9v+A", 6, out, sizeof(out)) == -EINVAL); /* '+' is not url-safe */
	check(dp_b64url_decode("Zm9v/A", 6, out, sizeof(out)) == -EINVAL);
	check(dp_b64url_decode("Zm 9v", 5, out, sizeof(out)) == -EINVAL);
	check(dp_b64url_decode("Zm9v", 4, out, 2) == -ENOSPC);
	check(dp_b64url_encode("foo", 3, out, 4) == -ENOSPC); /* no room for the NUL */
}

static void thumbprint_rfc7638(void)
{
	/* RFC 7638 §3.1 example */
	static const char jwk_text[] =
	    "{\"kty\":\"RSA\",\"n\":"
	    "\"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT8"
	    "6zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl9"
	    "3lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL"
	    "5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0L"
	    "s1jF44-csFCur-kEgU8awapJzKnqDKgw\",\"e\":\"AQAB\",\"alg\":\"RS256\","
	    "\"kid\":\"2011-04-29\"}";
	json_t *jwk = json_loads(jwk_text, 0, NULL);
	struct dp_err err = {""};
	struct dp_key *key;
	char tp[48];

	check(jwk);
	check(dp_jwk_thumbprint(jwk, tp, &err) == 0);
	check_str(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
	/* the same key through the JWK parser: its kid is kept, the key is RS256 */
	key = dp_key_from_jwk(jwk, &err);
	json_decref(jwk);
	check(key);
	check_str(dp_key_kid(key), "2011-04-29");
	check_str(dp_key_alg(key), "RS256");
	check(!dp_key_is_private(key));
	dp_key_free(key);
}

static void thumbprint_refusals(void)
{
	struct dp_err err = {""};
	char tp[48];
	json_t *j;

	j = json_loads("{\"kty\":\"oct\",\"k\":\"AAAA\"}", 0, NULL);
	check(dp_jwk_thumbprint(j, tp, &err) == -EINVAL);
	json_decref(j);
	/* a value that would need JSON escaping is not base64url, hence refused */
	j = json_loads("{\"kty\":\"RSA\",\"n\":\"a\\\"b\",\"e\":\"AQAB\"}", 0, NULL);
	check(dp_jwk_thumbprint(j, tp, &err) == -EINVAL);
	json_decref(j);
	j = json_loads("{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\"}", 0, NULL);
	check(dp_jwk_thumbprint(j, tp, &err) == -EINVAL);
	json_decref(j);
}

static void key_create_and_reload(void)
{
	char path[256];
	struct dp_err err = {""};
	struct dp_key *k1, *k2;
	struct stat st;
	char kid[128], tp[48];
	mode_t old;

	snprintf(path, sizeof(path), "%s/state/dir/signing-key.pem", th_tmpdir());
	old = umask(0); /* creation must not depend on the umask */
	k1 = dp_key_load_or_create(path, &err);
	umask(old);
	if (!k1)
		fail("create: %s", err.msg);
	check(stat(path, &st) == 0);
	check((st.st_mode & 07777) == 0600);
	check_str(dp_key_alg(k1), "ES256");
	check(dp_key_is_private(k1));
	check(strlen(dp_key_kid(k1)) == 43);
	check(dp_jwk_thumbprint(dp_key_jwk(k1), tp, &err) == 0);
	check_str(dp_key_kid(k1), tp);
	snprintf(kid, sizeof(kid), "%s", dp_key_kid(k1));
	dp_key_free(k1);

	k2 = dp_key_load_or_create(path, &err);
	if (!k2)
		fail("reload: %s", err.msg);
	check_str(dp_key_kid(k2), kid);
	dp_key_free(k2);
}

static void key_refuses_loose_mode(void)
{
	char path[256];
	struct dp_err err = {""};
	struct dp_key *k;

	snprintf(path, sizeof(path), "%s/loose-key.pem", th_tmpdir());
	k = dp_key_load_or_create(path, &err);
	check(k);
	dp_key_free(k);
	check(chmod(path, 0640) == 0);
	k = dp_key_load_or_create(path, &err);
	check(!k);
	check(strstr(err.msg, "accessible by group or others"));
	check(strstr(err.msg, "chmod 600"));
}

static void key_refuses_rsa_signing_key(void)
{
	const char *path = th_write_key("RSA", "rsa-signing");
	struct dp_err err = {""};
	struct dp_key *k;

	check(chmod(path, 0600) == 0);
	k = dp_key_load_or_create(path, &err);
	check(!k);
	check(strstr(err.msg, "must be EC P-256"));
	/* but an issuer key for `deputy grant` may be RSA */
	k = dp_key_load_private_pem(path, &err);
	check(k);
	check_str(dp_key_alg(k), "RS256");
	dp_key_free(k);
}

static void key_refuses_garbage(void)
{
	char path[256];
	struct dp_err err = {""};
	FILE *f;

	snprintf(path, sizeof(path), "%s/garbage.pem", th_tmpdir());
	f = fopen(path, "w");
	check(f);
	fputs("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", f);
	fclose(f);
	check(chmod(path, 0600) == 0);
	check(!dp_key_load_or_create(path, &err));
	check(strstr(err.msg, "not an unencrypted private key PEM"));
}

static void round_trip(const char *type)
{
	struct dp_err err = {""};
	struct dp_key *k = dp_key_load_private_pem(th_write_key(type, "rt"), &err);
	struct dp_keyset *ks;
	json_t *claims = json_pack("{s:s, s:i}", "sub", "alice", "n", 7);
	struct dp_jws jws;
	char *tok;

	check(k);
	tok = dp_jws_sign(k, "JWT", claims, &err);
	json_decref(claims);
	if (!tok)
		fail("sign: %s", err.msg);
	ks = th_keyset_of(k);
	check(ks && dp_keyset_count(ks) == 1);
	check(dp_jws_parse(tok, &jws, &err) == 0);
	check_str(jws.alg, dp_key_alg(k));
	check_str(jws.kid, dp_key_kid(k));
	check_str(jws.typ, "JWT");
	check_str(json_string_value(json_object_get(jws.claims, "sub")), "alice");
	if (dp_jws_verify(&jws, dp_keyset_find(ks, jws.kid), &err))
		fail("verify: %s", err.msg);
	if (strcmp(type, "EC") == 0)
		check(jws.sig_len == 64); /* JOSE r||s, not DER */
	dp_jws_clear(&jws);
	free(tok);
	dp_keyset_free(ks);
	dp_key_free(k);
}

static void round_trip_es256(void)
{
	round_trip("EC");
}

static void round_trip_rs256(void)
{
	round_trip("RSA");
}

static int verify_text(const char *tok, const struct dp_key *k, struct dp_err *err)
{
	struct dp_jws jws;
	int r = dp_jws_parse(tok, &jws, err);

	if (r)
		return r;
	r = dp_jws_verify(&jws, k, err);
	dp_jws_clear(&jws);
	return r;
}

static void tamper_detected(void)
{
	struct dp_err err = {""};
	struct dp_key *k = dp_key_load_private_pem(th_write_key("EC", "tamper"), &err);
	json_t *claims = json_pack("{s:s}", "scope", "read");
	char *tok = dp_jws_sign(k, "JWT", claims, &err), *bad;
	size_t n = strlen(tok);

	json_decref(claims);
	check(tok);
	check(verify_text(tok, k, &err) == 0);
	bad = th_swap_payload(tok, "{\"scope\":\"write\"}");
	check(verify_text(bad, k, &err) == -EACCES);
	check_str(err.msg, "bad signature");
	free(bad);
	/* flip one signature character */
	bad = strdup(tok);
	bad[n - 5] = bad[n - 5] == 'A' ? 'B' : 'A';
	check(verify_text(bad, k, &err) == -EACCES);
	check_str(err.msg, "bad signature");
	/* a DER signature (what OpenSSL emits natively) is not a JOSE signature */
	strcpy(strrchr(bad, '.') + 1, "MEUCIQ");
	check(verify_text(bad, k, &err) == -EACCES);
	check_str(err.msg, "bad signature");
	free(bad);
	free(tok);
	dp_key_free(k);
}

static void alg_confusion_refused(void)
{
	struct dp_err err = {""};
	const char *ec_path = th_write_key("EC", "conf-ec");
	struct dp_key *ec = dp_key_load_private_pem(ec_path, &err);
	struct dp_key *rsa = dp_key_load_private_pem(th_write_key("RSA", "conf-rsa"), &err);
	json_t *claims = json_pack("{s:s}", "sub", "a");
	char *pem = th_public_pem(ec_path), *tok, *good, hdr[256];

	check(ec && rsa);
	/* HS256 keyed with the public key PEM */
	snprintf(hdr, sizeof(hdr), "{\"alg\":\"HS256\",\"kid\":\"%s\"}", dp_key_kid(ec));
	tok = th_hs256(hdr, "{\"sub\":\"a\"}", pem, strlen(pem));
	check(verify_text(tok, ec, &err) == -EACCES);
	check_str(err.msg, "HMAC alg \"HS256\" refused");
	free(tok);
	tok = th_craft("{\"alg\":\"none\"}", "{\"sub\":\"a\"}", "", 0);
	check(verify_text(tok, ec, &err) == -EACCES);
	check_str(err.msg, "alg \"none\" refused");
	free(tok);
	tok = th_craft("{\"alg\":\"nOnE\"}", "{\"sub\":\"a\"}", "", 0);
	check(verify_text(tok, ec, &err) == -EACCES);
	check_str(err.msg, "alg \"none\" refused");
	free(tok);
	/* a valid ES256 token presented to an RSA key, and vice versa */
	good = dp_jws_sign(ec, NULL, claims, &err);
	check(verify_text(good, rsa, &err) == -EACCES);
	check_str(err.msg, "alg \"ES256\" does not match the key's RS256");
	free(good);
	good = dp_jws_sign(rsa, NULL, claims, &err);
	check(verify_text(good, ec, &err) == -EACCES);
	check_str(err.msg, "alg \"RS256\" does not match the key's ES256");
	free(good);
	/* ES384 claimed for a P-256 key */
	tok = th_craft("{\"alg\":\"ES384\"}", "{}",
		       "0123456789012345678901234567890123456789012345678901234567890123", 64);
	check(verify_text(tok, ec, &err) == -EACCES);
	check_str(err.msg, "alg \"ES384\" does not match the key's ES256");
	free(tok);
	free(pem);
	json_decref(claims);
	dp_key_free(ec);
	dp_key_free(rsa);
}

static void parse_refusals(void)
{
	static const struct {
		const char *tok, *why;
	} cases[] = {
	    {"abc", "not a compact JWS (need 3 parts)"},
	    {"a.b", "not a compact JWS (need 3 parts)"},
	    {"a.b.c.d", "not a compact JWS (need 3 parts)"},
	    {"e30.e30.e30.", "not a compact JWS (need 3 parts)"},
	    {"e3=.e30.", "bad base64url in header"},
	    {"e30.e3+.", "bad base64url in payload"},
	    {"eyJhbGciOiJFUzI1NiJ9.e30.AA=", "bad base64url in signature"},
	    {"bm90IGpzb24.e30.", "header is not JSON"},			    /* "not json" */
	    {"W10.e30.", "header is not a JSON object"},		    /* [] */
	    {"eyJhbGciOiJFUzI1NiJ9.WzFd.", "payload is not a JSON object"}, /* [1] */
	    {"eyJhbGciOiJFUzI1NiJ9.IngifQ.", "payload is not JSON"},
	    {"e30.e30.", "header has no alg"},
	    {"eyJhbGciOjF9.e30.", "header has no alg"}, /* {"alg":1} */
	    /* {"alg":"ES256","kid":5} */
	    {"eyJhbGciOiJFUzI1NiIsImtpZCI6NX0.e30.", "header kid is not a string"},
	    /* {"alg":"ES256","crit":["b64"]} */
	    {"eyJhbGciOiJFUzI1NiIsImNyaXQiOlsiYjY0Il19.e30.",
	     "header has crit extensions (none are supported)"},
	    /* {"alg":"none","alg":"ES256"}: duplicate members */
	    {"eyJhbGciOiJub25lIiwiYWxnIjoiRVMyNTYifQ.e30.", "header is not JSON"},
	};
	struct dp_err err;
	struct dp_jws jws;

	for (size_t i = 0; i < DP_ARRAY_SIZE(cases); i++) {
		err.msg[0] = '\0';
		if (dp_jws_parse(cases[i].tok, &jws, &err) == 0)
			fail("case %zu parsed", i);
		if (strcmp(err.msg, cases[i].why) != 0)
			fail("case %zu: \"%s\", want \"%s\"", i, err.msg, cases[i].why);
	}
}

static void parse_refuses_oversized(void)
{
	size_t n = DP_JWS_MAX_LEN + 100;
	char *big = malloc(n + 1);
	struct dp_err err = {""};
	struct dp_jws jws;

	memset(big, 'A', n);
	big[10] = '.';
	big[20] = '.';
	big[n] = '\0';
	check(dp_jws_parse(big, &jws, &err) == -E2BIG);
	check(strstr(err.msg, "too large"));
	free(big);
}

static void jwk_refusals(void)
{
	struct dp_err err = {""};
	struct dp_key *k;
	json_t *j;

	/* a point that is not on P-256 (x = y = 1) */
	j = json_loads("{\"kty\":\"EC\",\"crv\":\"P-256\","
		       "\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\","
		       "\"y\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\"}",
		       0, NULL);
	k = dp_key_from_jwk(j, &err);
	json_decref(j);
	check(!k);
	check_str(err.msg, "invalid EC JWK");
	/* an RSA key of 1024 bits */
	j = json_loads(
	    "{\"kty\":\"RSA\",\"e\":\"AQAB\",\"n\":\"wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\"}",
	    0, NULL);
	k = dp_key_from_jwk(j, &err);
	json_decref(j);
	check(!k);
	check(strstr(err.msg, "RSA key of 1024 bits"));
	/* private material in a JWKS, and a symmetric key */
	j = json_loads("{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}", 0, NULL);
	k = dp_key_from_jwk(j, &err);
	json_decref(j);
	check(!k);
	check(strstr(err.msg, "private material"));
}

static void jwk_alg_must_match(void)
{
	struct dp_err err = {""};
	struct dp_key *ec = dp_key_load_private_pem(th_write_key("EC", "jwkalg"), &err);
	json_t *jwk = json_deep_copy(dp_key_jwk(ec));
	struct dp_key *k;

	json_object_set_new(jwk, "alg", json_string("ES384"));
	k = dp_key_from_jwk(jwk, &err);
	check(!k);
	check_str(err.msg, "JWK alg \"ES384\" is not ES256");
	json_object_set_new(jwk, "alg", json_string("ES256"));
	json_object_set_new(jwk, "use", json_string("enc"));
	k = dp_key_from_jwk(jwk, &err);
	check(!k);
	check_str(err.msg, "JWK use \"enc\" is not sig");
	json_object_del(jwk, "use");
	k = dp_key_from_jwk(jwk, &err);
	check(k);
	check_str(dp_key_kid(k), dp_key_kid(ec));
	dp_key_free(k);
	json_decref(jwk);
	dp_key_free(ec);
}

static void keyset_skips_bad_keys(void)
{
	struct dp_err err = {""};
	struct dp_key *ec = dp_key_load_private_pem(th_write_key("EC", "ks"), &err);
	char *pub = json_dumps(dp_key_jwk(ec), JSON_COMPACT);
	char text[2048];
	struct dp_keyset *ks;

	snprintf(text, sizeof(text),
		 "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"},%s,{\"kty\":\"EC\"},%s]}", pub, pub);
	ks = dp_keyset_parse(text, strlen(text), &err);
	check(ks);
	check(dp_keyset_count(ks) == 1); /* the duplicate kid is dropped too */
	check(dp_keyset_find(ks, dp_key_kid(ec)));
	check(!dp_keyset_find(ks, "nope"));
	dp_keyset_free(ks);
	check(!dp_keyset_parse("{\"keys\":{}}", 11, &err));
	check_str(err.msg, "JWKS has no \"keys\" array");
	check(!dp_keyset_parse("nope", 4, &err));
	free(pub);
	dp_key_free(ec);
}

static void printable_strips_controls(void)
{
	char out[16];

	dp_jws_printable("a\nb\x1b[31mc", out, sizeof(out));
	check_str(out, "a?b?[31mc");
	dp_jws_printable("0123456789abcdefghij", out, sizeof(out));
	check_str(out, "0123456789ab...");
	check(strlen(out) == 15);
	dp_jws_printable(NULL, out, sizeof(out));
	check_str(out, "");
}

static void scope_tokens(void)
{
	check(dp_scope_has("email:send email:read", "email:read"));
	check(dp_scope_has("  email:send  ", "email:send"));
	check(!dp_scope_has("email:sender", "email:send"));
	check(!dp_scope_has("email:send", "email"));
	check(!dp_scope_has("email:send", ""));
	check(!dp_scope_has(NULL, "x"));
}

int main(void)
{
	dp_log_init("test_jws", DP_LOG_WARN);
	RUN(b64url_vectors);
	RUN(b64url_refusals);
	RUN(thumbprint_rfc7638);
	RUN(thumbprint_refusals);
	RUN(key_create_and_reload);
	RUN(key_refuses_loose_mode);
	RUN(key_refuses_rsa_signing_key);
	RUN(key_refuses_garbage);
	RUN(round_trip_es256);
	RUN(round_trip_rs256);
	RUN(tamper_detected);
	RUN(alg_confusion_refused);
	RUN(parse_refusals);
	RUN(parse_refuses_oversized);
	RUN(jwk_refusals);
	RUN(jwk_alg_must_match);
	RUN(keyset_skips_bad_keys);
	RUN(printable_strips_controls);
	RUN(scope_tokens);
	th_cleanup();
	UNIT_EXIT();
}
