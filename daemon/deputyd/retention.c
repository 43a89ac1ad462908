// SPDX-License-Identifier: MIT
/*
 * retention: removes closed session logs older than `retention_days` (at start, then once a
 * day), never an open session's. Age is the log file's modification time, which is when its
 * last record (the seal) was written. Each removal is first appended to
 * `<state_dir>/retention.jsonl` with the hash of the removed log's seal, so `deputy audit
 * verify --all` can tell a log retention removed from one that went missing: the chain's
 * link to it must match what was recorded here.
 */
#include "retention.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "deputyd.h"

#define RETENTION_EVERY (24 * 3600)

/* Hash of the log's last line, if that line is a session_close; else -ENOENT. */
static int retention_seal_hash(const char *path, char out[AUDIT_HASH_HEX])
{
	static char buf[AUDIT_MAX_LINE + 2];
	struct stat st;
	size_t end, start;
	ssize_t n;
	off_t from;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = -ENOENT;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || st.st_size < 2)
		goto out;
	from = st.st_size > (off_t)sizeof(buf) ? st.st_size - (off_t)sizeof(buf) : 0;
	n = pread(fd, buf, sizeof(buf), from);
	if (n < 2 || buf[n - 1] != '\n')
		goto out;
	end = (size_t)n - 1;
	start = end;
	while (start > 0 && buf[start - 1] != '\n')
		start--;
	buf[end] = '\0';
	if (!strstr(buf + start, "\"type\":\"session_close\""))
		goto out;
	audit_hash_line(buf + start, end - start, out);
	rc = 0;
out:
	close(fd);
	return rc;
}

static int retention_note(struct deputyd *d, const char *id, const char *seal, time_t mtime)
{
	char path[PATH_MAX], ts[DP_TS_LEN], closed[DP_TS_LEN], *line;
	struct timespec when = {.tv_sec = mtime};
	json_t *rec;
	int fd, rc = 0;

	dp_timestamp(ts);
	dp_timestamp_at(&when, closed);
	rec = json_pack("{s:s, s:s, s:s, s:s, s:i}", "ts", ts, "session", id, "seal", seal,
			"closed", closed, "retention_days", d->cfg->retention_days);
	line = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
	json_decref(rec);
	if (!line)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%s/%s", d->cfg->state_dir, RETENTION_FILE);
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		rc = -errno;
	else if (dprintf(fd, "%s\n", line) < 0 || fdatasync(fd) < 0)
		rc = -EIO;
	if (fd >= 0)
		close(fd);
	free(line);
	return rc;
}

static void retention_consider(struct deputyd *d, const char *name, time_t cutoff)
{
	char id[DP_ID_LEN], path[PATH_MAX], state[PATH_MAX], seal[AUDIT_HASH_HEX];
	size_t n = strlen(name);
	struct stat st;
	int rc;

	if (n != DP_ID_LEN - 1 + 6 || strcmp(name + DP_ID_LEN - 1, ".jsonl") != 0)
		return;
	memcpy(id, name, DP_ID_LEN - 1);
	id[DP_ID_LEN - 1] = '\0';
	snprintf(path, sizeof(path), "%s/%s", d->log_dir, name);
	snprintf(state, sizeof(state), "%s/%s.state", d->log_dir, id);
	if (!session_id_valid(id) || session_find(d, id) || access(state, F_OK) == 0 ||
	    stat(path, &st) != 0 || st.st_mtime >= cutoff)
		return;
	/* a log that never got its seal is evidence of something: kept */
	if (retention_seal_hash(path, seal) != 0)
		return;
	rc = retention_note(d, id, seal, st.st_mtime);
	if (rc) {
		pr_warn("retention: cannot record removing session %s: %s; kept", id,
			strerror(-rc));
		return;
	}
	if (unlink(path) != 0) {
		pr_warn("retention: cannot remove %s: %s", path, strerror(errno));
		return;
	}
	pr_info("retention: removed session %s's log (closed %lld days ago, retention_days %d)", id,
		(long long)((time(NULL) - st.st_mtime) / 86400), d->cfg->retention_days);
}

void retention_tick(struct deputyd *d)
{
	int64_t now = dp_now();
	struct dirent *de;
	DIR *dir;

	if (now < d->retention_next)
		return;
	d->retention_next = now + RETENTION_EVERY;
	if (d->cfg->retention_days == 0)
		return;
	dir = opendir(d->log_dir);
	if (!dir)
		return;
	while ((de = readdir(dir)))
		retention_consider(d, de->d_name,
				   (time_t)(now - (int64_t)d->cfg->retention_days * 86400));
	closedir(dir);
}
