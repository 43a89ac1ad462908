// SPDX-License-Identifier: MIT
/*
 * jws: JWS compact serialisation (RFC 7515 §7.1) — building a signed token from a key and
 * a payload, and splitting, decoding and checking one. A token is verified only when its
 * header alg equals its key's alg, so "none", HMAC and any algorithm confusion are refused
 * here, whoever calls. What the claims mean is the callers' business (claims.c, grant.c,
 * verify.c).
 */
#include "jws.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void dp_jws_printable(const char *in, char *out, size_t outsz)
{
	size_t o = 0, max = outsz > 0 ? outsz - 1 : 0;

	if (outsz == 0)
		return;
	if (!in)
		in = "";
	for (size_t i = 0; in[i] && o < max; i++) {
		unsigned char c = (unsigned char)in[i];

		/* Control bytes (and DEL) would let a hostile token forge log lines. */
		out[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	/* Mark the cut so a reader knows the string went on. */
	if (in[0] && strlen(in) > o && max >= 3) {
		o = o > max - 3 ? max - 3 : o;
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

/* ---- signing --------------------------------------------------------------------------- */

char *dp_jws_sign_raw(const struct dp_key *key, const char *typ, const char *payload, size_t len,
		      struct dp_err *err)
{
	const char *alg, *kid;
	char header[256];
	unsigned char sig[DP_KEY_SIG_MAX];
	size_t siglen = sizeof(sig), hlen, need, o;
	char *tok;
	ssize_t r;
	int n;

	if (!dp_key_is_private(key)) {
		dp_err_set(err, "cannot sign with a public key");
		return NULL;
	}
	/* kid is a thumbprint or came from a JWKS we checked to be a string; typ is ours.
	 * Neither holds a quote, so this is valid JSON without an encoder. */
	alg = dp_key_alg(key);
	kid = dp_key_kid(key);
	if (typ)
		n = snprintf(header, sizeof(header),
			     "{\"alg\":\"%s\",\"typ\":\"%s\",\"kid\":\"%s\"}", alg, typ, kid);
	else
		n = snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"kid\":\"%s\"}", alg, kid);
	if (n < 0 || (size_t)n >= sizeof(header) || strchr(kid, '"') ||
	    (typ && strpbrk(typ, "\"\\"))) {
		dp_err_set(err, "JWS header too long or unsafe");
		return NULL;
	}
	hlen = (size_t)n;
	need = DP_B64URL_LEN(hlen) + DP_B64URL_LEN(len) + DP_B64URL_LEN(sizeof(sig)) + 2;
	tok = malloc(need);
	if (!tok) {
		dp_err_set(err, "out of memory");
		return NULL;
	}
	r = dp_b64url_encode(header, hlen, tok, need);
	if (r < 0)
		goto fail;
	o = (size_t)r;
	tok[o++] = '.';
	r = dp_b64url_encode(payload, len, tok + o, need - o);
	if (r < 0)
		goto fail;
	o += (size_t)r;
	if (dp_key_sign(key, tok, o, sig, &siglen)) {
		dp_err_set(err, "signing failed");
		goto fail_quiet;
	}
	tok[o++] = '.';
	r = dp_b64url_encode(sig, siglen, tok + o, need - o);
	if (r < 0)
		goto fail;
	return tok;
fail:
	dp_err_set(err, "JWS encoding failed");
fail_quiet:
	free(tok);
	return NULL;
}

char *dp_jws_sign(const struct dp_key *key, const char *typ, const json_t *claims,
		  struct dp_err *err)
{
	char *payload;
	char *tok;

	if (!json_is_object(claims)) {
		dp_err_set(err, "claims must be a JSON object");
		return NULL;
	}
	payload = json_dumps(claims, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!payload) {
		dp_err_set(err, "cannot encode claims");
		return NULL;
	}
	tok = dp_jws_sign_raw(key, typ, payload, strlen(payload), err);
	free(payload);
	return tok;
}

/* ---- parsing and verification ---------------------------------------------------------- */

static json_t *part_json(const char *p, size_t n, const char *what, struct dp_err *err)
{
	char *buf = malloc(n + 1);
	json_error_t jerr;
	json_t *obj;
	ssize_t r;

	if (!buf) {
		dp_err_set(err, "out of memory");
		return NULL;
	}
	r = dp_b64url_decode(p, n, buf, n);
	if (r < 0) {
		free(buf);
		dp_err_set(err, "bad base64url in %s", what);
		return NULL;
	}
	/* Duplicate members are refused: two parsers could pick different ones. */
	obj = json_loadb(buf, (size_t)r, JSON_REJECT_DUPLICATES, &jerr);
	free(buf);
	if (!obj) {
		dp_err_set(err, "%s is not JSON", what);
		return NULL;
	}
	if (!json_is_object(obj)) {
		json_decref(obj);
		dp_err_set(err, "%s is not a JSON object", what);
		return NULL;
	}
	return obj;
}

int dp_jws_parse(const char *token, struct dp_jws *out, struct dp_err *err)
{
	const char *d1, *d2;
	size_t len;
	ssize_t r;
	json_t *v;

	memset(out, 0, sizeof(*out));
	if (!token) {
		dp_err_set(err, "no token");
		return -EINVAL;
	}
	len = strnlen(token, DP_JWS_MAX_LEN + 1);
	if (len > DP_JWS_MAX_LEN) {
		dp_err_set(err, "too large (over %d bytes)", DP_JWS_MAX_LEN);
		return -E2BIG;
	}
	d1 = memchr(token, '.', len);
	d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
	if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token))) {
		dp_err_set(err, "not a compact JWS (need 3 parts)");
		return -EINVAL;
	}
	out->header = part_json(token, (size_t)(d1 - token), "header", err);
	if (!out->header)
		goto fail;
	out->claims = part_json(d1 + 1, (size_t)(d2 - d1 - 1), "payload", err);
	if (!out->claims)
		goto fail;
	out->alg = json_string_value(json_object_get(out->header, "alg"));
	if (!out->alg) {
		dp_err_set(err, "header has no alg");
		goto fail;
	}
	v = json_object_get(out->header, "kid");
	if (v && !(out->kid = json_string_value(v))) {
		dp_err_set(err, "header kid is not a string");
		goto fail;
	}
	v = json_object_get(out->header, "typ");
	if (v && !(out->typ = json_string_value(v))) {
		dp_err_set(err, "header typ is not a string");
		goto fail;
	}
	/* RFC 7515 §4.1.11: extensions we do not implement (b64 false…) must be refused. */
	if (json_object_get(out->header, "crit")) {
		dp_err_set(err, "header has crit extensions (none are supported)");
		goto fail;
	}
	out->signing_input_len = (size_t)(d2 - token);
	out->signing_input = strndup(token, out->signing_input_len);
	out->sig = malloc(len - (size_t)(d2 + 1 - token) + 1);
	if (!out->signing_input || !out->sig) {
		dp_err_set(err, "out of memory");
		goto fail;
	}
	r = dp_b64url_decode(d2 + 1, len - (size_t)(d2 + 1 - token), out->sig,
			     len - (size_t)(d2 + 1 - token) + 1);
	if (r < 0) {
		dp_err_set(err, "bad base64url in signature");
		goto fail;
	}
	out->sig_len = (size_t)r;
	return 0;
fail:
	dp_jws_clear(out);
	return -EINVAL;
}

