// SPDX-License-Identifier: MIT
/*
 * sessca: per-session CA and its leaves (see sessca.h). Certificates follow what strict
 * verifiers (Go's crypto/x509, Node, OpenSSL's X509_STRICT) insist on: key identifiers,
 * key usage, the leaf's name in subjectAltName, serial numbers of 128 random bits.
 */
#include "sessca.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SESSCA_LEAVES 64
#define CA_DAYS 30 /* a session ends long before; the bundle goes with it */
#define LEAF_DAYS 7

struct leaf {
	char *host;
	char *pem;
	uint64_t id;
};

struct sessca {
	EVP_PKEY *key;
	X509 *cert;
	char *pem;
	struct leaf leaves[SESSCA_LEAVES];
	size_t n_leaves, next;
};

static uint64_t leaf_ids;

static char *pem_of(int (*wr)(BIO *, void *), void *obj)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out = NULL;
	long n;

	if (b && wr(b, obj) == 1 && (n = BIO_get_mem_data(b, &data)) > 0) {
		out = malloc((size_t)n + 1);
		if (out) {
			memcpy(out, data, (size_t)n);
			out[n] = '\0';
		}
	}
	BIO_free(b);
	return out;
}

static int wr_cert(BIO *b, void *x)
{
	return PEM_write_bio_X509(b, x);
}

static int wr_key(BIO *b, void *k)
{
	return PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
}

static bool add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	bool ok;

	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	ok = ext && X509_add_ext(cert, ext, -1) == 1;
	X509_EXTENSION_free(ext);
	return ok;
}

/* A certificate for key, named cn, valid from an hour ago for days; self-signed when issuer
 * is NULL. Extensions are added by the caller before signing. */
static X509 *cert_new(EVP_PKEY *key, const char *cn, int days)
{
	X509 *x = X509_new();
	unsigned char serial[16];
	BIGNUM *bn = NULL;
	X509_NAME *name;
	bool ok;

	if (!x || dp_random(serial, sizeof(serial)) != 0)
		goto fail;
	serial[0] &= 0x7f; /* positive */
	bn = BN_bin2bn(serial, sizeof(serial), NULL);
	name = X509_get_subject_name(x);
	ok = bn && X509_set_version(x, 2) == 1 &&
	     BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL &&
	     X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
	     X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400) &&
	     X509_set_pubkey(x, key) == 1 &&
	     X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"deputy",
					-1, -1, 0) == 1 &&
	     X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
					-1, 0) == 1;
	BN_free(bn);
	if (ok)
		return x;
fail:
	X509_free(x);
	return NULL;
}

struct sessca *sessca_new(const char *session_id, struct dp_err *err)
{
	struct sessca *ca = calloc(1, sizeof(*ca));
	char cn[64];
	bool ok;

	snprintf(cn, sizeof(cn), "deputy session %s", session_id);
	if (!ca || !(ca->key = EVP_EC_gen("P-256")) || !(ca->cert = cert_new(ca->key, cn, CA_DAYS)))
		goto fail;
	ok = X509_set_issuer_name(ca->cert, X509_get_subject_name(ca->cert)) == 1 &&
	     add_ext(ca->cert, ca->cert, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") &&
	     add_ext(ca->cert, ca->cert, NID_key_usage, "critical,keyCertSign,cRLSign") &&
	     add_ext(ca->cert, ca->cert, NID_subject_key_identifier, "hash") &&
	     X509_sign(ca->cert, ca->key, EVP_sha256()) > 0 &&
	     (ca->pem = pem_of(wr_cert, ca->cert)) != NULL;
	if (ok)
		return ca;
fail:
	ERR_clear_error();
	dp_err_set(err, "session CA: cannot create it");
	sessca_free(ca);
	return NULL;
}

/* Shaped like every opaque handle's destructor and accessor (key.c, audit_log.c). */
void sessca_free(struct sessca *ca)
{
	if (!ca)
		return;
	for (size_t i = 0; i < ca->n_leaves; i++) {
		free(ca->leaves[i].host);
		if (ca->leaves[i].pem)
			OPENSSL_clear_free(ca->leaves[i].pem, strlen(ca->leaves[i].pem));
	}
	EVP_PKEY_free(ca->key);
	X509_free(ca->cert);
	free(ca->pem);
	free(ca);
}

const char *sessca_cert_pem(const struct sessca *ca)
{
	return ca->pem;
}

static char *leaf_mint(struct sessca *ca, const char *host)
{
	unsigned char ip[16];
	bool literal = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = key ? cert_new(key, host, LEAF_DAYS) : NULL;
	char san[300], *cpem = NULL, *kpem = NULL, *pem = NULL;
	bool ok;

	snprintf(san, sizeof(san), "%s:%s", literal ? "IP" : "DNS", host);
	ok = x && X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) == 1 &&
	     add_ext(x, ca->cert, NID_basic_constraints, "critical,CA:FALSE") &&
	     add_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature") &&
	     add_ext(x, ca->cert, NID_ext_key_usage, "serverAuth") &&
	     add_ext(x, ca->cert, NID_subject_alt_name, san) &&
	     add_ext(x, ca->cert, NID_subject_key_identifier, "hash") &&
	     add_ext(x, ca->cert, NID_authority_key_identifier, "keyid:always") &&
	     X509_sign(x, ca->key, EVP_sha256()) > 0 && (cpem = pem_of(wr_cert, x)) &&
	     (kpem = pem_of(wr_key, key));
	if (ok && asprintf(&pem, "%s%s%s", cpem, kpem, ca->pem) < 0)
		pem = NULL;
	free(cpem);
	if (kpem)
		OPENSSL_clear_free(kpem, strlen(kpem));
	X509_free(x);
	EVP_PKEY_free(key);
	ERR_clear_error();
	return pem;
}

int sessca_leaf(struct sessca *ca, const char *host, const char **pem, uint64_t *id,
		struct dp_err *err)
{
	struct leaf *l;
	char *p, *h;

	for (size_t i = 0; i < ca->n_leaves; i++)
		if (strcasecmp(ca->leaves[i].host, host) == 0) {
			*pem = ca->leaves[i].pem;
			*id = ca->leaves[i].id;
			return 0;
		}
	h = strdup(host);
	p = h ? leaf_mint(ca, host) : NULL;
	if (!p) {
		free(h);
		dp_err_set(err, "session CA: cannot mint a certificate for %s", host);
		return -ENOMEM;
	}
	/* Bounded: the oldest leaf makes room (it is minted again if asked for). */
	if (ca->n_leaves < SESSCA_LEAVES) {
		l = &ca->leaves[ca->n_leaves++];
	} else {
		l = &ca->leaves[ca->next];
		ca->next = (ca->next + 1) % SESSCA_LEAVES;
		free(l->host);
		OPENSSL_clear_free(l->pem, strlen(l->pem));
	}
	l->host = h;
	l->pem = p;
	l->id = ++leaf_ids;
	*pem = l->pem;
	*id = l->id;
	return 0;
}
