// SPDX-License-Identifier: MIT
/*
 * jwk: converting public keys between OpenSSL and JWK form, and RFC 7638 thumbprints (the
 * kid of deputyd's key). Whether a key may be used (kid, use, alg) is key.c's business.
 */
#include "jwk.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include "jws.h"

#define P256_COORD 32

static char *b64url_alloc(const void *in, size_t n)
{
	char *out = malloc(DP_B64URL_LEN(n));

	if (out && dp_b64url_encode(in, n, out, DP_B64URL_LEN(n)) < 0) {
		free(out);
		return NULL;
	}
	return out;
}

static int bn_to_b64url(const BIGNUM *bn, size_t pad, char **out)
{
	size_t n = pad ? pad : (size_t)BN_num_bytes(bn);
	unsigned char *buf;

	if (n == 0)
		n = 1;
	buf = malloc(n);
	if (!buf)
		return -ENOMEM;
	if (BN_bn2binpad(bn, buf, (int)n) < 0) {
		free(buf);
		return -EINVAL;
	}
	*out = b64url_alloc(buf, n);
	free(buf);
	return *out ? 0 : -ENOMEM;
}

/* Decodes a base64url JWK member; *out malloc'd. */
static int jwk_member_bytes(const json_t *jwk, const char *name, size_t max, unsigned char **out,
			    size_t *len)
{
	const char *s = json_string_value(json_object_get(jwk, name));
	size_t n;
	ssize_t r;

	if (!s)
		return -ENOENT;
	n = strlen(s);
	if (n == 0 || n > DP_B64URL_LEN(max))
		return -EINVAL;
	*out = malloc(n);
	if (!*out)
		return -ENOMEM;
	r = dp_b64url_decode(s, n, *out, n);
	if (r <= 0 || (size_t)r > max) {
		free(*out);
		*out = NULL;
		return -EINVAL;
	}
	*len = (size_t)r;
	return 0;
}

static bool is_b64url_string(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
			return false;
	return true;
}

/* ---- thumbprint (RFC 7638) ------------------------------------------------------------ */

int dp_jwk_thumbprint(const json_t *jwk, char out[48], struct dp_err *err)
{
	const char *kty = json_string_value(json_object_get(jwk, "kty"));
	unsigned char digest[32];
	unsigned int dlen = 0;
	char *canon;
	size_t need;
	int n;

	if (!json_is_object(jwk) || !kty) {
		dp_err_set(err, "JWK has no kty");
		return -EINVAL;
	}
	/* §3.2: only the required members, lexicographic order, no whitespace. The values are
	 * base64url (or a fixed curve name), so they need no JSON escaping once checked. */
	if (strcmp(kty, "EC") == 0) {
		const char *crv = json_string_value(json_object_get(jwk, "crv"));
		const char *x = json_string_value(json_object_get(jwk, "x"));
		const char *y = json_string_value(json_object_get(jwk, "y"));

		if (!crv || !is_b64url_string(crv) || !is_b64url_string(x) ||
		    !is_b64url_string(y)) {
			dp_err_set(err, "EC JWK needs crv, x and y");
			return -EINVAL;
		}
		need = strlen(crv) + strlen(x) + strlen(y) + 64;
		canon = malloc(need);
		if (!canon)
			return -ENOMEM;
		n = snprintf(canon, need,
			     "{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", crv, x,
			     y);
	} else if (strcmp(kty, "RSA") == 0) {
		const char *e = json_string_value(json_object_get(jwk, "e"));
		const char *nn = json_string_value(json_object_get(jwk, "n"));

		if (!is_b64url_string(e) || !is_b64url_string(nn)) {
			dp_err_set(err, "RSA JWK needs n and e");
			return -EINVAL;
		}
		need = strlen(e) + strlen(nn) + 64;
		canon = malloc(need);
		if (!canon)
			return -ENOMEM;
		n = snprintf(canon, need, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", e, nn);
	} else {
		char k[64];

		dp_err_set(err, "unsupported JWK kty \"%s\"", DP_SAFE(k, kty));
		return -EINVAL;
	}
	if (n < 0 || (size_t)n >= need ||
	    !EVP_Digest(canon, (size_t)n, digest, &dlen, EVP_sha256(), NULL)) {
		free(canon);
		dp_err_set(err, "cannot hash JWK");
		return -EINVAL;
	}
	free(canon);
	if (dp_b64url_encode(digest, dlen, out, 48) < 0) {
		dp_err_set(err, "thumbprint too long");
		return -ENOSPC;
	}
	return 0;
}

/* ---- OpenSSL key -> JWK ----------------------------------------------------------------- */

int dp_jwk_from_pkey(EVP_PKEY *pkey, json_t **out)
{
	BIGNUM *a = NULL, *b = NULL;
	char *sa = NULL, *sb = NULL;
	json_t *jwk = NULL;
	int err = -EINVAL;

	if (EVP_PKEY_is_a(pkey, "EC")) {
		if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &a) ||
		    !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &b))
			goto out;
		if (bn_to_b64url(a, P256_COORD, &sa) || bn_to_b64url(b, P256_COORD, &sb))
			goto out;
		jwk = json_pack("{s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x", sa, "y",
				sb);
	} else if (EVP_PKEY_is_a(pkey, "RSA")) {
		if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &a) ||
		    !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &b))
			goto out;
		if (bn_to_b64url(a, 0, &sa) || bn_to_b64url(b, 0, &sb))
			goto out;
		jwk = json_pack("{s:s, s:s, s:s}", "kty", "RSA", "n", sa, "e", sb);
	} else {
		goto out;
	}
	if (!jwk) {
		err = -ENOMEM;
		goto out;
	}
	*out = jwk;
	err = 0;
