/* SPDX-License-Identifier: MIT */
/*
 * httpd: deputyd's tiny HTTP/1.1 server for its public documents, on a loopback address:
 *   GET /.well-known/jwks.json                   deputyd's JWKS (backends verify tokens with it)
 *   GET /.well-known/oauth-authorization-server  RFC 8414 metadata pointing at that JWKS
 * One thread, non-blocking sockets and poll; every client has a deadline and a bounded
 * request head, one response per connection (Connection: close).
 */
#ifndef DEPUTY_HTTPD_H
#define DEPUTY_HTTPD_H

#include "util.h"

#define HTTPD_JWKS_PATH "/.well-known/jwks.json"
#define HTTPD_METADATA_PATH "/.well-known/oauth-authorization-server"

struct dp_httpd;

/*
 * Binds listen ("127.0.0.1:8471", "[::1]:8471"; loopback only; port 0 picks a free port)
 * and starts serving copies of the two documents in a thread of its own, with every signal
 * blocked. NULL and err on failure.
 */
struct dp_httpd *httpd_start(const char *listen, const char *jwks_json, const char *metadata_json,
			     struct dp_err *err) DP_WUR;
/* The bound port (useful after port 0). */
int httpd_port(const struct dp_httpd *h);
/* Replaces the served documents (NULL leaves one as it is), e.g. after a key rotation.
 * Requests already answered keep what they got. 0 or -ENOMEM. */
int httpd_set_documents(struct dp_httpd *h, const char *jwks_json,
			const char *metadata_json) DP_WUR;
/* Stops the thread, closes every socket, frees h. NULL is a no-op. */
void httpd_stop(struct dp_httpd *h);

/*
 * The RFC 8414 metadata document deputyd serves: issuer, jwks_uri
 * (http://<http_listen>/.well-known/jwks.json), and empty response_types_supported and
 * grant_types_supported, since deputyd has no authorization or token endpoint over HTTP
 * (tokens are minted over its Unix socket). malloc'd; NULL on allocation failure.
 */
char *httpd_metadata_json(const char *issuer, const char *http_listen);

#endif
