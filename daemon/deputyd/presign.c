// SPDX-License-Identifier: MIT
/*
 * presign: the nonce pool of deputyd's ES256 key. An ECDSA signature is s = k⁻¹(z + r·d)
 * with r = (kG).x; everything but the last multiplication depends on the nonce k alone, and
 * that is ~90% of the work. deputyd precomputes (k⁻¹, r) pairs in idle time with
 * ECDSA_sign_setup, and a token takes one: ECDSA_do_sign_ex then costs a few microseconds.
 * A pair is popped under the lock, used for exactly one signature and wiped; reusing one
 * would reveal the private key, so a forked child (which would hold a copy of the pool)
 * drops every pair it inherited. An empty pool is never waited for: the token gets a
 * normal signature. The pool hangs on the key as its fast signer (key.h), so the code that
 * mints tokens does not know it exists. The nonce API is deprecated in OpenSSL 3 but
 * present, hence the API level below, for this file only.
 *
 * deputyd refills the pool on a worker thread (dp_key_presign_start): it sleeps on a
 * condition variable until a signature takes the pool below its low-water mark, then makes
 * pairs until the pool is full, each outside the lock (the lock is held only to push or pop
 * one pair), with its own copy of the key. The event loop then only does the online
 * signature. Fork: the pool locks are taken around fork() so a child never inherits one
 * held by the worker, and the child, which has no worker, drops every inherited pair.
 */
#define OPENSSL_API_COMPAT 0x10100000L

#include "presign.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>

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
	/* the refilling worker (dp_key_presign_start) */
	pthread_t worker;
	pthread_cond_t wake;
	EC_KEY *worker_ec; /* the worker's own copy: nothing is shared with the signer */
	size_t low;	   /* a pop below this wakes the worker */
	bool running, sleeping, stop;
};

static unsigned presign_fork_gen;
/* Pools whose locks are held across fork(): deputyd has one key, tests a few. */
#define PRESIGN_MAX_POOLS 8
static struct presign_pool *presign_pools[PRESIGN_MAX_POOLS];
static pthread_mutex_t presign_pools_lock = PTHREAD_MUTEX_INITIALIZER;
static int presign_sign(void *ctx, const void *in, size_t inlen, unsigned char out[64]);

static struct presign_pool *pool_of(const struct dp_key *key)
{
	return dp_key_fast_signer_ctx(key, presign_sign);
}

static pthread_once_t presign_once = PTHREAD_ONCE_INIT;

static void presign_before_fork(void)
{
	pthread_mutex_lock(&presign_pools_lock);
	for (size_t i = 0; i < PRESIGN_MAX_POOLS; i++)
		if (presign_pools[i])
			pthread_mutex_lock(&presign_pools[i]->lock);
}

static void presign_after_fork(void)
{
	for (size_t i = PRESIGN_MAX_POOLS; i-- > 0;)
		if (presign_pools[i])
			pthread_mutex_unlock(&presign_pools[i]->lock);
	pthread_mutex_unlock(&presign_pools_lock);
}

static void presign_on_fork_child(void)
{
	presign_fork_gen++;
	/* No worker runs in the child: it must not wait for one, nor on a condition variable
	 * whose waiter stayed in the parent. */
	for (size_t i = 0; i < PRESIGN_MAX_POOLS; i++)
		if (presign_pools[i]) {
			presign_pools[i]->running = false;
			presign_pools[i]->sleeping = false;
			pthread_cond_init(&presign_pools[i]->wake, NULL);
		}
	presign_after_fork();
}

static void presign_register_atfork(void)
{
	pthread_atfork(presign_before_fork, presign_after_fork, presign_on_fork_child);
}

