/* SPDX-License-Identifier: MIT */
/*
 * The fuzz targets' signing key, for targets that #include jws.c. A throwaway test key that
 * signs nothing real: a fixed key lets seeds carry validly signed grants and sealed logs, so
 * the fuzzer reaches the checks behind the signature.
 */
#ifndef DEPUTY_FUZZ_KEY_H
#define DEPUTY_FUZZ_KEY_H

#include <stdio.h>
#include <stdlib.h>

static const char fuzz_key_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgCEiEAJ0/SRlCGcp7\n"
    "80MvMMLNA+uHze2W73unyo6sSBmhRANCAAQVfIXsS02NlLBdi05tbblOeFQIgExx\n"
    "diFDa1fQ4hoBHBvOb0RAjS3UZKU4I/epFM9H6UpLgpP5gFnjp6/CVIB7\n"
    "-----END PRIVATE KEY-----\n";

/* The key, or abort: a target without its key would fuzz nothing. */
static struct dp_key *fuzz_key_new(void)
{
	struct dp_err err = {""};
	EVP_PKEY *pkey = pem_parse_private(fuzz_key_pem, sizeof(fuzz_key_pem) - 1);
	struct dp_key *key = pkey ? key_wrap(pkey, true, NULL, &err) : NULL;

	if (!key) {
		fprintf(stderr, "fuzz key: %s\n", err.msg);
		abort();
	}
	return key;
}

#endif
