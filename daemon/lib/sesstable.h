/* SPDX-License-Identifier: MIT */
/*
 * sesstable: a session table as deputyd hands it out (daemon/deputyd/table.c says what it
 * holds and why), parsed and matched the same way in the shim and in deputy-proxy: the
 * holder's first match is deputyd's (route.c), and a request is decided locally only when
 * the table covers it exactly. Everything else — another route first, a deny route, no
 * route, an unknown method, an ambiguous or absolute-form path, a destination not among
 * the route host's addresses, a token near its expiry — goes to deputyd.
 */
#ifndef DEPUTY_SESSTABLE_H
#define DEPUTY_SESSTABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deputy/proto.h"
#include "route.h"

#define STBL_MAX_ADDRS 512

struct stbl_ext { /* what an entry adds to its route */
	int kind; /* enum dp_entry */
	const char *header, *token, *jti, *scope;
	int64_t exp;
};

/* Static or one allocation: no pointer leaves it. */
struct stbl {
	uint64_t gen;
	size_t n;
	struct dp_route routes[DP_TABLE_MAX_ENTRIES];
	struct stbl_ext ext[DP_TABLE_MAX_ENTRIES];
	struct dp_cidr addrs[STBL_MAX_ADDRS];
	size_t n_addrs;
	size_t arena_used;
	char arena[DP_PROTO_MAX_PAYLOAD + DP_PROTO_MAX_PAYLOAD / 4 + 1];
};

/* A TABLE payload (GEN, ENTRY…) into t: 0, or -1 on anything unexpected (then t->n is 0). */
int stbl_parse(struct stbl *t, const uint8_t *raw, size_t len);

/* The entry whose token a request may carry without asking deputyd, or NULL. family/addr/
 * dport: where the connection goes (AF_INET: 4 bytes, AF_INET6: 16; a v4-mapped v6 address
 * counts as v4); now: seconds since the epoch. */
const struct stbl_ext *stbl_find(const struct stbl *t, const char *host, int port,
				 const char *method, const char *target, int family,
				 const uint8_t *addr, int dport, int64_t now);

#endif
