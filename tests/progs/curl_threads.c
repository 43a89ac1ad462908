// SPDX-License-Identifier: MIT
/*
 * curl_threads: libcurl from several threads at once, each reusing one easy handle (so its
 * requests share a keep-alive connection), alternating GET and POST-with-body over a list
 * of URLs. The shim must keep per-connection state apart across threads.
 *
 *   curl_threads -c CAFILE [-R HOST:PORT:ADDR]... [-A AUTH] [-t THREADS] [-n REQUESTS]
 *                [-s SIZE] [-2] URL...
 *
 * -R is CURLOPT_RESOLVE (like curl --resolve); -2 asks for HTTP/2 over TLS.
 * Prints one line per request, in completion order:
 *   "T I METHOD URL STATUS SENT_BODY_SHA256 RESPONSE_BODY"
 * and exits 0 when every transfer completed (whatever the HTTP status), 1 otherwise.
 */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#define CT_MAX_THREADS 64
#define CT_MAX_RESOLVE 8
#define CT_MAX_BODY (1u << 20)

static const char *cafile, *auth = "Authorization: Bearer service-account-secret-0000";
static char auth_buf[1024];
static const char *resolve[CT_MAX_RESOLVE];
static int nresolve, nthreads = 4, nrequests = 4, nurls, http2;
static size_t body_size = 2000;
static char **urls;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static int failures;

struct ct_buf {
	char *p;
	size_t n;
};

static size_t ct_collect(char *p, size_t size, size_t nmemb, void *arg)
{
	struct ct_buf *b = arg;
	size_t n = size * nmemb;
	char *np;

	if (b->n + n > CT_MAX_BODY)
		return 0;
	np = realloc(b->p, b->n + n + 1);
	if (!np)
		return 0;
	memcpy(np + b->n, p, n);
	b->p = np;
	b->n += n;
	b->p[b->n] = '\0';
	return n;
}

static void ct_sha256_hex(const void *p, size_t n, char out[65])
{
	unsigned char md[32];
	int i;

	EVP_Digest(p, n, md, NULL, EVP_sha256(), NULL);
	for (i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

static void *ct_thread(void *arg)
{
	long t = (long)arg;
	struct curl_slist *res = NULL, *hdrs = NULL;
	CURL *h = curl_easy_init();
	int i, k;

	if (!h) {
		__atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST);
		return NULL;
	}
	for (k = 0; k < nresolve; k++)
		res = curl_slist_append(res, resolve[k]);
	if (auth)
		hdrs = curl_slist_append(hdrs, auth);
	curl_easy_setopt(h, CURLOPT_CAINFO, cafile);
	curl_easy_setopt(h, CURLOPT_RESOLVE, res);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION,
			 http2 ? CURL_HTTP_VERSION_2TLS : CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, ct_collect);
	for (i = 0; i < nrequests; i++) {
		struct ct_buf resp = {0};
		const char *url = urls[(t + i) % nurls];
		bool post = i % 2 == 1;
		size_t n = post ? body_size + (size_t)t * 31 + (size_t)i : 0;
		char *body = malloc(n + 1), sha[65];
		long status = 0;
		CURLcode rc;
		size_t j;

		if (!body)
			break;
		for (j = 0; j < n; j++)
			body[j] = (char)('A' + (j * 13 + (size_t)t + (size_t)i) % 26);
		ct_sha256_hex(body, n, sha);
		curl_easy_setopt(h, CURLOPT_URL, url);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
		if (post) {
			curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
			curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
		} else {
			curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
		}
		rc = curl_easy_perform(h);
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		pthread_mutex_lock(&out_lock);
		if (rc != CURLE_OK) {
			printf("%ld %d %s %s error %s\n", t, i, post ? "POST" : "GET", url,
			       curl_easy_strerror(rc));
			failures++;
		} else {
			/* Bodies of the test backend are one JSON line. */
			while (resp.n > 0 &&
			       (resp.p[resp.n - 1] == '\n' || resp.p[resp.n - 1] == '\r'))
				resp.p[--resp.n] = '\0';
			printf("%ld %d %s %s %ld %s %s\n", t, i, post ? "POST" : "GET", url, status,
			       sha, resp.p ? resp.p : "");
		}
		fflush(stdout);
		pthread_mutex_unlock(&out_lock);
		free(resp.p);
		free(body);
	}
	curl_easy_cleanup(h);
	curl_slist_free_all(res);
	curl_slist_free_all(hdrs);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t th[CT_MAX_THREADS];
	long t;
	int o;

	while ((o = getopt(argc, argv, "c:R:A:t:n:s:2")) != -1) {
		switch (o) {
		case 'c':
			cafile = optarg;
			break;
		case 'R':
			if (nresolve == CT_MAX_RESOLVE)
				return 2;
			resolve[nresolve++] = optarg;
			break;
		case 'A':
			if (!strcmp(optarg, "-")) {
				auth = NULL;
			} else {
				snprintf(auth_buf, sizeof(auth_buf), "Authorization: %s", optarg);
				auth = auth_buf;
			}
			break;
		case 't':
			nthreads = atoi(optarg);
			break;
		case 'n':
			nrequests = atoi(optarg);
			break;
		case 's':
			body_size = strtoul(optarg, NULL, 10);
			break;
		case '2':
			http2 = 1;
			break;
		default:
			return 2;
		}
	}
	if (optind >= argc || nthreads < 1 || nthreads > CT_MAX_THREADS || nrequests < 0 ||
	    body_size > CT_MAX_BODY / 2) {
		fprintf(stderr,
			"usage: curl_threads -c CA [-R H:P:A] [-t N] [-n M] [-s SIZE] URL...\n");
		return 2;
	}
	urls = argv + optind;
	nurls = argc - optind;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return 2;
	for (t = 0; t < nthreads; t++)
		if (pthread_create(&th[t], NULL, ct_thread, (void *)t) != 0) {
			nthreads = (int)t;
			failures++;
			break;
		}
	for (t = 0; t < nthreads; t++)
		pthread_join(th[t], NULL);
	curl_global_cleanup();
	return failures ? 1 : 0;
}
