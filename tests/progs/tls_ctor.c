// SPDX-License-Identifier: MIT
/*
 * tls_ctor: makes an HTTPS request from its own constructor, before main — as programs do
 * that initialise a client library at load time. Under deputy this runs while (or before)
 * the shim initialises, the ordering case an LD_PRELOAD library meets in real programs.
 *
 *   tls_ctor [-c CA] [-r ADDR] [-A AUTH] [-d DATA | -s SIZE] URL
 *
 * glibc passes argc/argv to ELF constructors, so the constructor reads the usual options.
 * main then prints "ctor sent BODY_LEN BODY_SHA256", "status N", the body, and "main ran".
 */
#include "tlsclient.h"

static struct tc_response ctor_response;
static size_t ctor_body_len;
static char ctor_sha[65];

__attribute__((constructor)) static void tls_ctor_request(int argc, char **argv, char **envp)
{
	struct tc_args a;
	struct tc_conn c;
	char *body, *head;

	tc_parse_args(argc, argv, NULL, NULL, &a);
	tc_take_url(argc, argv, &a);
	body = tc_body(&a, &ctor_body_len);
	head = tc_build_head(&a, ctor_body_len ? "POST" : "GET", a.url.path,
			     (long long)ctor_body_len, NULL, 0);
	tc_sha256_hex(body, ctor_body_len, ctor_sha);
	tc_connect(&c, &a);
	tc_write_all(&c, head, strlen(head));
	tc_write_all(&c, body, ctor_body_len);
	tc_read_response(&c, &ctor_response);
	tc_close(&c);
	free(head);
	free(body);
	optind = 1;
}

int main(void)
{
	printf("ctor sent %zu %s\n", ctor_body_len, ctor_sha);
	tc_print_response(&ctor_response);
	tc_response_free(&ctor_response);
	printf("main ran\n");
	return 0;
}
