/* SPDX-License-Identifier: MIT */
/*
 * jwk: public keys as JSON Web Keys (RFC 7517/7518) and their RFC 7638 thumbprints. Only
 * the two key types deputy uses: EC P-256 and RSA.
 */
#ifndef DEPUTY_JWK_H
#define DEPUTY_JWK_H

#include <jansson.h>
#include <openssl/types.h>

#include "util.h"

#define DP_JWK_RSA_MIN_BITS 2048
#define DP_JWK_RSA_MAX_BITS 8192

/* RFC 7638 thumbprint of a public JWK object (EC or RSA) into out (base64url, 43 chars). */
int dp_jwk_thumbprint(const json_t *jwk, char out[48], struct dp_err *err) DP_WUR;
/* The public JWK of an EC P-256 or RSA key: kty and crv/x/y or n/e, nothing else. */
int dp_jwk_from_pkey(EVP_PKEY *pkey, json_t **out) DP_WUR;
/* The public key of a JWK (kty EC with crv P-256, or RSA); NULL with err when the members
 * are missing, malformed or (EC) not a point on the curve. Other members are not looked at. */
EVP_PKEY *dp_jwk_to_pkey(const json_t *jwk, struct dp_err *err);

#endif
