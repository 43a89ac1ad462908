// SPDX-License-Identifier: MIT
/*
 * jws: keys (PEM and JWK), RFC 7638 thumbprints, and JWS compact signing and verification
 * over OpenSSL 3 EVP. The algorithm is a property of the key, never of the token: a token
 * is verified only when its header alg equals its key's alg, so "none", HMAC and any
 * algorithm confusion are refused here, whoever calls.
 *
 * A struct dp_key is immutable once built, so one key may be used from several threads;
 * its optional presign pool (below) is the one mutable part and has its own lock.
 *
 * Presign pool (deputyd's ES256 key only): an ECDSA signature is s = k⁻¹(z + r·d) with
 * r = (kG).x; everything but the last multiplication depends on the nonce k alone, and that
 * is ~90% of the work. deputyd precomputes (k⁻¹, r) pairs in idle time with
 * ECDSA_sign_setup, and a token takes one: ECDSA_do_sign_ex then costs a few microseconds.
 * A pair is popped under the lock, used for exactly one signature and wiped; reusing one
 * would reveal the private key, so a forked child (which would hold a copy of the pool)
 * drops every pair it inherited. An empty pool is never waited for: the token gets a
 * normal signature. The nonce API is deprecated in OpenSSL 3 but present, hence the
 * API level below, for this file only.
 */
#define OPENSSL_API_COMPAT 0x10100000L

#include "jws.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#define KEY_FILE_MAX (64 * 1024)
#define JWKS_MAX_KEYS 64
#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 8192
#define P256_COORD 32

enum key_kty { KTY_EC, KTY_RSA };

struct presign_pair {
	BIGNUM *kinv, *r;
};

struct presign_pool {
	pthread_mutex_t lock;
	EC_KEY *ec; /* the same private key, as the nonce API wants it */
	EVP_MD *sha256;
	struct presign_pair *pairs;
	size_t cap, n;
	unsigned fork_gen; /* presign_fork_gen when the pairs were made */
	uint64_t hits, misses;
};

struct dp_key {
	EVP_PKEY *pkey;
	enum key_kty kty;
	bool private;
	char alg[8];
	char kid[128];
	json_t *jwk; /* public JWK with kid, alg and use */
	/* A signing context initialised once and copied per signature: a fresh
	 * EVP_DigestSignInit costs more than the ECDSA signature itself (provider fetches). */
	EVP_MD_CTX *sign_tmpl;
	struct presign_pool *pool; /* NULL unless dp_key_presign_enable */
};

struct dp_keyset {
	struct dp_key **keys;
	size_t n;
};

/* ---- small helpers ------------------------------------------------------------------ */

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

/* ---- keys ------------------------------------------------------------------------------ */

static bool pkey_is_p256(EVP_PKEY *pkey)
{
	char group[64];
	size_t glen = 0;

	if (!EVP_PKEY_is_a(pkey, "EC"))
		return false;
	if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
					    &glen))
		return false;
	return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
}

static int pkey_public_jwk(EVP_PKEY *pkey, enum key_kty kty, json_t **out)
{
	BIGNUM *a = NULL, *b = NULL;
	char *sa = NULL, *sb = NULL;
	json_t *jwk = NULL;
	int err = -EINVAL;

	if (kty == KTY_EC) {
		if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &a) ||
		    !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &b))
			goto out;
		if (bn_to_b64url(a, P256_COORD, &sa) || bn_to_b64url(b, P256_COORD, &sb))
			goto out;
		jwk = json_pack("{s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x", sa, "y",
				sb);
	} else {
		if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &a) ||
		    !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &b))
			goto out;
		if (bn_to_b64url(a, 0, &sa) || bn_to_b64url(b, 0, &sb))
			goto out;
		jwk = json_pack("{s:s, s:s, s:s}", "kty", "RSA", "n", sa, "e", sb);
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

