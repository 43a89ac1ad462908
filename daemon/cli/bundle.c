// SPDX-License-Identifier: MIT
/* bundle: the session's trust bundle (see bundle.h). */
#include "bundle.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BUNDLE_FILE_MAX (16u << 20)

static const char *const bundle_vars[] = {
    "SSL_CERT_FILE",  "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO", "DENO_CERT",	     "PIP_CERT",	   "npm_config_cafile",
};

/* Appends the file's PEM text; a file that is missing or not a regular file is skipped
 * (the user's variables may name anything). */
static void append_file(FILE *out, const char *path, char (*seen)[PATH_MAX], size_t *n_seen)
{
	char real[PATH_MAX], *text = NULL;
	size_t len = 0;
	struct stat st;

	if (!path || !*path || !realpath(path, real) || stat(real, &st) != 0 ||
	    !S_ISREG(st.st_mode))
		return;
	for (size_t i = 0; i < *n_seen; i++)
		if (strcmp(seen[i], real) == 0)
			return;
	snprintf(seen[(*n_seen)++], PATH_MAX, "%s", real);
	if (dp_read_file(real, BUNDLE_FILE_MAX, &text, &len) != 0)
		return;
	fwrite(text, 1, len, out);
	if (len && text[len - 1] != '\n')
		fputc('\n', out);
	free(text);
}

int bundle_write(const char *ca_pem, char **path, struct dp_err *err)
{
	static char seen[DP_ARRAY_SIZE(bundle_vars) + 1][PATH_MAX];
	const char *base = getenv("XDG_RUNTIME_DIR");
	char dir[PATH_MAX], file[PATH_MAX + 16];
	size_t n_seen = 0;
	FILE *out;
	int fd;

	if (!base || access(base, W_OK | X_OK) != 0)
		base = "/tmp";
	snprintf(dir, sizeof(dir), "%s/deputy-trust.XXXXXX", base);
	if (!mkdtemp(dir)) { /* mode 0700 */
		dp_err_set(err, "trust bundle: %s: %s", dir, strerror(errno));
		return -errno;
	}
	snprintf(file, sizeof(file), "%s/ca-bundle.pem", dir);
	fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	out = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!out) {
		dp_err_set(err, "trust bundle: %s: %s", file, strerror(errno));
		if (fd >= 0)
			close(fd);
		rmdir(dir);
		return -EIO;
	}
	/* The system roots first (what OpenSSL trusts by default), then what the user's
	 * environment trusted, then the session's CA. */
	append_file(out, X509_get_default_cert_file(), seen, &n_seen);
	for (size_t i = 0; i < DP_ARRAY_SIZE(bundle_vars); i++)
		append_file(out, getenv(bundle_vars[i]), seen, &n_seen);
	fputs(ca_pem, out);
	if (fclose(out) != 0) {
		dp_err_set(err, "trust bundle: %s: %s", file, strerror(errno));
		unlink(file);
		rmdir(dir);
		return -EIO;
	}
	*path = strdup(file);
	if (!*path) {
		bundle_remove(file);
		dp_err_set(err, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

void bundle_setenv(const char *path)
{
	for (size_t i = 0; i < DP_ARRAY_SIZE(bundle_vars); i++)
		setenv(bundle_vars[i], path, 1);
}

void bundle_remove(const char *path)
{
	char dir[PATH_MAX], *slash;

	if (!path)
		return;
	unlink(path);
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash) {
		*slash = '\0';
		rmdir(dir);
	}
}
