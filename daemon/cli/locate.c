// SPDX-License-Identifier: MIT
/*
 * locate: deputyd's socket from the config when nothing else names it (deputyd listens
 * where its config says, so the CLI looks there before it falls back to the default),
 * session ids by unique prefix (as git takes commits: at least LOCATE_MIN_PREFIX
 * characters; deputyd does the matching, among the sessions this user may see), and the
 * times --since and --until take.
 */
#include "locate.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "config.h"

const char *cli_socket(const char *sock_opt, const char *config_opt, struct dp_err *err)
{
	static char from_config[256];
	const char *env = getenv("DEPUTY_SOCKET"), *path = config_opt, *sock;
	bool named = true;
	json_error_t jerr;
	json_t *root;

	if (sock_opt && *sock_opt)
		return sock_opt;
	if (env && *env)
		return env;
	if (!path || !*path)
		path = getenv("DEPUTY_CONFIG");
	if (!path || !*path) {
		path = DP_DEFAULT_CONFIG;
		named = false;
	}
	/* only the one key: the CLI needs no other part of the config to be valid */
	root = json_load_file(path, 0, &jerr);
	if (!root && !named)
		return DP_DEFAULT_SOCKET; /* not there, not ours to read: deputyd's default */
	if (!root) {
		dp_err_set(err, "config %s: %s", path, jerr.text);
		return NULL;
	}
	sock = json_string_value(json_object_get(root, "socket"));
	snprintf(from_config, sizeof(from_config), "%s", sock && *sock ? sock : DP_DEFAULT_SOCKET);
	json_decref(root);
	return from_config;
}

static bool locate_id_chars(const char *s)
{
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
			return false;
	return true;
}

int cli_session_id(struct dcli *c, const char *arg, char out[DP_ID_LEN], struct dp_err *err)
{
	static uint8_t buf[4096];
	size_t n = strlen(arg), i, count;
	char *data, cand[256] = "";
	struct dp_msg m;
	json_t *list, *e;
	int rc;

	if (n >= DP_ID_LEN || !locate_id_chars(arg)) {
		dp_err_set(err, "%s: not a session id", arg);
		return -EINVAL;
	}
	if (n < LOCATE_MIN_PREFIX) {
		dp_err_set(err, "%s: a session id prefix needs at least %d characters", arg,
			   LOCATE_MIN_PREFIX);
		return -EINVAL;
	}
	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_SESSIONS, dcli_next_seq(c), 0);
	dp_msg_put_str(&m, DP_T_SESSION, arg);
	rc = dcli_call(c, &m, err);
	if (rc)
		return rc;
	data = dcli_field_str(c, DP_T_DATA);
	list = data ? json_loads(data, 0, NULL) : NULL;
	free(data);
	if (!json_is_array(list)) {
		json_decref(list);
		dp_err_set(err, "deputyd sent a malformed list");
		return -EPROTO;
	}
	count = json_array_size(list);
	json_array_foreach(list, i, e)
	{
		const char *id = json_string_value(json_object_get(e, "session")) ?: "?";

		if (count == 1 || strcmp(id, arg) == 0) { /* a full id is never ambiguous */
			snprintf(out, DP_ID_LEN, "%s", id);
			json_decref(list);
			return 0;
		}
		if (i < 8)
			snprintf(cand + strlen(cand), sizeof(cand) - strlen(cand), "%s%s",
				 i ? ", " : "", id);
	}
	json_decref(list);
	if (count == 0) {
		dp_err_set(err, "%s: no such session", arg);
		return -ENOENT;
	}
	dp_err_set(err, "%s: ambiguous, %zu sessions match: %s%s", arg, count, cand,
		   count > 8 ? ", …" : "");
	return -EEXIST;
}

/* "10m" and friends: a number and one unit. */
static int locate_ago(const char *arg, int64_t *secs)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(arg, &end, 10);
	if (errno || end == arg || v < 0 || end[0] == '\0' || end[1] != '\0' || !isdigit(*arg))
		return -EINVAL;
	switch (*end) {
	case 's':
		break;
	case 'm':
		v *= 60;
		break;
	case 'h':
		v *= 3600;
		break;
	case 'd':
		v *= 86400;
		break;
	default:
		return -EINVAL;
	}
	if (v > 100LL * 366 * 86400)
		return -ERANGE;
	*secs = v;
	return 0;
}

/* RFC 3339: date 'T' (or space) time, optional fraction, 'Z' or an offset. */
static int locate_rfc3339(const char *s, struct timespec *out)
{
	struct tm tm = {0};
	long usec = 0;
	int len = 0, sign, oh, om;
	const char *p;

	if (sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
		   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &len) != 6 ||
	    len != 19)
		return -EINVAL;
	p = s + len;
	if (*p == '.') {
		long scale = 100000;

		if (!isdigit((unsigned char)*++p))
			return -EINVAL;
		for (; isdigit((unsigned char)*p); p++, scale /= 10)
			usec += scale * (*p - '0');
	}
	if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
	    tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
		return -EINVAL;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	out->tv_sec = timegm(&tm);
	out->tv_nsec = usec * 1000;
	if ((*p == 'Z' || *p == 'z') && p[1] == '\0')
		return 0;
	if ((*p != '+' && *p != '-') || sscanf(p + 1, "%2d:%2d%n", &oh, &om, &len) != 2 ||
	    len != 5 || p[6] != '\0' || oh > 23 || om > 59)
		return -EINVAL;
	sign = *p == '+' ? 1 : -1;
	out->tv_sec -= sign * (oh * 3600 + om * 60);
	return 0;
}

int cli_time_arg(const char *arg, char out[DP_TS_LEN], struct dp_err *err)
{
	struct timespec t;
	int64_t ago;

	if (locate_ago(arg, &ago) == 0) {
		clock_gettime(CLOCK_REALTIME, &t);
		t.tv_sec -= ago;
	} else if (locate_rfc3339(arg, &t) != 0) {
		dp_err_set(err, "%s: not a time (" CLI_TIME_HELP ")", arg);
		return -EINVAL;
	}
	dp_timestamp_at(&t, out);
	return 0;
}