/* Wraps pkey (taking ownership) into a dp_key with its alg, public JWK and kid. */
static struct dp_key *key_wrap(EVP_PKEY *pkey, bool private, const char *kid, struct dp_err *err)
{
	struct dp_key *key = calloc(1, sizeof(*key));
	char thumb[48];

	if (!key) {
		EVP_PKEY_free(pkey);
		dp_err_set(err, "out of memory");
		return NULL;
	}
	key->pkey = pkey;
	key->private = private;
	if (pkey_is_p256(pkey)) {
		key->kty = KTY_EC;
		strcpy(key->alg, "ES256");
	} else if (EVP_PKEY_is_a(pkey, "RSA")) {
		int bits = EVP_PKEY_get_bits(pkey);

		if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS) {
			dp_err_set(err, "RSA key of %d bits (need %d to %d)", bits, RSA_MIN_BITS,
				   RSA_MAX_BITS);
			goto fail;
		}
		key->kty = KTY_RSA;
		strcpy(key->alg, "RS256");
	} else {
		dp_err_set(err, "unsupported key type (need EC P-256 or RSA)");
		goto fail;
	}
	if (pkey_public_jwk(pkey, key->kty, &key->jwk)) {
		dp_err_set(err, "cannot export the public key");
		goto fail;
	}
	if (dp_jwk_thumbprint(key->jwk, thumb, err))
		goto fail;
	if (!kid)
		kid = thumb;
	if (strlen(kid) >= sizeof(key->kid)) {
		dp_err_set(err, "kid longer than %zu bytes", sizeof(key->kid) - 1);
		goto fail;
	}
	strcpy(key->kid, kid);
	if (private) {
		key->sign_tmpl = EVP_MD_CTX_new();
		if (!key->sign_tmpl ||
		    EVP_DigestSignInit(key->sign_tmpl, NULL, EVP_sha256(), NULL, pkey) != 1) {
			dp_err_set(err, "cannot set up signing with this key");
			goto fail;
		}
	}
	if (json_object_set_new(key->jwk, "kid", json_string(key->kid)) ||
	    json_object_set_new(key->jwk, "alg", json_string(key->alg)) ||
	    json_object_set_new(key->jwk, "use", json_string("sig"))) {
		dp_err_set(err, "out of memory");
		goto fail;
	}
	return key;
fail:
	dp_key_free(key);
	return NULL;
}

static void presign_pool_free(struct presign_pool *p);

void dp_key_free(struct dp_key *key)
{
	if (!key)
		return;
	presign_pool_free(key->pool);
	EVP_MD_CTX_free(key->sign_tmpl);
	EVP_PKEY_free(key->pkey);
	json_decref(key->jwk);
	free(key);
}

const char *dp_key_kid(const struct dp_key *key)
{
	return key->kid;
}

const char *dp_key_alg(const struct dp_key *key)
{
	return key->alg;
}

bool dp_key_is_private(const struct dp_key *key)
{
	return key->private;
}

const json_t *dp_key_jwk(const struct dp_key *key)
{
	return key->jwk;
}