bool dp_jws_alg_is_none(const char *alg)
{
	return alg && strcasecmp(alg, "none") == 0;
}

bool dp_jws_alg_is_hmac(const char *alg)
{
	return alg && strncasecmp(alg, "HS", 2) == 0;
}

int dp_jws_verify(const struct dp_jws *jws, const struct dp_key *key, struct dp_err *err)
{
	char b[64];
	int r;

	if (!jws->alg || !jws->signing_input) {
		dp_err_set(err, "not a parsed JWS");
		return -EINVAL;
	}
	if (dp_jws_alg_is_none(jws->alg)) {
		dp_err_set(err, "alg \"none\" refused");
		return -EACCES;
	}
	if (dp_jws_alg_is_hmac(jws->alg)) {
		dp_err_set(err, "HMAC alg \"%s\" refused", DP_SAFE(b, jws->alg));
		return -EACCES;
	}
	if (strcmp(jws->alg, dp_key_alg(key)) != 0) {
		dp_err_set(err, "alg \"%s\" does not match the key's %s", DP_SAFE(b, jws->alg),
			   dp_key_alg(key));
		return -EACCES;
	}
	r = dp_key_verify(key, jws->signing_input, jws->signing_input_len, jws->sig, jws->sig_len);
	if (r == -ENOMEM)
		dp_err_set(err, "out of memory");
	else if (r)
		dp_err_set(err, "bad signature");
	return r;
}

void dp_jws_clear(struct dp_jws *jws)
{
	json_decref(jws->header);
	json_decref(jws->claims);
	free(jws->signing_input);
	free(jws->sig);
	memset(jws, 0, sizeof(*jws));
}
