// SPDX-License-Identifier: MIT
/*
 * tls_pipeline: HTTP/1.1 pipelining. Writes COUNT requests (alternately GET and a POST
 * with a body) in ONE write before reading any answer, then reads COUNT responses, so the
 * shim must find request boundaries inside a single SSL_write and keep responses in order.
 *
 *   tls_pipeline [-c CA] [-r ADDR] [-A AUTH] [-s SIZE] [-n COUNT] URL
 *
 * Prints "sent I METHOD BODY_LEN BODY_SHA256" per request, then "status N" and the body
 * per response. Target of request I is URL's path with "?i=I" (or "&i=I") appended.
 */
#include "tlsclient.h"

int main(int argc, char **argv)
{
	struct tc_args a;
	struct tc_conn c;
	char *all = NULL;
	size_t all_len = 0, body_len;
	char *body;
	long i;

	tc_parse_args(argc, argv, NULL, NULL, &a);
	tc_take_url(argc, argv, &a);
	if (a.count == 1)
		a.count = 3;
	body = tc_body(&a, &body_len);
	if (!a.size_set && !a.data) {
		free(body);
		body = tc_pattern(body_len = 1000);
	}
	for (i = 0; i < a.count; i++) {
		bool post = i % 2 == 1;
		char path[sizeof(a.url.path) + 32], sha[65], *head;
		size_t n = post ? body_len : 0, hl;

		snprintf(path, sizeof(path), "%s%si=%ld", a.url.path,
			 strchr(a.url.path, '?') ? "&" : "?", i);
		head = tc_build_head(&a, post ? "POST" : "GET", path, (long long)n, NULL, 0);
		hl = strlen(head);
		all = realloc(all, all_len + hl + n);
		if (!all)
			tc_die("malloc", strerror(ENOMEM));
		memcpy(all + all_len, head, hl);
		memcpy(all + all_len + hl, body, n);
		all_len += hl + n;
		tc_sha256_hex(body, n, sha);
		printf("sent %ld %s %zu %s\n", i, post ? "POST" : "GET", n, sha);
		free(head);
	}
	tc_connect(&c, &a);
	/* One call: SSL_write writes all of it (no partial writes without the mode flag). */
	if (tc_write_some(&c, all, all_len) != all_len)
		tc_die("write", "short write");
	for (i = 0; i < a.count; i++) {
		struct tc_response r;

		tc_read_response(&c, &r);
		tc_print_response(&r);
		tc_response_free(&r);
	}
	tc_close(&c);
	free(all);
	free(body);
	return 0;
}