char *dp_key_jwks_json(const struct dp_key *key)
{
	json_t *jwks = json_pack("{s:[O]}", "keys", key->jwk);
	char *s;

	if (!jwks)
		return NULL;
	s = json_dumps(jwks, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(jwks);
	return s;
}

/* Never prompt for a passphrase: a daemon and a scripted CLI have no one to ask. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

static EVP_PKEY *pem_parse_private(const char *pem, size_t len)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *pkey;

	if (!bio)
		return NULL;
	pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	return pkey;
}

/* Reads a key file through one descriptor, so the checks and the read see the same file. */
static int key_file_read(const char *path, bool strict_mode, char **out, size_t *len,
			 struct dp_err *err)
{
	struct stat st;
	char *buf;
	size_t n = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0) {
		int e = -errno;

		dp_err_set(err, "%s: %s", path, strerror(errno));
		return e;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		dp_err_set(err, "%s: not a regular file", path);
		return -EINVAL;
	}
	/* Like ssh with an unprotected identity: a signing key others can read is refused,
	 * not quietly repaired, because it may already have leaked; the operator decides. */
	if (strict_mode && (st.st_mode & 077)) {
		close(fd);
		dp_err_set(err,
			   "%s: key is accessible by group or others (mode %04o); "
			   "chmod 600 it, or remove it to have a new one created",
			   path, (unsigned)(st.st_mode & 07777));
		return -EPERM;
	}
	if (st.st_size <= 0 || st.st_size > KEY_FILE_MAX) {
		close(fd);
		dp_err_set(err, "%s: not a key file (size %lld)", path, (long long)st.st_size);
		return -EINVAL;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (n < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
}

static struct dp_key *key_load_pem(const char *path, bool strict_mode, struct dp_err *err)
{
	char *pem = NULL;
	size_t len = 0;
	EVP_PKEY *pkey;
	struct dp_key *key;

	if (key_file_read(path, strict_mode, &pem, &len, err))
		return NULL;
	pkey = pem_parse_private(pem, len);
	OPENSSL_cleanse(pem, len);
	free(pem);
	if (!pkey) {
		dp_err_set(err, "%s: not an unencrypted private key PEM", path);
		return NULL;
	}
	key = key_wrap(pkey, true, NULL, err);
	if (!key) {
		char why[sizeof(err->msg)];

		snprintf(why, sizeof(why), "%s", err ? err->msg : "");
		dp_err_set(err, "%s: %s", path, why);
	}
	return key;
}

struct dp_key *dp_key_load_private_pem(const char *path, struct dp_err *err)
{
	return key_load_pem(path, false, err);
}

/* A first start may find no state directory yet: create it private (0700). */
static void key_make_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	char dir[4096];
	int r;

	if (!slash || slash == path || (size_t)(slash - path) >= sizeof(dir))
		return;
	memcpy(dir, path, (size_t)(slash - path));
	dir[slash - path] = '\0';
	if (access(dir, F_OK) == 0)
		return;
	r = dp_mkdir_p(dir, 0700);
	if (r)
		pr_warn("cannot create %s: %s", dir, strerror(-r));
}

struct dp_key *dp_key_load_or_create(const char *path, struct dp_err *err)
{
	struct dp_key *key;
	EVP_PKEY *pkey;
	BIO *bio;
	char *pem = NULL;
	long pem_len;
	int r;

	if (access(path, F_OK) == 0) {
		key = key_load_pem(path, true, err);
		if (key && key->kty != KTY_EC) {
			dp_err_set(err, "%s: the signing key must be EC P-256 (ES256)", path);
			dp_key_free(key);
			return NULL;
		}
		return key;
	}
	if (errno != ENOENT) {
		dp_err_set(err, "%s: %s", path, strerror(errno));
		return NULL;
	}
	pkey = EVP_EC_gen("P-256");
	if (!pkey) {
		dp_err_set(err, "cannot generate a P-256 key");
		return NULL;
	}
	bio = BIO_new(BIO_s_mem());
	if (!bio || !PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL)) {
		BIO_free(bio);
		EVP_PKEY_free(pkey);
		dp_err_set(err, "cannot encode the new key");
		return NULL;
	}
	pem_len = BIO_get_mem_data(bio, &pem);
	key_make_parent(path);
	/* dp_write_file_atomic creates with 0600 and fchmods, whatever the umask. */
	r = dp_write_file_atomic(path, pem, (size_t)pem_len, 0600);
	OPENSSL_cleanse(pem, (size_t)pem_len);
	BIO_free(bio);
	if (r) {
		EVP_PKEY_free(pkey);
		dp_err_set(err, "%s: cannot write the new key: %s", path, strerror(-r));
		return NULL;
	}
	pr_info("created signing key %s", path);
	return key_wrap(pkey, true, NULL, err);
}