out:
	BN_free(a);
	BN_free(b);
	free(sa);
	free(sb);
	return err;
}

/* ---- JWK -> OpenSSL key ----------------------------------------------------------------- */

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM *params)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY *pkey = NULL;

	if (!ctx)
		return NULL;
	if (EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
	return pkey;
}

static EVP_PKEY *jwk_ec_pkey(const json_t *jwk)
{
	const char *crv = json_string_value(json_object_get(jwk, "crv"));
	unsigned char *x = NULL, *y = NULL, point[1 + 2 * P256_COORD];
	size_t xl = 0, yl = 0;
	EVP_PKEY *pkey = NULL;
	EVP_PKEY_CTX *check = NULL;
	OSSL_PARAM params[3];

	if (!crv || strcmp(crv, "P-256") != 0)
		return NULL;
	if (jwk_member_bytes(jwk, "x", P256_COORD, &x, &xl) ||
	    jwk_member_bytes(jwk, "y", P256_COORD, &y, &yl) || xl != P256_COORD || yl != P256_COORD)
		goto out;
	point[0] = 0x04; /* SEC1 uncompressed */
	memcpy(point + 1, x, P256_COORD);
	memcpy(point + 1 + P256_COORD, y, P256_COORD);
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
	params[1] =
	    OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point));
	params[2] = OSSL_PARAM_construct_end();
	pkey = pkey_fromdata("EC", params);
	if (!pkey)
		goto out;
	/* fromdata does not promise the point is on the curve; an off-curve point is the
	 * classic invalid-curve attack surface, so check it. */
	check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (!check || EVP_PKEY_public_check(check) != 1) {
		EVP_PKEY_free(pkey);
		pkey = NULL;
	}
out:
	EVP_PKEY_CTX_free(check);
	free(x);
	free(y);
	return pkey;
}

static EVP_PKEY *jwk_rsa_pkey(const json_t *jwk)
{
	unsigned char *n = NULL, *e = NULL;
	size_t nl = 0, el = 0;
	BIGNUM *bn = NULL, *be = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY *pkey = NULL;

	if (jwk_member_bytes(jwk, "n", DP_JWK_RSA_MAX_BITS / 8, &n, &nl) ||
	    jwk_member_bytes(jwk, "e", 8, &e, &el))
		goto out;
	bn = BN_bin2bn(n, (int)nl, NULL);
	be = BN_bin2bn(e, (int)el, NULL);
	bld = OSSL_PARAM_BLD_new();
	if (!bn || !be || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
		goto out;
	params = OSSL_PARAM_BLD_to_param(bld);
	if (params)
		pkey = pkey_fromdata("RSA", params);
out:
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	free(n);
	free(e);
	return pkey;
}

EVP_PKEY *dp_jwk_to_pkey(const json_t *jwk, struct dp_err *err)
{
	const char *kty = json_string_value(json_object_get(jwk, "kty"));
	EVP_PKEY *pkey;
	char b[64];

	if (!json_is_object(jwk) || !kty) {
		dp_err_set(err, "JWK has no kty");
		return NULL;
	}
	if (strcmp(kty, "EC") == 0) {
		pkey = jwk_ec_pkey(jwk);
	} else if (strcmp(kty, "RSA") == 0) {
		pkey = jwk_rsa_pkey(jwk);
	} else {
		dp_err_set(err, "unsupported JWK kty \"%s\"", DP_SAFE(b, kty));
		return NULL;
	}
	if (!pkey)
		dp_err_set(err, "invalid %s JWK", kty);
	return pkey;
}
