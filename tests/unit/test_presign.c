// SPDX-License-Identifier: MIT
/*
 * The signing key's presign pool (jws.c): tokens signed from precomputed ECDSA nonces still
 * verify, no two signatures ever share r (a reused nonce would give the key away), the
 * pool falls back to full signatures when empty, and a forked child never signs with a
 * nonce its parent may also use.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jws.h"
#include "presign.h"
#include "unit.h"
#include "util.h"

#define N_TOKENS 3000
#define POOL_CAP 256

static char tmpdir[] = "/tmp/deputy-presign.XXXXXX";

static struct dp_key *new_key(void)
{
	static int n;
	char path[256];
	struct dp_err err;

	snprintf(path, sizeof(path), "%s/key-%d.pem", tmpdir, n++);
	return dp_key_load_or_create(path, &err);
}

/* The signature's r (first 32 bytes of the decoded third part). */
static int token_r(const char *tok, uint8_t r[32])
{
	const char *sig = strrchr(tok, '.');
	uint8_t raw[64];

	if (!sig || dp_b64url_decode(sig + 1, strlen(sig + 1), raw, sizeof(raw)) != 64)
		return -EINVAL;
	memcpy(r, raw, 32);
	return 0;
}

static int cmp_r(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

static bool verifies(const struct dp_key *key, const char *tok)
{
	struct dp_jws jws;
	struct dp_err err;
	bool ok;

	if (dp_jws_parse(tok, &jws, &err) != 0)
		return false;
	ok = dp_jws_verify(&jws, key, &err) == 0;
	dp_jws_clear(&jws);
	return ok;
}

static void no_two_tokens_share_r(void)
{
	static uint8_t rs[N_TOKENS][32];
	struct dp_key *key = new_key();
	uint64_t hits, misses;
	struct dp_err err;
	size_t avail;
	char payload[128];

	check(key);
	check(dp_key_presign_enable(key, POOL_CAP) == 0);
	check(dp_key_presign_wanted(key));
	check(dp_key_presign_fill(key, POOL_CAP + 10) == POOL_CAP);
	check(!dp_key_presign_wanted(key));
	check(dp_key_presign_fill(key, 1) == 0);
	for (int i = 0; i < N_TOKENS; i++) {
		char *tok;

		/* Refill now and then, as deputyd's loop does: pooled and full signatures mix. */
		if (i % 500 == 250)
			check(dp_key_presign_fill(key, 100) == 100);
		snprintf(payload, sizeof(payload), "{\"n\":%d,\"same\":\"payload\"}", i % 3);
		tok = dp_jws_sign_raw(key, "at+jwt", payload, strlen(payload), &err);
		check(tok);
		if (!verifies(key, tok)) {
			free(tok);
			fail("token %d does not verify", i);
		}
		if (token_r(tok, rs[i]) != 0) {
			free(tok);
			fail("token %d: no 64-byte signature", i);
		}
		free(tok);
	}
	dp_key_presign_stats(key, &avail, &hits, &misses);
	check(hits == POOL_CAP + 100 * (N_TOKENS / 500));
	check(misses == N_TOKENS - hits);
	check(avail == 0);
	qsort(rs, N_TOKENS, 32, cmp_r);
	for (int i = 1; i < N_TOKENS; i++)
		if (memcmp(rs[i - 1], rs[i], 32) == 0)
			fail("two of %d signatures share r", N_TOKENS);
	dp_key_free(key);
}

static void only_private_es256_keys_presign(void)
{
	struct dp_key *key = new_key(), *pub;
	struct dp_err err;

	check(key);
	pub = dp_key_from_jwk(dp_key_jwk(key), &err);
	check(pub);
	check(dp_key_presign_enable(pub, 8) == -EINVAL);
	check(!dp_key_presign_wanted(pub));
	check(dp_key_presign_fill(pub, 8) == 0);
	/* without a pool a key signs as before */
	check(!dp_key_presign_wanted(key));
	check(dp_key_presign_fill(key, 4) == 0);
	dp_key_free(pub);
	dp_key_free(key);
}

/* A child of fork holds a copy of every pair: it must drop them, or parent and child could
 * each sign with the same nonce. */
static void forked_child_drops_inherited_pairs(void)
{
	struct dp_key *key = new_key();
	uint64_t hits, misses;
	size_t avail;
	int pipefd[2], status;
	uint8_t r_parent[32], r_child[32];
	struct dp_err err;
	pid_t pid;
	char *tok;

	check(key);
	check(dp_key_presign_enable(key, 4) == 0);
	check(dp_key_presign_fill(key, 4) == 4);
	check(pipe(pipefd) == 0);
	pid = fork();
	check(pid >= 0);
	if (pid == 0) {
		uint8_t out[33] = {0};

		dp_key_presign_stats(key, &avail, &hits, &misses);
		tok = dp_jws_sign_raw(key, "at+jwt", "{}", 2, &err);
		if (avail == 0 && tok && token_r(tok, out + 1) == 0)
			out[0] = 1;
		dp_key_presign_stats(key, &avail, &hits, &misses);
		if (hits != 0)
			out[0] = 0;
		if (write(pipefd[1], out, sizeof(out)) != (ssize_t)sizeof(out))
			_exit(1);
		_exit(0);
	}
	close(pipefd[1]);
	{
		uint8_t in[33];
		ssize_t n = read(pipefd[0], in, sizeof(in));

		close(pipefd[0]);
		waitpid(pid, &status, 0);
		check(n == (ssize_t)sizeof(in));
		check(in[0] == 1); /* the child saw an empty pool and signed in full */
		memcpy(r_child, in + 1, 32);
	}
	/* The parent still has its four pairs, and the top one is not the child's nonce. */
	dp_key_presign_stats(key, &avail, &hits, &misses);
	check(avail == 4);
	tok = dp_jws_sign_raw(key, "at+jwt", "{}", 2, &err);
	check(tok);
	check(token_r(tok, r_parent) == 0);
	free(tok);
	dp_key_presign_stats(key, &avail, &hits, &misses);
	check(hits == 1 && avail == 3);
	check(memcmp(r_parent, r_child, 32) != 0);
	dp_key_free(key);
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		printf("FAIL: setup: mkdtemp\n");
		return 1;
	}
	RUN(no_two_tokens_share_r);
	RUN(only_private_es256_keys_presign);
	RUN(forked_child_drops_inherited_pairs);
	{
		char cmd[300];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			printf("SKIP: cleanup: cannot remove %s\n", tmpdir);
	}
	UNIT_EXIT();
}
