// SPDX-License-Identifier: MIT
/*
 * leaf: the proxy's cache of leaf certificates deputyd minted (see leaf.h), each an SSL_CTX
 * that serves only the SNI deputyd approved it for.
 */
#include "leaf.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "util.h"

#define LEAF_CACHE 64

/* ---- leaf certificates: one SSL_CTX per leaf deputyd minted, by its id ------------------- */

static struct {
	uint64_t id;
	SSL_CTX *ctx;
} leaves[LEAF_CACHE];
static size_t leaf_next;
static pthread_mutex_t leaf_mu = PTHREAD_MUTEX_INITIALIZER;

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char h1[] = "http/1.1";

	for (unsigned int i = 0; i < inlen; i += 1u + in[i])
		if (in[i] == 8 && i + 9 <= inlen && memcmp(in + i + 1, h1, 8) == 0) {
			*out = in + i + 1;
			*outlen = 8;
			return SSL_TLSEXT_ERR_OK;
		}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* OpenSSL's own reading of the SNI must agree with the one deputyd approved the leaf for:
 * two parsers disagreeing is refused, not resolved. */
static int sni_check(SSL *ssl, int *alert, void *arg)
{
	const char *want = SSL_get_app_data(ssl);
	const char *got = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	if (!want || !got || strcasecmp(want, got) != 0) {
		*alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *leaf_ctx_new(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	X509 *cert = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	EVP_PKEY *key = cert ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
	X509 *ca = key ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	bool ok = ctx && key && SSL_CTX_use_certificate(ctx, cert) == 1 &&
		  SSL_CTX_use_PrivateKey(ctx, key) == 1 &&
		  (!ca || SSL_CTX_add1_chain_cert(ctx, ca) == 1);

	if (ok) {
		SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
		SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
		SSL_CTX_set_tlsext_servername_callback(ctx, sni_check);
		/* No tickets: a resumed session would skip the SNI callback's check. */
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_num_tickets(ctx, 0);
		/* A record in one read(), not a header and then a body: half the syscalls per
		 * request. Nothing polls the socket once TLS is up, so bytes buffered ahead
		 * are never missed. */
		SSL_CTX_set_read_ahead(ctx, 1);
	}
	X509_free(cert);
	X509_free(ca);
	EVP_PKEY_free(key);
	BIO_free(b);
	ERR_clear_error();
	if (!ok) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* A referenced SSL_CTX for the leaf, or NULL. */
SSL_CTX *leaf_get(uint64_t id, const char *pem)
{
	SSL_CTX *ctx = NULL;

	pthread_mutex_lock(&leaf_mu);
	for (size_t i = 0; i < LEAF_CACHE; i++)
		if (leaves[i].ctx && leaves[i].id == id) {
			ctx = leaves[i].ctx;
			SSL_CTX_up_ref(ctx);
			break;
		}
	pthread_mutex_unlock(&leaf_mu);
	if (ctx || !pem)
		return ctx;
	ctx = leaf_ctx_new(pem);
	if (!ctx)
		return NULL;
	pthread_mutex_lock(&leaf_mu);
	SSL_CTX_free(leaves[leaf_next].ctx);
	leaves[leaf_next].id = id;
	leaves[leaf_next].ctx = ctx;
	SSL_CTX_up_ref(ctx);
	leaf_next = (leaf_next + 1) % LEAF_CACHE;
	pthread_mutex_unlock(&leaf_mu);
	return ctx;
}
