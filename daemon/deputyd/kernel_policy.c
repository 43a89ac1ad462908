// SPDX-License-Identifier: MIT
/*
 * kernel_policy: the policy maps the BPF programs read (see kernel.h): each session's
 * entry and allow rules, the Unix sockets sessions may reach, where the proxy listens, and
 * the original destinations of the connections sent to it.
 *
 * Policy updates never open a gap: new allow rules are inserted before the session entry is
 * written and before rules that are no longer wanted are deleted.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "kernel_int.h"

#define KERNEL_MAX_RULES 65536 /* the allow map's size */

/* ---- policy -------------------------------------------------------------------------- */

static int kernel_rule_key(uint64_t cgid, const struct dp_kallow *a, struct dp_allow_key *key)
{
	int bits = a->family == AF_INET ? 32 : a->family == AF_INET6 ? 128 : -1;
	int full, rest;

	if (bits < 0 || a->prefix < 0 || a->prefix > bits)
		return -EINVAL;
	memset(key, 0, sizeof(*key));
	key->prefixlen = DP_ALLOW_FIXED_BITS + a->prefix;
	key->cgid[0] = (uint32_t)cgid;
	key->cgid[1] = (uint32_t)(cgid >> 32);
	key->family = (uint16_t)a->family;
	key->port = htons(a->port);
	/* Host bits are cleared so equal rules have equal keys (the trie ignores them). */
	full = a->prefix / 8;
	rest = a->prefix % 8;
	memcpy(key->addr, a->addr, full);
	if (rest)
		key->addr[full] = a->addr[full] & (uint8_t)(0xff << (8 - rest));
	return 0;
}

static bool kernel_key_of(const struct dp_allow_key *key, uint64_t cgid)
{
	return key->cgid[0] == (uint32_t)cgid && key->cgid[1] == (uint32_t)(cgid >> 32);
}

/* Deletes the session's rules that are not in keep[0..nkeep). */
static int kernel_rules_prune(struct dp_kernel *k, uint64_t cgid, const struct dp_allow_key *keep,
			      size_t nkeep)
{
	int fd = bpf_map__fd(k->skel->maps.allow);
	struct dp_allow_key cur, next, *del = NULL;
	size_t ndel = 0, cap = 0;
	bool first = true;
	int r = 0;

	/* Collect first: deleting during iteration restarts an LPM trie walk. */
	while (bpf_map_get_next_key(fd, first ? NULL : &cur, &next) == 0) {
		bool kept = false;

		first = false;
		cur = next;
		if (!kernel_key_of(&cur, cgid))
			continue;
		for (size_t i = 0; i < nkeep && !kept; i++)
			kept = memcmp(&keep[i], &cur, sizeof(cur)) == 0;
		if (kept)
			continue;
		if (ndel == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct dp_allow_key *n;

			if (ncap > KERNEL_MAX_RULES) {
				r = -E2BIG;
				break;
			}
			n = realloc(del, ncap * sizeof(*n));
			if (!n) {
				r = -ENOMEM;
				break;
			}
			del = n;
			cap = ncap;
		}
		del[ndel++] = cur;
	}
	for (size_t i = 0; i < ndel; i++)
		if (bpf_map_delete_elem(fd, &del[i]) != 0 && errno != ENOENT)
			r = -errno;
	free(del);
	return r;
}

int kernel_session_set(struct dp_kernel *k, uint64_t cgid, bool enforce,
		       const struct dp_kallow *allow, size_t n)
{
	int afd = bpf_map__fd(k->skel->maps.allow), sfd = bpf_map__fd(k->skel->maps.sessions);
	struct dp_session_val val = {0};
	struct dp_allow_key *keys;
	int r = 0;

	if (!cgid || n > KERNEL_MAX_RULES)
		return -EINVAL;
	keys = calloc(n ? n : 1, sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		r = kernel_rule_key(cgid, &allow[i], &keys[i]);
		if (r < 0)
			goto out;
	}
	for (size_t i = 0; i < n; i++) {
		uint32_t rule = allow[i].rule ? allow[i].rule : DP_RULE_ALLOW;

		if (bpf_map_update_elem(afd, &keys[i], &rule, BPF_ANY) != 0) {
			r = errno == ENOSPC || errno == ENOMEM || errno == E2BIG ? -E2BIG : -errno;
			pr_warn("kernel: session %llu: adding allow rule: %s",
				(unsigned long long)cgid, strerror(errno));
			goto out;
		}
	}
	/* Keep the counters; a racing increment may be lost, which only skews statistics. */
	if (bpf_map_lookup_elem(sfd, &cgid, &val) != 0)
		memset(&val, 0, sizeof(val));
	val.flags = enforce ? DP_SESSION_ENFORCE : 0;
	if (bpf_map_update_elem(sfd, &cgid, &val, BPF_ANY) != 0) {
		r = errno == E2BIG || errno == ENOMEM ? -E2BIG : -errno;
		pr_warn("kernel: session %llu: registering: %s", (unsigned long long)cgid,
			strerror(errno));
		goto out;
	}
	r = kernel_rules_prune(k, cgid, keys, n);
out:
	free(keys);
	return r;
}

