// SPDX-License-Identifier: MIT
/*
 * keyfetch: the trusted issuers' jwks_uri fetched off the event loop. A fetch may take up to
 * JWKS_FETCH_TIMEOUT seconds, and any local user can cause one (a grant with an unknown kid,
 * once per 30 s per issuer): on the loop it would hold up every session's requests. Each
 * fetch the trust asks for (trust_fetch_take) runs in a thread of its own that shares
 * nothing but its job; the result comes back through d->wake_fd and is installed by the
 * loop, which then lets the requests that waited for it go on.
 */
#include "keyfetch.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jwks_fetch.h"

struct keyfetch_job {
	struct keyfetch_job *next;
	char *issuer, *source;
	struct dp_keyset *ks; /* NULL: failed, see why */
	char why[256];
	int wake_fd;
};

static pthread_mutex_t keyfetch_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t keyfetch_idle = PTHREAD_COND_INITIALIZER;
static struct keyfetch_job *keyfetch_done; /* finished, for the loop to collect */
static size_t keyfetch_running;

static void keyfetch_job_free(struct keyfetch_job *j)
{
	free(j->issuer);
	free(j->source);
	free(j);
}

static void *keyfetch_thread(void *arg)
{
	struct keyfetch_job *j = arg;
	struct dp_err err = {""};
	uint64_t one = 1;

	j->ks = jwks_load(j->source, &err);
	if (!j->ks)
		snprintf(j->why, sizeof(j->why), "%s", err.msg);
	pthread_mutex_lock(&keyfetch_lock);
	j->next = keyfetch_done;
	keyfetch_done = j;
	/* Under the lock, before this thread counts as done: keyfetch_stop's caller closes
	 * the eventfd only after that. */
	if (write(j->wake_fd, &one, sizeof(one)) < 0) {
		/* only a full counter fails, and then the loop wakes anyway */
	}
	keyfetch_running--;
	pthread_cond_broadcast(&keyfetch_idle);
	pthread_mutex_unlock(&keyfetch_lock);
	return NULL;
}

void keyfetch_start(struct deputyd *d)
{
	char *issuer, *source;
	pthread_attr_t attr;

	if (!d->trust)
		return;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	while (trust_fetch_take(d->trust, &issuer, &source) == 1) {
		struct keyfetch_job *j = calloc(1, sizeof(*j));
		pthread_t t;

		if (j) {
			j->issuer = issuer;
			j->source = source;
			j->wake_fd = d->wake_fd;
			pthread_mutex_lock(&keyfetch_lock);
			keyfetch_running++;
			pthread_mutex_unlock(&keyfetch_lock);
			if (pthread_create(&t, &attr, keyfetch_thread, j) == 0) {
				pr_debug("trusted issuer %s: fetching %s", issuer, source);
				continue;
			}
			pthread_mutex_lock(&keyfetch_lock);
			keyfetch_running--;
			pthread_mutex_unlock(&keyfetch_lock);
			free(j);
		}
		pr_warn("trusted issuer %s: cannot start a fetch of %s", issuer, source);
		trust_fetch_done(d->trust, issuer, source, NULL);
		free(issuer);
		free(source);
	}
	pthread_attr_destroy(&attr);
}

bool keyfetch_collect(struct deputyd *d)
{
	struct keyfetch_job *j, *next;

	pthread_mutex_lock(&keyfetch_lock);
	j = keyfetch_done;
	keyfetch_done = NULL;
	pthread_mutex_unlock(&keyfetch_lock);
	if (!j)
		return false;
	for (; j; j = next) {
		next = j->next;
		if (j->ks)
			pr_debug("trusted issuer %s: %zu keys from %s", j->issuer,
				 dp_keyset_count(j->ks), j->source);
		else
			pr_warn("trusted issuer %s: keys not loaded: %s", j->issuer, j->why);
		trust_fetch_done(d->trust, j->issuer, j->source, j->ks);
		keyfetch_job_free(j);
	}
	return true;
}

bool keyfetch_stop(struct deputyd *d)
{
	struct timespec until;
	bool idle;

	/* A thread still inside libcurl when the process exits could meet OpenSSL's exit
	 * handlers: wait for the fetches, which end within their timeout. */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += JWKS_FETCH_TIMEOUT + 2;
	pthread_mutex_lock(&keyfetch_lock);
	while (keyfetch_running > 0 &&
	       pthread_cond_timedwait(&keyfetch_idle, &keyfetch_lock, &until) == 0) {
	}
	idle = keyfetch_running == 0;
	pthread_mutex_unlock(&keyfetch_lock);
	keyfetch_collect(d);
	return idle;
}
