// SPDX-License-Identifier: MIT
/*
 * key: what a key is to deputy — an OpenSSL key, the one alg it signs with, its kid and
 * public JWK — and the raw signatures made and checked with it. The algorithm is a property
 * of the key, never of a token, which is what lets jws.c refuse any algorithm confusion.
 * Keys come from PEM files (deputyd's signing key, created when missing; an issuer key for
 * `deputy grant`) or from a JWK of a key set.
 */
#include "key.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "jwk.h"
#include "jws.h"

#define KEY_FILE_MAX (64 * 1024)
#define P256_COORD 32

enum key_kty { KTY_EC, KTY_RSA };

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
	/* The one mutable part, set once before the key is shared: see dp_key_set_fast_signer. */
	dp_key_fast_sign_fn fast_sign;
	void *fast_ctx;
	void (*fast_free)(void *ctx);
};

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

		if (bits < DP_JWK_RSA_MIN_BITS || bits > DP_JWK_RSA_MAX_BITS) {
			dp_err_set(err, "RSA key of %d bits (need %d to %d)", bits,
				   DP_JWK_RSA_MIN_BITS, DP_JWK_RSA_MAX_BITS);
			goto fail;
		}
		key->kty = KTY_RSA;
		strcpy(key->alg, "RS256");
	} else {
		dp_err_set(err, "unsupported key type (need EC P-256 or RSA)");
		goto fail;
	}
	if (dp_jwk_from_pkey(pkey, &key->jwk)) {
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

void dp_key_free(struct dp_key *key)
{
	if (!key)
		return;
	if (key->fast_free)
		key->fast_free(key->fast_ctx);
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

EVP_PKEY *dp_key_pkey(const struct dp_key *key)
{
	return key->pkey;
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

/* ---- PEM files ------------------------------------------------------------------------- */

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
	size_t n;
	ssize_t got;
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
	got = dp_read_upto(fd, buf, (size_t)st.st_size);
	close(fd);
	if (got < 0) {
		OPENSSL_clear_free(buf, (size_t)st.st_size + 1); /* may hold part of a key */
		dp_err_set(err, "%s: %s", path, strerror((int)-got));
		return (int)got;
	}
	n = (size_t)got;
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

/* ---- JWK ------------------------------------------------------------------------------- */

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
	pkey = dp_jwk_to_pkey(jwk, err);
	if (!pkey)
		return NULL;
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

/* ---- signatures ------------------------------------------------------------------------ */

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

int dp_key_sign(const struct dp_key *key, const void *in, size_t inlen, unsigned char *out,
		size_t *outlen)
{
	EVP_MD_CTX *md;
	unsigned char der[80];
	size_t dlen = sizeof(der);
	int err = -EINVAL;

	if (!key->private)
		return -EINVAL;
	if (key->kty == KTY_EC && key->fast_sign &&
	    key->fast_sign(key->fast_ctx, in, inlen, out) == 0) {
		*outlen = 64;
		return 0;
	}
	md = EVP_MD_CTX_new();
	if (!md)
		return -ENOMEM;
	if (EVP_MD_CTX_copy_ex(md, key->sign_tmpl) != 1)
		goto out;
	if (key->kty == KTY_EC) {
		if (EVP_DigestSign(md, der, &dlen, in, inlen) != 1)
			goto out;
		err = ecdsa_der_to_raw(der, dlen, out);
		*outlen = 64;
	} else {
		*outlen = DP_KEY_SIG_MAX;
		if (EVP_DigestSign(md, out, outlen, in, inlen) != 1)
			goto out;
		err = 0;
	}
out:
	EVP_MD_CTX_free(md);
	return err;
}

int dp_key_verify(const struct dp_key *key, const void *in, size_t inlen, const unsigned char *sig,
		  size_t siglen)
{
	unsigned char *der = NULL;
	size_t dlen = 0;
	EVP_MD_CTX *md;
	int ok;

	if (key->kty == KTY_EC) {
		if (siglen != 64 || ecdsa_raw_to_der(sig, &der, &dlen))
			return -EACCES;
	}
	md = EVP_MD_CTX_new();
	if (!md) {
		OPENSSL_free(der);
		return -ENOMEM;
	}
	ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key->pkey) == 1 &&
	     EVP_DigestVerify(md, der ? der : sig, der ? dlen : siglen, in, inlen) == 1;
	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	return ok ? 0 : -EACCES;
}

int dp_key_set_fast_signer(struct dp_key *key, dp_key_fast_sign_fn fn, void *ctx,
			   void (*free_ctx)(void *ctx))
{
	if (key->fast_sign)
		return -EBUSY;
	key->fast_sign = fn;
	key->fast_ctx = ctx;
	key->fast_free = free_ctx;
	return 0;
}

void *dp_key_fast_signer_ctx(const struct dp_key *key, dp_key_fast_sign_fn fn)
{
	return key->fast_sign == fn ? key->fast_ctx : NULL;
}
