/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the token tests: throwaway keys written as PEM files, and hand-crafted
 * (hostile) compact JWS built from raw header and payload text, so tests can produce what
 * no well-behaved signer would.
 */
#ifndef DEPUTY_JWT_HELPERS_H
#define DEPUTY_JWT_HELPERS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "jws.h"
#include "util.h"

/* not every test uses every helper */
#define TH_FN static __attribute__((unused))

static char th_dir[] = "/tmp/deputy-unit.XXXXXX";
static int th_dir_made;

TH_FN const char *th_tmpdir(void)
{
	if (!th_dir_made) {
		if (!mkdtemp(th_dir)) {
			perror("mkdtemp");
			exit(1);
		}
		th_dir_made = 1;
	}
	return th_dir;
}

TH_FN void th_cleanup(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", th_dir);
	if (th_dir_made && system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", th_dir);
}

/* A new key of "EC" (P-256) or "RSA" (2048) written to <tmp>/<name>.pem; returns the path. */
TH_FN const char *th_write_key(const char *type, const char *name)
{
	static char path[256];
	EVP_PKEY *pkey = strcmp(type, "RSA") == 0 ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s.pem", th_tmpdir(), name);
	f = fopen(path, "w");
	if (!pkey || !f || !PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL)) {
		fprintf(stderr, "cannot write test key %s\n", path);
		exit(1);
	}
	fclose(f);
	EVP_PKEY_free(pkey);
	return path;
}

TH_FN char *th_b64(const void *p, size_t n)
{
	char *out = malloc(DP_B64URL_LEN(n));

	if (!out || dp_b64url_encode(p, n, out, DP_B64URL_LEN(n)) < 0)
		exit(1);
	return out;
}

/* b64(header).b64(payload).b64(sig) from raw bytes; malloc'd. */
TH_FN char *th_craft(const char *header, const char *payload, const void *sig, size_t siglen)
{
	char *h = th_b64(header, strlen(header)), *p = th_b64(payload, strlen(payload));
	char *s = th_b64(sig, siglen);
	size_t n = strlen(h) + strlen(p) + strlen(s) + 3;
	char *tok = malloc(n);

	snprintf(tok, n, "%s.%s.%s", h, p, s);
	free(h);
	free(p);
	free(s);
	return tok;
}

/* An HS256 token keyed with secret (e.g. the issuer's public key PEM: the classic
 * algorithm-confusion attack on libraries that let the token pick the algorithm). */
TH_FN char *th_hs256(const char *header, const char *payload, const void *secret, size_t secretlen)
{
	char *h = th_b64(header, strlen(header)), *p = th_b64(payload, strlen(payload));
	size_t n = strlen(h) + strlen(p) + 2;
	char *input = malloc(n), *s, *tok;
	unsigned char mac[32];
	unsigned int maclen = sizeof(mac);

	snprintf(input, n, "%s.%s", h, p);
	if (!HMAC(EVP_sha256(), secret, (int)secretlen, (unsigned char *)input, strlen(input), mac,
		  &maclen))
		exit(1);
	s = th_b64(mac, maclen);
	tok = malloc(n + strlen(s) + 1);
	snprintf(tok, n + strlen(s) + 1, "%s.%s", input, s);
	free(h);
	free(p);
	free(s);
	free(input);
	return tok;
}

/* The public key of a private dp_key as PEM text (what an issuer publishes). */
TH_FN char *th_public_pem(const char *private_pem_path)
{
	FILE *f = fopen(private_pem_path, "r");
	EVP_PKEY *pkey = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	BIO *bio = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;

	if (f)
		fclose(f);
	if (!pkey || !bio || !PEM_write_bio_PUBKEY(bio, pkey))
		exit(1);
	n = BIO_get_mem_data(bio, &data);
	out = strndup(data, (size_t)n);
	BIO_free(bio);
	EVP_PKEY_free(pkey);
	return out;
}

/* The public keyset of a private key, as a JWKS would carry it. */
TH_FN struct dp_keyset *th_keyset_of(const struct dp_key *key)
{
	char *jwks = dp_key_jwks_json(key);
	struct dp_keyset *ks = dp_keyset_parse(jwks, strlen(jwks), NULL);

	free(jwks);
	return ks;
}

/* Replaces the middle (payload) part of a token with b64(payload); malloc'd. */
TH_FN char *th_swap_payload(const char *token, const char *payload)
{
	const char *d1 = strchr(token, '.'), *d2 = strrchr(token, '.');
	char *p = th_b64(payload, strlen(payload));
	size_t n = strlen(token) + strlen(p) + 1;
	char *out = malloc(n);

	snprintf(out, n, "%.*s.%s%s", (int)(d1 - token), token, p, d2);
	free(p);
	return out;
}

#endif
