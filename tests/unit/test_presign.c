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

/* The pool's fill after up to 60 s of waiting for it to reach at least want. */
static size_t wait_avail(const struct dp_key *key, size_t want)
{
	uint64_t hits, misses;
	size_t avail = 0;

	for (int i = 0; i < 6000; i++) {
		dp_key_presign_stats(key, &avail, &hits, &misses);
		if (avail >= want)
			break;
		usleep(10000);
	}
	return avail;
}

/* deputyd's worker: fills the pool on its own, refills it once signatures take it below
 * the low-water mark, every token still distinct and valid, a child forked while it runs
 * signs in full, and it stops cleanly (also when the key is freed with it running). */
static void worker_refills_below_low_water(void)
{
	static uint8_t rs[3 * POOL_CAP][32];
	struct dp_key *key = new_key();
	uint64_t hits, misses;
	struct dp_err err;
	size_t avail;
	int status;
	pid_t pid;

	check(key);
	check(dp_key_presign_enable(key, POOL_CAP) == 0);
	check(dp_key_presign_start(key, POOL_CAP / 2) == 0);
	check(dp_key_presign_start(key, POOL_CAP / 2) == 0); /* once is enough */
	check(wait_avail(key, POOL_CAP) == POOL_CAP);
	for (int i = 0; i < 3 * POOL_CAP; i++) {
		char *tok = dp_jws_sign_raw(key, "at+jwt", "{}", 2, &err);

		check(tok);
		if (!verifies(key, tok) || token_r(tok, rs[i]) != 0) {
			free(tok);
			fail("token %d does not verify", i);
		}
		free(tok);
	}
	/* under the low-water mark the worker woke: the pool is back above it (it fills to the
	 * cap, then sleeps until a pop takes it below the mark again) */
	check(wait_avail(key, POOL_CAP / 2) >= POOL_CAP / 2);
	dp_key_presign_stats(key, &avail, &hits, &misses);
	check(hits + misses == 3 * POOL_CAP);
	check(hits > POOL_CAP); /* some tokens came from pairs the worker made meanwhile */
	qsort(rs, 3 * POOL_CAP, 32, cmp_r);
	for (int i = 1; i < 3 * POOL_CAP; i++)
		if (memcmp(rs[i - 1], rs[i], 32) == 0)
			fail("two signatures share r");
	pid = fork();
	check(pid >= 0);
	if (pid == 0) {
		char *tok = dp_jws_sign_raw(key, "at+jwt", "{}", 2, &err);

		dp_key_presign_stats(key, &avail, &hits, &misses);
		/* no pair inherited, no worker to wait for: the key frees without a hang */
		dp_key_free(key);
		_exit(tok && avail == 0 ? 0 : 1);
	}
	check(waitpid(pid, &status, 0) == pid);
	check(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	dp_key_presign_stop(key);
	dp_key_presign_stats(key, &avail, &hits, &misses);
	check(avail >= POOL_CAP / 2);
	check(dp_key_presign_start(key, POOL_CAP / 2) == 0);
	dp_key_free(key); /* stops the running worker */
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
	RUN(worker_refills_below_low_water);
	{
		char cmd[300];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			printf("SKIP: cleanup: cannot remove %s\n", tmpdir);
	}
	UNIT_EXIT();
}
