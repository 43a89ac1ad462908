// SPDX-License-Identifier: MIT
/*
 * tls_echo_client: a TLS program that speaks no HTTP at all. It sends SIZE bytes of every
 * byte value (binary, NULs, CR/LF in odd places) in uneven pieces to the backend in --echo
 * mode and expects every byte back unchanged: the shim must pass such a stream through
 * untouched.
 *
 *   tls_echo_client [-c CA] [-r ADDR] [-s SIZE] [-n ROUNDS] tls://host:port
 *
 * Prints "echo ok BYTES SHA256" and exits 0, or says what differed and exits 1.
 */
#include "tlsclient.h"

int main(int argc, char **argv)
{
	struct tc_args a;
	struct tc_conn c;
	size_t size, total = 0, i;
	unsigned char *out, *in;
	char sha[65];
	long round;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char dig[32];

	tc_parse_args(argc, argv, NULL, NULL, &a);
	tc_take_url(argc, argv, &a);
	size = a.size_set ? a.size : 65536;
	out = malloc(size + 1);
	in = malloc(size + 1);
	if (!out || !in || !md)
		tc_die("malloc", strerror(ENOMEM));
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	tc_connect(&c, &a);
	for (round = 0; round < a.count; round++) {
		size_t off = 0, got = 0, piece = 1;

		/* Every byte value; round-dependent so rounds differ. */
		for (i = 0; i < size; i++)
			out[i] = (unsigned char)((i * 131 + (size_t)round * 17 + (i >> 8)) & 0xff);
		while (off < size) {
			size_t n = size - off < piece ? size - off : piece;

			tc_write_all(&c, out + off, n);
			off += n;
			piece = piece * 3 + 1;
			/* Read as we go: a server echoing into a full socket must not stall us. */
			while (got < off) {
				size_t r = tc_read_some(&c, in + got, off - got);

				if (r == 0)
					tc_die("echo", "connection closed early");
				got += r;
			}
		}
		if (memcmp(in, out, size) != 0) {
			for (i = 0; i < size && in[i] == out[i]; i++)
				;
			printf("echo mismatch round %ld at byte %zu\n", round, i);
			return 1;
		}
		EVP_DigestUpdate(md, out, size);
		total += size;
	}
	EVP_DigestFinal_ex(md, dig, NULL);
	EVP_MD_CTX_free(md);
	for (i = 0; i < 32; i++)
		sprintf(sha + 2 * i, "%02x", dig[i]);
	printf("echo ok %zu %s\n", total, sha);
	tc_close(&c);
	free(out);
	free(in);
	return 0;
}
