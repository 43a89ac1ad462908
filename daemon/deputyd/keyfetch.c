// SPDX-License-Identifier: MIT
/*
 * keyfetch: the trusted issuers' keys (their jwks_uri, or the one discovery finds) fetched
 * off the event loop. A fetch may take up to JWKS_FETCH_TIMEOUT seconds per request, and any
 * local user can cause one (a grant with an unknown kid, once per 30 s per issuer): on the
 * loop it would hold up every session's requests. Each
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
	struct trust_fetch f;
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
	trust_fetch_clear(&j->f);
	free(j);
}

static void *keyfetch_thread(void *arg)
{
	struct keyfetch_job *j = arg;
	struct dp_err err = {""};
	uint64_t one = 1;

	j->ks = trust_fetch_load(&j->f, &err);
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
	struct trust_fetch f;
	pthread_attr_t attr;

	if (!d->trust)
		return;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	while (trust_fetch_take(d->trust, &f) == 1) {
		struct keyfetch_job *j = calloc(1, sizeof(*j));
		pthread_t t;

		if (j) {
			j->f = f;
			j->wake_fd = d->wake_fd;
			pthread_mutex_lock(&keyfetch_lock);
			keyfetch_running++;
			pthread_mutex_unlock(&keyfetch_lock);
			if (pthread_create(&t, &attr, keyfetch_thread, j) == 0) {
				pr_debug("trusted issuer %s: fetching %s", f.issuer, f.source);
				continue;
			}
			pthread_mutex_lock(&keyfetch_lock);
			keyfetch_running--;
			pthread_mutex_unlock(&keyfetch_lock);
			free(j);
		}
		pr_warn("trusted issuer %s: cannot start a fetch of %s", f.issuer, f.source);
		trust_fetch_done(d->trust, f.issuer, f.source, NULL);
		trust_fetch_clear(&f);
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
			pr_debug("trusted issuer %s: %zu keys from %s", j->f.issuer,
				 dp_keyset_count(j->ks), j->f.source);
		else
			pr_warn("trusted issuer %s: keys not loaded: %s", j->f.issuer, j->why);
		trust_fetch_done(d->trust, j->f.issuer, j->f.source, j->ks);
		keyfetch_job_free(j);
	}
	return true;
}

bool keyfetch_stop(struct deputyd *d)
{
	struct timespec until;
	bool idle;

	/* A thread still inside libcurl when the process exits could meet OpenSSL's exit
	 * handlers: wait for the fetches, which end within their timeouts (discovery's two
	 * documents tried, then the JWKS: three requests at most). */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 3 * JWKS_FETCH_TIMEOUT + 2;
	pthread_mutex_lock(&keyfetch_lock);
	while (keyfetch_running > 0 &&
	       pthread_cond_timedwait(&keyfetch_idle, &keyfetch_lock, &until) == 0) {
	}
	idle = keyfetch_running == 0;
	pthread_mutex_unlock(&keyfetch_lock);
	keyfetch_collect(d);
	return idle;
}
