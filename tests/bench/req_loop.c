// SPDX-License-Identifier: MIT
/*
 * req_loop: the agent side of the request-overhead benchmark. One libcurl easy handle, so
 * every request reuses one keep-alive HTTPS connection, POSTs a small body N times and
 * times each request on its own, so the driver can tell deputy's added cost per request
 * (median, p99) apart from the wall-clock ratio.
 *
 *   req_loop -c CAFILE -R HOST:PORT:ADDR [-n REQUESTS] [-w WARMUP] [-s BODY] [-o FILE] [-f]
 *            [-m] URL
 *
 * -f opens a new connection for every request (TCP and TLS handshakes included), to time
 * what a new connection costs. -m makes the body an MCP tools/call of read_inbox, padded to
 * BODY bytes, to time what an MCP route adds to a request of the same size.
 * Prints one JSON line: n, errors (transfers that failed or were not 2xx), wall_us, p50_us,
 * p90_us, p99_us, rss_kib (this process's VmRSS at the end). -o writes each request's time
 * in microseconds, one per line, in order. Warmup requests are neither timed nor counted.
 */
#include <curl/curl.h>
#include <stdbool.h>
#include <unistd.h>

#include "bench.h"

#define RL_MAX_N 1000000

static size_t rl_discard(char *p, size_t size, size_t nmemb, void *arg)
{
	size_t *total = arg;

	*total += size * nmemb;
	return size * nmemb;
}

static int rl_one(CURL *h, long *status)
{
	size_t got = 0;

	curl_easy_setopt(h, CURLOPT_WRITEDATA, &got);
	if (curl_easy_perform(h) != CURLE_OK)
		return -1;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
	return *status >= 200 && *status < 300 ? 0 : -1;
}

/* Over 100 lines: a benchmark's options, loop and report, read top to bottom. */
int main(int argc, char **argv)
{
	const char *cafile = NULL, *resolve = NULL, *out = NULL;
	long n = 5000, warmup = 200, body_size = 64, status = 0, errors = 0;
	struct curl_slist *res = NULL, *hdrs = NULL;
	uint64_t *t, start, wall;
	char body[4096];
	bool fresh = false, mcp = false;
	CURL *h;
	int o;

	while ((o = getopt(argc, argv, "c:R:n:w:s:o:fm")) != -1) {
		switch (o) {
		case 'f':
			fresh = true;
			break;
		case 'm':
			mcp = true;
			break;
		case 'c':
			cafile = optarg;
			break;
		case 'R':
			resolve = optarg;
			break;
		case 'n':
			n = atol(optarg);
			break;
		case 'w':
			warmup = atol(optarg);
			break;
		case 's':
			body_size = atol(optarg);
			break;
		case 'o':
			out = optarg;
			break;
		default:
			return 2;
		}
	}
	if (optind + 1 != argc || !cafile || n < 1 || n > RL_MAX_N || warmup < 0 || body_size < 0 ||
	    body_size > (long)sizeof(body)) {
		fprintf(
		    stderr,
		    "usage: req_loop -c CA -R H:P:A [-n N] [-w W] [-s SIZE] [-o FILE] [-f] URL\n");
		return 2;
	}
	t = calloc((size_t)n, sizeof(*t));
	if (!t || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return 2;
	h = curl_easy_init();
	if (!h)
		return 2;
	for (long i = 0; i < body_size; i++)
		body[i] = (char)('a' + i % 26);
	if (mcp) {
		static const char pre[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\","
					  "\"params\":{\"name\":\"read_inbox\",\"arguments\":"
					  "{\"pad\":\"",
				  post[] = "\"}}}";

		if (body_size < (long)(sizeof(pre) + sizeof(post)))
			return 2;
		memcpy(body, pre, sizeof(pre) - 1);
		memcpy(body + body_size - (long)sizeof(post) + 1, post, sizeof(post) - 1);
	}
	if (resolve)
		res = curl_slist_append(res, resolve);
	/* What an agent sends today: the service account's static credential. */
	hdrs = curl_slist_append(hdrs, "Authorization: Bearer service-account-secret-0000");
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	curl_easy_setopt(h, CURLOPT_URL, argv[optind]);
	curl_easy_setopt(h, CURLOPT_CAINFO, cafile);
	curl_easy_setopt(h, CURLOPT_RESOLVE, res);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, rl_discard);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, body_size);
	curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, fresh ? 1L : 0L);
	curl_easy_setopt(h, CURLOPT_FORBID_REUSE, fresh ? 1L : 0L);
	for (long i = 0; i < warmup; i++)
		if (rl_one(h, &status) != 0)
			errors++;
	start = bench_now_ns();
	for (long i = 0; i < n; i++) {
		uint64_t t0 = bench_now_ns();

		if (rl_one(h, &status) != 0)
			errors++;
		t[i] = bench_now_ns() - t0;
	}
	wall = bench_now_ns() - start;
	if (out) {
		FILE *f = fopen(out, "we");

		if (f) {
			for (long i = 0; i < n; i++)
				fprintf(f, "%.3f\n", (double)t[i] / 1000.0);
			fclose(f);
		}
	}
	{
		long rss = bench_rss_kib(0);
		double p50 = bench_quantile_us(t, (size_t)n, 0.50);
		double p90 = bench_quantile_us(t, (size_t)n, 0.90);
		double p99 = bench_quantile_us(t, (size_t)n, 0.99);

		printf("{\"n\":%ld,\"errors\":%ld,\"last_status\":%ld,\"wall_us\":%.1f,"
		       "\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"rss_kib\":%ld}\n",
		       n, errors, status, (double)wall / 1000.0, p50, p90, p99, rss);
	}
	curl_easy_cleanup(h);
	curl_slist_free_all(res);
	curl_slist_free_all(hdrs);
	curl_global_cleanup();
	free(t);
	return 0;
}
