// SPDX-License-Identifier: MIT
/*
 * tls_onebyte: sends each HTTP request ONE BYTE PER SSL_write (or write() for http://), so
 * the shim's request parser must work across the worst possible split of a request.
 *
 *   tls_onebyte [-c CA] [-r ADDR] [-A AUTH] [-X METHOD] [-d DATA | -s SIZE] [-n COUNT] URL
 *
 * COUNT requests go one after the other on one keep-alive connection. Per request it
 * prints "sent BODY_LEN BODY_SHA256", then "status N" and the response body.
 */
#include "tlsclient.h"

int main(int argc, char **argv)
{
	struct tc_args a;
	struct tc_conn c;
	long i;

	tc_parse_args(argc, argv, NULL, NULL, &a);
	tc_take_url(argc, argv, &a);
	tc_connect(&c, &a);
	for (i = 0; i < a.count; i++) {
		struct tc_response r;
		size_t body_len, k;
		char *body = tc_body(&a, &body_len);
		const char *method = a.method ? a.method : body_len ? "POST" : "GET";
		char *head = tc_build_head(&a, method, a.url.path, (long long)body_len, NULL, 0);
		size_t head_len = strlen(head);
		char sha[65];

		tc_sha256_hex(body, body_len, sha);
		for (k = 0; k < head_len; k++)
			tc_write_all(&c, head + k, 1);
		for (k = 0; k < body_len; k++)
			tc_write_all(&c, body + k, 1);
		printf("sent %zu %s\n", body_len, sha);
		tc_read_response(&c, &r);
		tc_print_response(&r);
		tc_response_free(&r);
		free(head);
		free(body);
	}
	tc_close(&c);
	return 0;
}
