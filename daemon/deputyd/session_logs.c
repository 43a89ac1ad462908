// SPDX-License-Identifier: MIT
/*
 * session_logs: the sessions' logs as `deputy sessions` and `deputy logs` read them, for
 * open and closed sessions alike; the live counts come from the open ones.
 */
#include "deputyd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernel.h"

/* A record is one line of at most AUDIT_MAX_LINE bytes, so the first and last records are
 * read from the ends of the file: their cost must not grow with the log, which an agent
 * can make as long as it likes. */
static json_t *first_and_last_record(const char *path, json_t **last)
{
	static char buf[AUDIT_MAX_LINE + 1];
	json_t *first = NULL;
	struct stat st;
	ssize_t n;
	char *nl;
	int fd;

	*last = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0)
		goto out;
	n = pread(fd, buf, sizeof(buf), 0);
	if (n <= 0)
		goto out;
	nl = memchr(buf, '\n', (size_t)n);
	first = json_loadb(buf, nl ? (size_t)(nl - buf) : (size_t)n, 0, NULL);
	if (st.st_size > 1) {
		off_t from = st.st_size > (off_t)sizeof(buf) ? st.st_size - (off_t)sizeof(buf) : 0;
		size_t end, start;

		n = pread(fd, buf, sizeof(buf), from);
		if (n <= 0)
			goto out;
		end = buf[n - 1] == '\n' ? (size_t)n - 1 : (size_t)n;
		start = end;
		while (start > 0 && buf[start - 1] != '\n')
			start--;
		if (start > 0 || from == 0)
			*last = json_loadb(buf + start, end - start, 0, NULL);
	}
out:
	close(fd);
	return first;
}

int session_log_owner(struct deputyd *d, const char *id, uid_t *owner, bool *open)
{
	char path[PATH_MAX];
	struct session *s;
	json_t *first, *last;

	if (!session_id_valid(id))
		return -EINVAL;
	s = session_find(d, id);
	if (s) {
		*owner = s->uid;
		*open = true;
		return 0;
	}
	snprintf(path, sizeof(path), "%s/%s.jsonl", d->log_dir, id);
	first = first_and_last_record(path, &last);
	json_decref(last);
	if (!json_is_integer(json_object_get(first, "uid"))) {
		json_decref(first);
		return -ENOENT;
	}
	*owner = (uid_t)json_integer_value(json_object_get(first, "uid"));
	*open = false;
	json_decref(first);
	return 0;
}

ssize_t session_log_read(struct deputyd *d, const char *id, uint64_t off, char *buf, size_t n)
{
	char path[PATH_MAX];
	ssize_t r;
	int fd;

	if (!session_id_valid(id))
		return -EINVAL;
	snprintf(path, sizeof(path), "%s/%s.jsonl", d->log_dir, id);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = pread(fd, buf, n, (off_t)off);
	close(fd);
	return r < 0 ? -errno : r;
}

static json_t *session_summary(const char *id, json_t *first, json_t *last, bool open)
{
	json_t *e = json_pack(
	    "{s:s, s:s, s:O?, s:O?, s:O?, s:O?}", "session", id, "state", open ? "open" : "closed",
	    "user", json_object_get(first, "user"), "agent", json_object_get(first, "agent"), "uid",
	    json_object_get(first, "uid"), "opened", json_object_get(first, "ts"));

	if (e && !open && json_is_object(last) &&
	    strcmp(json_string_value(json_object_get(last, "type")) ?: "", "session_close") == 0) {
		json_object_set(e, "closed", json_object_get(last, "ts"));
		json_object_set(e, "counts", json_object_get(last, "counts"));
		if (json_is_string(json_object_get(last, "reason")))
			json_object_set(e, "reason", json_object_get(last, "reason"));
	}
	return e;
}

json_t *session_list_json(struct deputyd *d)
{
	json_t *out = json_array();
	DIR *dir = opendir(d->log_dir);
	struct dirent *de;

	if (!out)
		return NULL;
	while (dir && (de = readdir(dir))) {
		char id[DP_ID_LEN], path[PATH_MAX];
		size_t n = strlen(de->d_name);
		struct session *s;
		json_t *first, *last, *e;

		if (n != DP_ID_LEN - 1 + 6 || strcmp(de->d_name + DP_ID_LEN - 1, ".jsonl") != 0)
			continue;
		memcpy(id, de->d_name, DP_ID_LEN - 1);
		id[DP_ID_LEN - 1] = '\0';
		if (!session_id_valid(id))
			continue;
		snprintf(path, sizeof(path), "%s/%s", d->log_dir, de->d_name);
		first = first_and_last_record(path, &last);
		s = session_find(d, id);
		e = session_summary(id, first, last, s != NULL);
		if (e && s) {
			json_t *counts = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "tokens",
						   (json_int_t)s->counts.tokens, "denies",
						   (json_int_t)s->counts.denies, "passthrough",
						   (json_int_t)s->counts.passthrough, "responses",
						   (json_int_t)s->counts.responses, "connects",
						   (json_int_t)s->counts.connects, "blocked",
						   (json_int_t)s->counts.blocked, "unmediated",
						   (json_int_t)s->counts.unmediated);

			struct dp_kernel_stats ks = {0};

			if (counts && d->kernel &&
			    kernel_session_stats(d->kernel, s->cg_id, &ks) == 0)
				json_object_set_new(counts, "lost_events",
						    json_integer((json_int_t)ks.n_lost));
			json_object_set_new(e, "counts", counts);
		}
		if (e)
			json_array_append_new(out, e);
		json_decref(first);
		json_decref(last);
	}
	if (dir)
		closedir(dir);
	return out;
}