int kernel_session_remove(struct dp_kernel *k, uint64_t cgid)
{
	int r = 0;

	if (bpf_map_delete_elem(bpf_map__fd(k->skel->maps.sessions), &cgid) != 0)
		r = -errno;
	/* Rules go even if the entry was missing: leftovers of a failed kernel_session_set. */
	kernel_rules_prune(k, cgid, NULL, 0);
	return r;
}

int kernel_session_stats(const struct dp_kernel *k, uint64_t cgid, struct dp_kernel_stats *out)
{
	struct dp_session_val val;

	if (bpf_map_lookup_elem(bpf_map__fd(k->skel->maps.sessions), &cgid, &val) != 0)
		return -errno;
	out->n_allow = val.n_allow;
	out->n_block = val.n_block;
	out->n_refused = val.n_refused;
	out->n_lost = val.n_lost;
	return 0;
}

int kernel_session_list(const struct dp_kernel *k, uint64_t *cgids, size_t max)
{
	int fd = bpf_map__fd(k->skel->maps.sessions);
	uint64_t cur = 0, next;
	size_t n = 0;

	while (bpf_map_get_next_key(fd, n ? &cur : NULL, &next) == 0) {
		if (n < max)
			cgids[n] = next;
		cur = next;
		if (++n > INT_MAX)
			break;
	}
	return (int)n;
}

/* ---- Unix sockets -------------------------------------------------------------------- */

/* "@name" is an abstract address: a NUL, then the name (event.h's key form). */
static int kernel_unix_key(const char *addr, struct dp_unix_key *key)
{
	size_t n = strlen(addr);

	memset(key, 0, sizeof(*key));
	if (n == 0 || n > DP_EV_PATH_LEN)
		return -EINVAL;
	key->abstract = addr[0] == '@';
	memcpy(key->path + key->abstract, addr + key->abstract, n - key->abstract);
	key->len = (uint32_t)n;
	return 0;
}

int kernel_unix_allow_set(struct dp_kernel *k, const char *const *addrs, size_t n)
{
	int fd = bpf_map__fd(k->skel->maps.unix_allow);
	struct dp_unix_key *keys = calloc(n ? n : 1, sizeof(*keys)), cur, next;
	bool first = true;
	uint32_t one = 1;
	int r = 0;

	if (!keys)
		return -ENOMEM;
	for (size_t i = 0; i < n && !r; i++) {
		r = kernel_unix_key(addrs[i], &keys[i]);
		if (!r && bpf_map_update_elem(fd, &keys[i], &one, BPF_ANY) != 0)
			r = -errno;
	}
	/* New entries first, then the old ones go: nothing both allow is refused meanwhile. A
	 * hash map's walk may restart after a delete; it then only revisits kept keys. */
	while (!r && bpf_map_get_next_key(fd, first ? NULL : &cur, &next) == 0) {
		bool kept = false;

		first = false;
		cur = next;
		for (size_t i = 0; i < n && !kept; i++)
			kept = memcmp(&keys[i], &cur, sizeof(cur)) == 0;
		if (!kept && bpf_map_delete_elem(fd, &cur) == 0)
			first = true;
	}
	free(keys);
	return r;
}

/* ---- the proxy ----------------------------------------------------------------------- */

int kernel_proxy_configure(struct dp_kernel *k, const struct dp_config *c)
{
	struct dp_proxy_cfg pc = {0};
	struct sockaddr_storage ss;
	socklen_t sl;
	uint32_t zero = 0;
	int r;

	r = config_parse_listen(c->proxy_listen, false, &ss, &sl);
	if (r < 0)
		return r;
	if (ss.ss_family != AF_INET)
		return -EINVAL;
	pc.on = c->proxy;
	pc.addr4 = ((struct sockaddr_in *)&ss)->sin_addr.s_addr;
	pc.port = ((struct sockaddr_in *)&ss)->sin_port;
	if (bpf_map_update_elem(bpf_map__fd(k->skel->maps.proxy_cfg), &zero, &pc, BPF_ANY) != 0)
		return -errno;
	return 0;
}

int kernel_proxied_lookup(struct dp_kernel *k, const struct sockaddr *agent_local, socklen_t len,
			  struct dp_proxied *out)
{
	static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	struct dp_proxied_key key = {0};

	if (agent_local->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)agent_local;

		key.family = AF_INET;
		key.port = ntohs(a->sin_port);
		memcpy(key.addr, &a->sin_addr, 4);
	} else if (agent_local->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)agent_local;
		const uint8_t *b = a->sin6_addr.s6_addr;
		bool mapped = memcmp(b, v4mapped, sizeof(v4mapped)) == 0;

		key.family = mapped ? AF_INET : AF_INET6;
		key.port = ntohs(a->sin6_port);
		memcpy(key.addr, mapped ? b + 12 : b, mapped ? 4 : 16);
	} else {
		return -EINVAL;
	}
	if (bpf_map_lookup_elem(bpf_map__fd(k->skel->maps.proxied), &key, out) != 0)
		return -errno;
	return 0;
}
