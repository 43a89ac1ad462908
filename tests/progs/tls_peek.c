// SPDX-License-Identifier: MIT
/*
 * tls_peek: sends one request, then reads the response by peeking before every read: with
 * -m int SSL_peek then SSL_read, with -m ex SSL_peek_ex then SSL_read_ex. Each read must
 * return exactly the bytes its peek showed, on a real response as on the 403 the shim
 * serves from memory. Prints "sent BODY_LEN BODY_SHA256", "status N" and the body.
 *
 *   tls_peek [-m int|ex] [-c CA] [-r ADDR] [-X METHOD] [-d DATA | -s SIZE] URL
 */
#include "tlsclient.h"

static bool use_ex;

static void opt(int o, const char *arg)
{
	if (o != 'm' || (strcmp(arg, "int") != 0 && strcmp(arg, "ex") != 0))
		exit(2);
	use_ex = strcmp(arg, "ex") == 0;
}

/* One peek then one read of what it showed: the byte count (0 at the end of the stream). */
static size_t peek_then_read(SSL *ssl, unsigned char *p, size_t n)
{
	static unsigned char seen[16384];
	size_t peeked = 0, got = 0;
	int ok;

	if (n > sizeof(seen))
		n = sizeof(seen);
	if (use_ex) {
		ok = SSL_peek_ex(ssl, seen, n, &peeked) == 1;
	} else {
		int r = SSL_peek(ssl, seen, (int)n);

		ok = r > 0;
		peeked = ok ? (size_t)r : 0;
	}
	if (!ok) {
		/* the end of the stream (close_notify, or a close OpenSSL 3 calls unexpected) */
		ERR_clear_error();
		return 0;
	}
	if (use_ex) {
		if (SSL_read_ex(ssl, p, peeked, &got) != 1)
			tc_die_ssl("SSL_read_ex after SSL_peek_ex");
	} else {
		int r = SSL_read(ssl, p, (int)peeked);

		if (r <= 0)
			tc_die_ssl("SSL_read after SSL_peek");
		got = (size_t)r;
	}
	if (got != peeked || memcmp(p, seen, got) != 0)
		tc_die("read", "the bytes differ from what the peek showed");
	return got;
}

int main(int argc, char **argv)
{
	struct tc_args a;
	struct tc_conn c;
	struct tc_response r;
	size_t body_len;
	char *body, *head, sha[65];
	bool eof = false;

	tc_parse_args(argc, argv, "m:", opt, &a);
	tc_take_url(argc, argv, &a);
	tc_connect(&c, &a);
	if (!c.ssl)
		tc_die(argv[0], "an https URL is needed");
	body = tc_body(&a, &body_len);
	head = tc_build_head(&a,
			     a.method	? a.method
			     : body_len ? "POST"
					: "GET",
			     a.url.path, (long long)body_len, NULL, 0);
	tc_write_all(&c, head, strlen(head));
	tc_write_all(&c, body, body_len);
	tc_sha256_hex(body, body_len, sha);
	printf("sent %zu %s\n", body_len, sha);
	for (;;) {
		long used = tc_parse_response((char *)c.buf, c.len, eof, false, &r);
		size_t n;

		if (used < 0 || (used == 0 && eof))
			tc_die("response", "malformed or cut short");
		if (used > 0)
			break; /* the backend and the 403 send no interim responses */
		tc_buf_reserve(&c, 16384);
		n = peek_then_read(c.ssl, c.buf + c.len, c.cap - c.len);
		eof = n == 0;
		c.len += n;
	}
	tc_print_response(&r);
	tc_response_free(&r);
	free(head);
	free(body);
	tc_close(&c);
	return 0;
}