static void presign_pools_set(struct presign_pool *old, struct presign_pool *new)
{
	pthread_mutex_lock(&presign_pools_lock);
	for (size_t i = 0; i < PRESIGN_MAX_POOLS; i++)
		if (presign_pools[i] == old) {
			presign_pools[i] = new;
			break;
		}
	pthread_mutex_unlock(&presign_pools_lock);
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

/* One pair outside the lock, pushed under it: false when the pool is full (or after a
 * fork), or the pair could not be made. */
static bool presign_make_one(struct presign_pool *p, EC_KEY *ec)
{
	struct presign_pair pp = {NULL, NULL};

	/* outside the lock: this is the expensive part */
	if (ECDSA_sign_setup(ec, NULL, &pp.kinv, &pp.r) != 1) {
		presign_pair_wipe(&pp);
		return false;
	}
	pthread_mutex_lock(&p->lock);
	presign_pool_check_fork(p);
	if (p->n == p->cap) {
		pthread_mutex_unlock(&p->lock);
		presign_pair_wipe(&pp);
		return false;
	}
	p->pairs[p->n++] = pp;
	pthread_mutex_unlock(&p->lock);
	return true;
}

static void *presign_worker(void *arg)
{
	struct presign_pool *p = arg;

	/* named, so its CPU is told apart from the loop's (/proc/PID/task/TID/comm) */
	pthread_setname_np(pthread_self(), "presign");
	pthread_mutex_lock(&p->lock);
	while (!p->stop) {
		if (p->n >= p->cap) {
			p->sleeping = true;
			while (!p->stop && p->n >= p->low)
				pthread_cond_wait(&p->wake, &p->lock);
			p->sleeping = false;
			continue;
		}
		pthread_mutex_unlock(&p->lock);
		if (!presign_make_one(p, p->worker_ec)) {
			/* a failing setup would spin: the pool stays as it is until a pop */
			pthread_mutex_lock(&p->lock);
			if (p->n < p->cap && !p->stop) {
				p->sleeping = true;
				pthread_cond_wait(&p->wake, &p->lock);
				p->sleeping = false;
			}
			continue;
		}
		pthread_mutex_lock(&p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static void presign_stop(struct presign_pool *p)
{
	bool running;

	pthread_mutex_lock(&p->lock);
	running = p->running;
	p->stop = true;
	pthread_cond_signal(&p->wake);
	pthread_mutex_unlock(&p->lock);
	if (running)
		pthread_join(p->worker, NULL);
	pthread_mutex_lock(&p->lock);
	p->running = false;
	p->stop = false;
	pthread_mutex_unlock(&p->lock);
	EC_KEY_free(p->worker_ec);
	p->worker_ec = NULL;
}

static void presign_pool_free(void *ctx)
{
	struct presign_pool *p = ctx;

	if (!p)
		return;
	presign_stop(p);
	presign_pools_set(p, NULL);
	while (p->n > 0)
		presign_pair_wipe(&p->pairs[--p->n]);
	free(p->pairs);
	EC_KEY_free(p->ec); /* clears the private scalar */
	EVP_MD_free(p->sha256);
	pthread_cond_destroy(&p->wake);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

int dp_key_presign_enable(struct dp_key *key, size_t cap)
{
	struct presign_pool *p;
	int r;

	if (pool_of(key))
		return 0;
	if (!dp_key_is_private(key) || strcmp(dp_key_alg(key), "ES256") != 0 || cap == 0)
		return -EINVAL;
	pthread_once(&presign_once, presign_register_atfork);
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->wake, NULL);
	p->cap = cap;
	p->fork_gen = presign_fork_gen;
	p->pairs = calloc(cap, sizeof(*p->pairs));
	p->ec = EVP_PKEY_get1_EC_KEY(dp_key_pkey(key));
	p->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (!p->pairs || !p->ec || !p->sha256) {
		presign_pool_free(p);
		return -ENOMEM;
	}
	r = dp_key_set_fast_signer(key, presign_sign, p, presign_pool_free);
	if (r)
		presign_pool_free(p);
	else
		presign_pools_set(NULL, p); /* a full table: only fork safety of a worker lost */
	return r;
}

bool dp_key_presign_wanted(const struct dp_key *key)
{
	struct presign_pool *p = pool_of(key);
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
	struct presign_pool *p = pool_of(key);
	size_t added = 0;

	if (!p)
		return 0;
	while (added < max && presign_make_one(p, p->ec))
		added++;
	return added;
}

int dp_key_presign_start(const struct dp_key *key, size_t low_water)
{
	struct presign_pool *p = pool_of(key);
	sigset_t all, old;
	int r;

	if (!p)
		return -EINVAL;
	if (p->running)
		return 0;
	p->worker_ec = EC_KEY_dup(p->ec);
	if (!p->worker_ec)
		return -ENOMEM;
	p->low = low_water < p->cap ? low_water : p->cap;
	p->stop = false;
	/* signals stay with the event loop's signalfd */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = pthread_create(&p->worker, NULL, presign_worker, p);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		EC_KEY_free(p->worker_ec);
		p->worker_ec = NULL;
		return -r;
	}
	pthread_mutex_lock(&p->lock);
	p->running = true;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

void dp_key_presign_stop(const struct dp_key *key)
{
	struct presign_pool *p = pool_of(key);

	if (p)
		presign_stop(p);
}

void dp_key_presign_stats(const struct dp_key *key, size_t *available, uint64_t *hits,
			  uint64_t *misses)
{
	struct presign_pool *p = pool_of(key);

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
static int presign_sign(void *ctx, const void *in, size_t inlen, unsigned char out[64])
{
	struct presign_pool *p = ctx;
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
	/* only a sleeping worker costs a wake-up (a futex call) */
	if (p->sleeping && p->n < p->low)
		pthread_cond_signal(&p->wake);
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
