// SPDX-License-Identifier: MIT
/*
 * tls_chunked: uploads a body with Transfer-Encoding: chunked, in chunks of uneven sizes
 * (1, 2, 3, 5, 8… bytes, then larger), each size line, data and CRLF written by its own
 * SSL_write, so chunk framing and write boundaries never line up.
 *
 *   tls_chunked [-c CA] [-r ADDR] [-A AUTH] [-X METHOD] [-s SIZE] [-n COUNT] [-e] [-t] URL
 *
 * -e sends "Expect: 100-continue" and waits for the interim 100 before the body;
 * -t adds a trailer field. Prints "sent BODY_LEN BODY_SHA256", "status N" and the body.
 */
#include "tlsclient.h"

static bool opt_expect, opt_trailer;

static void chunked_opt(int o, const char *arg)
{
	if (o == 'e')
		opt_expect = true;
	else if (o == 't')
		opt_trailer = true;
}

/* Waits for the "100 Continue" the backend sends before reading the body. */
static void wait_continue(struct tc_conn *c)
{
	for (;;) {
		struct tc_response r;
		long used;

		used = tc_parse_response((char *)c->buf + c->off, c->len - c->off, false, true, &r);
		if (used < 0)
			tc_die("interim response", "malformed");
		if (used > 0) {
			c->off += (size_t)used;
			if (r.status != 100) {
				fprintf(stderr, "expected 100 Continue, got %d\n", r.status);
				exit(1);
			}
			return;
		}
		tc_buf_reserve(c, 4096);
		size_t n = tc_read_some(c, c->buf + c->len, c->cap - c->len);

		if (n == 0)
			tc_die("interim response", "connection closed");
		c->len += n;
	}
}

int main(int argc, char **argv)
{
	static const char *const expect[] = {"Expect: 100-continue", "Trailer: X-Test-Trailer"};
	struct tc_args a;
	struct tc_conn c;
	long i;

	tc_parse_args(argc, argv, "et", chunked_opt, &a);
	tc_take_url(argc, argv, &a);
	if (!a.size_set && !a.data)
		a.size = 100000, a.size_set = true;
	tc_connect(&c, &a);
	for (i = 0; i < a.count; i++) {
		const char *extra[2];
		int nextra = 0;
		size_t body_len, off = 0, step = 1, prev = 1;
		char *body = tc_body(&a, &body_len), *head, sha[65], line[32];
		struct tc_response r;

		if (opt_expect)
			extra[nextra++] = expect[0];
		if (opt_trailer)
			extra[nextra++] = expect[1];
		head =
		    tc_build_head(&a, a.method ? a.method : "POST", a.url.path, -1, extra, nextra);
		tc_write_all(&c, head, strlen(head));
		if (opt_expect)
			wait_continue(&c);
		while (off < body_len) {
			size_t n = body_len - off < step ? body_len - off : step;
			size_t next = step + prev;

			/* Upper-case hex and a chunk extension on odd chunks: both are legal. */
			snprintf(line, sizeof(line), n % 2 ? "%zX;ext=1\r\n" : "%zx\r\n", n);
			tc_write_all(&c, line, strlen(line));
			tc_write_all(&c, body + off, n);
			tc_write_all(&c, "\r\n", 2);
			off += n;
			prev = step;
			step = next > 65536 ? 65536 : next;
		}
		if (opt_trailer)
			tc_write_all(&c, "0\r\nX-Test-Trailer: yes\r\n\r\n", 26);
		else
			tc_write_all(&c, "0\r\n\r\n", 5);
		tc_sha256_hex(body, body_len, sha);
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
