// SPDX-License-Identifier: MIT
/*
 * grant_store: where the CLI keeps the grants `deputy login` obtained, one file per agent
 * under the user's config directory (XDG Base Directory), private to the user, and reading
 * a grant or token from a file or standard input.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

#define GRANT_FILE_MAX (1 << 20)

int cli_grant_path(const char *agent, char *out, size_t outsz)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	int n;

	if (strncmp(agent, "agent:", 6) == 0)
		agent += 6;
	if (xdg && xdg[0] == '/')
		n = snprintf(out, outsz, "%s/deputy/grants/%s.jwt", xdg, agent);
	else if (home && home[0] == '/')
		n = snprintf(out, outsz, "%s/.config/deputy/grants/%s.jwt", home, agent);
	else
		return -ENOENT;
	return n < 0 || (size_t)n >= outsz ? -ENAMETOOLONG : 0;
}

int cli_grant_store(const char *path, const char *token)
{
	char dir[4096];
	char *slash;
	int r;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash)
		return -EINVAL;
	*slash = '\0';
	r = dp_mkdir_p(dir, 0700);
	if (r)
		return r;
	/* a grant is a bearer credential of the user: 0600, and never a half-written file */
	return dp_write_file_atomic(path, token, strlen(token), 0600);
}

char *cli_read_token(const char *path)
{
	char *text = NULL;
	size_t len = 0;

	if (strcmp(path, "-") == 0) {
		size_t cap = 0;
		ssize_t r = getdelim(&text, &cap, '\0', stdin);

		if (r < 0) {
			free(text);
			return NULL;
		}
		len = (size_t)r;
	} else if (dp_read_file(path, GRANT_FILE_MAX, &text, &len) != 0) {
		return NULL;
	}
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
		text[--len] = '\0';
	return text;
}