/* ---- JWK and JWKS ------------------------------------------------------------------------ */

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

	if (jwk_member_bytes(jwk, "n", RSA_MAX_BITS / 8, &n, &nl) ||
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

struct dp_key *dp_key_from_jwk(const json_t *jwk, struct dp_err *err)
{
	const char *kty = json_string_value(json_object_get(jwk, "kty"));
	const json_t *kidv = json_object_get(jwk, "kid");
	const char *alg = json_string_value(json_object_get(jwk, "alg"));
	const char *use = json_string_value(json_object_get(jwk, "use"));
	const char *kid = NULL;
	EVP_PKEY *pkey;
	struct dp_key *key;
	char b[64];

	if (!json_is_object(jwk) || !kty) {
		dp_err_set(err, "JWK has no kty");
		return NULL;
	}
	if (kidv) {
		kid = json_string_value(kidv);
		if (!kid || !*kid) {
			dp_err_set(err, "JWK kid is not a string");
			return NULL;
		}
	}
	if (use && strcmp(use, "sig") != 0) {
		dp_err_set(err, "JWK use \"%s\" is not sig", DP_SAFE(b, use));
		return NULL;
	}
	if (json_object_get(jwk, "d") || json_object_get(jwk, "k")) {
		dp_err_set(err, "JWK holds private material; a JWKS must hold public keys");
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
	if (!pkey) {
		dp_err_set(err, "invalid %s JWK", kty);
		return NULL;
	}
	key = key_wrap(pkey, false, kid, err);
	if (key && alg && strcmp(alg, key->alg) != 0) {
		/* A key announced for another alg (PS256, ES384…) is not used at all, rather
		 * than used with an alg its owner did not mean. */
		dp_err_set(err, "JWK alg \"%s\" is not %s", DP_SAFE(b, alg), key->alg);
		dp_key_free(key);
		return NULL;
	}
	return key;
}

struct dp_keyset *dp_keyset_parse(const char *json, size_t len, struct dp_err *err)
{
	json_error_t jerr;
	json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	json_t *keys, *jwk;
	struct dp_keyset *ks;
	size_t i;

	if (!root) {
		char near[sizeof(jerr.text) * 4];

		/* jansson quotes the input near the error raw */
		dp_err_set(err, "JWKS is not JSON: line %d: %s", jerr.line,
			   dp_escape(jerr.text, strlen(jerr.text), near, sizeof(near)));
		return NULL;
	}
	keys = json_object_get(root, "keys");
	if (!json_is_array(keys)) {
		json_decref(root);
		dp_err_set(err, "JWKS has no \"keys\" array");
		return NULL;
	}
	ks = calloc(1, sizeof(*ks));
	if (ks)
		ks->keys = calloc(JWKS_MAX_KEYS, sizeof(*ks->keys));
	if (!ks || !ks->keys) {
		free(ks);
		json_decref(root);
		dp_err_set(err, "out of memory");
		return NULL;
	}
	json_array_foreach(keys, i, jwk)
	{
		struct dp_err kerr = {""};
		struct dp_key *key;

		if (ks->n == JWKS_MAX_KEYS) {
			pr_warn("JWKS: more than %d keys, the rest ignored", JWKS_MAX_KEYS);
			break;
		}
		key = dp_key_from_jwk(jwk, &kerr);
		if (!key) {
			pr_debug("JWKS: key %zu skipped: %s", i, kerr.msg);
			continue;
		}
		if (dp_keyset_find(ks, key->kid)) {
			/* Two keys under one kid: which one signed would be ambiguous. */
			pr_warn("JWKS: duplicate kid, later key skipped");
			dp_key_free(key);
			continue;
		}
		ks->keys[ks->n++] = key;
	}
	json_decref(root);
	return ks;
}

const struct dp_key *dp_keyset_find(const struct dp_keyset *ks, const char *kid)
{
	if (!ks || !kid)
		return NULL;
	for (size_t i = 0; i < ks->n; i++)
		if (strcmp(ks->keys[i]->kid, kid) == 0)
			return ks->keys[i];
	return NULL;
}

size_t dp_keyset_count(const struct dp_keyset *ks)
{
	return ks ? ks->n : 0;
}

void dp_keyset_free(struct dp_keyset *ks)
{
	if (!ks)
		return;
	for (size_t i = 0; i < ks->n; i++)
		dp_key_free(ks->keys[i]);
	free(ks->keys);
	free(ks);
}

/* ---- signing ------------------------------------------------------------------------------ */

/* ES256 signatures travel as the 64-byte r||s of RFC 7518 §3.4, OpenSSL speaks DER. */
static int ecdsa_der_to_raw(const unsigned char *der, size_t len, unsigned char raw[64])
{
	const unsigned char *p = der;
	ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
	const BIGNUM *r, *s;
	int ok;

	if (!sig)
		return -EINVAL;
	ECDSA_SIG_get0(sig, &r, &s);
	ok = BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32;
	ECDSA_SIG_free(sig);
	return ok ? 0 : -EINVAL;
}

static int ecdsa_raw_to_der(const unsigned char raw[64], unsigned char **der, size_t *len)
{
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(raw, 32, NULL), *s = BN_bin2bn(raw + 32, 32, NULL);
	int n;

	if (!sig || !r || !s || !ECDSA_SIG_set0(sig, r, s)) {
		ECDSA_SIG_free(sig);
		BN_free(r);
		BN_free(s);
		return -ENOMEM;
	}
	*der = NULL;
	n = i2d_ECDSA_SIG(sig, der);
	ECDSA_SIG_free(sig);
	if (n <= 0)
		return -EINVAL;
	*len = (size_t)n;
	return 0;
}

/* ---- presign pool ----------------------------------------------------------------------- */

static unsigned presign_fork_gen;
static pthread_once_t presign_once = PTHREAD_ONCE_INIT;

static void presign_on_fork_child(void)
{
	presign_fork_gen++;
}

static void presign_register_atfork(void)
{
	pthread_atfork(NULL, NULL, presign_on_fork_child);
}

static void presign_pair_wipe(struct presign_pair *pp)
{
	BN_clear_free(pp->kinv);
	BN_clear_free(pp->r);
	pp->kinv = pp->r = NULL;
}

/* Caller holds the lock. After a fork, nothing inherited may sign: drop it all. */
static void presign_pool_check_fork(struct presign_pool *p)
{
	if (p->fork_gen == presign_fork_gen)
		return;
	while (p->n > 0)
		presign_pair_wipe(&p->pairs[--p->n]);
	p->fork_gen = presign_fork_gen;
}

static void presign_pool_free(struct presign_pool *p)
{
	if (!p)
		return;
	while (p->n > 0)
		presign_pair_wipe(&p->pairs[--p->n]);
	free(p->pairs);
	EC_KEY_free(p->ec); /* clears the private scalar */
	EVP_MD_free(p->sha256);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

int dp_key_presign_enable(struct dp_key *key, size_t cap)
{
	struct presign_pool *p;

	if (key->pool || !key->private || key->kty != KTY_EC || cap == 0)
		return key->pool ? 0 : -EINVAL;
	pthread_once(&presign_once, presign_register_atfork);
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	p->cap = cap;
	p->fork_gen = presign_fork_gen;
	p->pairs = calloc(cap, sizeof(*p->pairs));
	p->ec = EVP_PKEY_get1_EC_KEY(key->pkey);
	p->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (!p->pairs || !p->ec || !p->sha256) {
		presign_pool_free(p);
		return -ENOMEM;
	}
	key->pool = p;
	return 0;
}

bool dp_key_presign_wanted(const struct dp_key *key)
{
	struct presign_pool *p = key->pool;
	bool want;

	if (!p)
		return false;
	pthread_mutex_lock(&p->lock);
	presign_pool_check_fork(p);
	want = p->n < p->cap;
	pthread_mutex_unlock(&p->lock);
	return want;
}

size_t dp_key_presign_fill(const struct dp_key *key, size_t max)
{
	struct presign_pool *p = key->pool;
	size_t added = 0;

	if (!p)
		return 0;
	for (; added < max; added++) {
		struct presign_pair pp = {NULL, NULL};

		/* outside the lock: this is the expensive part */
		if (ECDSA_sign_setup(p->ec, NULL, &pp.kinv, &pp.r) != 1) {
			presign_pair_wipe(&pp);
			break;
		}
		pthread_mutex_lock(&p->lock);
		presign_pool_check_fork(p);
		if (p->n == p->cap) {
			pthread_mutex_unlock(&p->lock);
			presign_pair_wipe(&pp);
			break;
		}
		p->pairs[p->n++] = pp;
		pthread_mutex_unlock(&p->lock);
	}
	return added;
}

void dp_key_presign_stats(const struct dp_key *key, size_t *available, uint64_t *hits,
			  uint64_t *misses)
{
	struct presign_pool *p = key->pool;

	*available = 0;
	*hits = *misses = 0;
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	presign_pool_check_fork(p);
	*available = p->n;
	*hits = p->hits;
	*misses = p->misses;
	pthread_mutex_unlock(&p->lock);
}

/* ES256 over in with one pooled pair, into the 64-byte r||s. -EAGAIN when the pool is empty
 * (the caller signs normally). The pair is wiped whatever happens. */
static int presign_sign(struct presign_pool *p, const char *in, size_t inlen, unsigned char out[64])
{
	struct presign_pair pp = {NULL, NULL};
	unsigned char digest[32];
	unsigned int dlen = 0;
	ECDSA_SIG *sig = NULL;
	const BIGNUM *r, *s;
	int err = -EINVAL;

	pthread_mutex_lock(&p->lock);
	presign_pool_check_fork(p);
	if (p->n > 0) {
		pp = p->pairs[--p->n];
		p->pairs[p->n] = (struct presign_pair){NULL, NULL};
		p->hits++;
	} else {
		p->misses++;
	}
	pthread_mutex_unlock(&p->lock);
	if (!pp.kinv)
		return -EAGAIN;
	if (EVP_Digest(in, inlen, digest, &dlen, p->sha256, NULL) != 1 || dlen != sizeof(digest))
		goto out;
	/* s == 0 (probability ~2^-256) fails here; the caller then signs with a fresh nonce. */
	sig = ECDSA_do_sign_ex(digest, sizeof(digest), pp.kinv, pp.r, p->ec);
	if (!sig)
		goto out;
	ECDSA_SIG_get0(sig, &r, &s);
	if (BN_bn2binpad(r, out, 32) == 32 && BN_bn2binpad(s, out + 32, 32) == 32)
		err = 0;
out:
	ECDSA_SIG_free(sig);
	presign_pair_wipe(&pp);
	OPENSSL_cleanse(digest, sizeof(digest));
	return err;
}

static int pkey_sign(const struct dp_key *key, const char *in, size_t inlen, unsigned char *out,
		     size_t *outlen)
{
	EVP_MD_CTX *md;
	unsigned char der[80];
	size_t dlen = sizeof(der);
	int err = -EINVAL;

	if (key->kty == KTY_EC && key->pool && presign_sign(key->pool, in, inlen, out) == 0) {
		*outlen = 64;
		return 0;
	}
	md = EVP_MD_CTX_new();
	if (!md)
		return -ENOMEM;
	if (EVP_MD_CTX_copy_ex(md, key->sign_tmpl) != 1)
		goto out;
	if (key->kty == KTY_EC) {
		if (EVP_DigestSign(md, der, &dlen, (const unsigned char *)in, inlen) != 1)
			goto out;
		err = ecdsa_der_to_raw(der, dlen, out);
		*outlen = 64;
	} else {
		if (EVP_DigestSign(md, out, outlen, (const unsigned char *)in, inlen) != 1)
			goto out;
		err = 0;
	}
out:
	EVP_MD_CTX_free(md);
	return err;
}

char *dp_jws_sign_raw(const struct dp_key *key, const char *typ, const char *payload, size_t len,
		      struct dp_err *err)
{
	char header[256];
	unsigned char sig[RSA_MAX_BITS / 8];
	size_t siglen = sizeof(sig), hlen, need, o;
	char *tok;
	ssize_t r;
	int n;

	if (!key->private) {
		dp_err_set(err, "cannot sign with a public key");
		return NULL;
	}
	/* kid is a thumbprint or came from a JWKS we checked to be a string; typ is ours.
	 * Neither holds a quote, so this is valid JSON without an encoder. */
	if (typ)
		n = snprintf(header, sizeof(header),
			     "{\"alg\":\"%s\",\"typ\":\"%s\",\"kid\":\"%s\"}", key->alg, typ,
			     key->kid);
	else
		n = snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"kid\":\"%s\"}", key->alg,
			     key->kid);
	if (n < 0 || (size_t)n >= sizeof(header) || strchr(key->kid, '"') ||
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
	if (pkey_sign(key, tok, o, sig, &siglen)) {
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
	unsigned char *der = NULL;
	size_t dlen = 0;
	EVP_MD_CTX *md;
	char b[64];
	int ok;

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
	if (strcmp(jws->alg, key->alg) != 0) {
		dp_err_set(err, "alg \"%s\" does not match the key's %s", DP_SAFE(b, jws->alg),
			   key->alg);
		return -EACCES;
	}
	if (key->kty == KTY_EC) {
		if (jws->sig_len != 64 || ecdsa_raw_to_der(jws->sig, &der, &dlen)) {
			dp_err_set(err, "bad signature");
			return -EACCES;
		}
	}
	md = EVP_MD_CTX_new();
	if (!md) {
		OPENSSL_free(der);
		dp_err_set(err, "out of memory");
		return -ENOMEM;
	}
	ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key->pkey) == 1 &&
	     EVP_DigestVerify(md, der ? der : jws->sig, der ? dlen : jws->sig_len,
			      (const unsigned char *)jws->signing_input,
			      jws->signing_input_len) == 1;
	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	if (!ok) {
		dp_err_set(err, "bad signature");
		return -EACCES;
	}
	return 0;
}

void dp_jws_clear(struct dp_jws *jws)
{
	json_decref(jws->header);
	json_decref(jws->claims);
	free(jws->signing_input);
	free(jws->sig);
	memset(jws, 0, sizeof(*jws));
}

/* ---- claim helpers shared by grant and token verification ------------------------------ */

int dp_jwt_time_claim(const json_t *claims, const char *name, int64_t *out)
{
	const json_t *v = json_object_get(claims, name);
	double d;

	if (!v)
		return -ENOENT;
	if (json_is_integer(v)) {
		*out = (int64_t)json_integer_value(v);
		return 0;
	}
	if (!json_is_real(v))
		return -EINVAL;
	/* NumericDate may carry fractions (RFC 7519 §2); bound it before converting. */
	d = json_real_value(v);
	if (!(d > -1e15 && d < 1e15))
		return -EINVAL;
	*out = (int64_t)d;
	return 0;
}

bool dp_jwt_aud_has(const json_t *claims, const char *aud)
{
	const json_t *v = json_object_get(claims, "aud"), *e;
	size_t i;

	if (json_is_string(v))
		return strcmp(json_string_value(v), aud) == 0;
	if (!json_is_array(v))
		return false;
	json_array_foreach(v, i, e)
	{
		if (json_is_string(e) && strcmp(json_string_value(e), aud) == 0)
			return true;
	}
	return false;
}

bool dp_scope_has(const char *scopes, const char *scope)
{
	size_t n = strlen(scope);

	if (!scopes || n == 0)
		return false;
	for (const char *p = scopes; *p;) {
		size_t w;

		while (*p == ' ')
			p++;
		w = strcspn(p, " ");
		if (w == n && memcmp(p, scope, n) == 0)
			return true;
		p += w;
	}
	return false;
}
