// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the wire-field parser (daemon/deputyd/wire.c): the payload of every
 * frame a local process sends to deputyd, which runs as root. Beyond not crashing, an
 * accepted payload must mean exactly what its bytes say: every field lies inside the
 * payload, strings and integers are its bytes, and the fields encoded again with the
 * protocol's own writer make the same bytes' worth and parse to the same fields. Each USE
 * (a field list of its own, a batch's use of a session token) goes through wire_use_parse:
 * an accepted one, written again, parses to the same use; a refused one says why.
 */
#include "../../daemon/lib/util.c"
#include "../../daemon/deputyd/wire.c"

#include <stdlib.h>

static struct wire_fields first, second;
static uint8_t again[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];

static void check_inside(const struct wire_fields *f, const uint8_t *p, size_t len)
{
	size_t total = 0;

	for (uint16_t t = 1; t < DP_T_MAX_; t++) {
		if (!f->has[t]) {
			if (f->str[t] || f->raw[t])
				abort();
			continue;
		}
		if (t == DP_T_ARGV || f->raw[t] < p || f->raw[t] + f->rawlen[t] > p + len)
			abort();
		if (wire_tag_is_u64(t) &&
		    (f->rawlen[t] != 8 || memcmp(&f->u64[t], f->raw[t], 8) != 0))
			abort();
		if (f->str[t] && (strlen(f->str[t]) != f->rawlen[t] ||
				  memcmp(f->str[t], f->raw[t], f->rawlen[t]) != 0))
			abort();
		if (!wire_tag_is_u64(t) && t != DP_T_ADDR && t != DP_T_DATA && !f->str[t])
			abort();
		total += 4 + f->rawlen[t];
	}
	if (f->argc > WIRE_MAX_ARGV)
		abort();
	for (size_t i = 0; i < f->argc; i++)
		total += 4 + strlen(f->argv[i]);
	for (size_t i = 0; i < f->n_uses && i < DP_USES_MAX; i++) {
		if (f->use[i] < p || f->use[i] + f->use_len[i] > p + len)
			abort();
		total += 4 + f->use_len[i];
	}
	/* Nothing was skipped: the fields account for every byte (uses past the limit are
	 * only counted, for the handler to refuse the batch). */
	if (f->n_uses <= DP_USES_MAX && total != len)
		abort();
}

static void check_same(const struct wire_fields *a, const struct wire_fields *b)
{
	for (uint16_t t = 1; t < DP_T_MAX_; t++) {
		if (a->has[t] != b->has[t] || a->rawlen[t] != b->rawlen[t] ||
		    a->u64[t] != b->u64[t] || !a->str[t] != !b->str[t])
			abort();
		if (a->has[t] && memcmp(a->raw[t], b->raw[t], a->rawlen[t]) != 0)
			abort();
	}
	if (a->argc != b->argc || a->n_uses != b->n_uses)
		abort();
	for (size_t i = 0; i < a->n_uses; i++)
		if (a->use_len[i] != b->use_len[i] || memcmp(a->use[i], b->use[i], a->use_len[i]))
			abort();
	for (size_t i = 0; i < a->argc; i++)
		if (strcmp(a->argv[i], b->argv[i]) != 0)
			abort();
}

static struct wire_use use1, use2;
static uint8_t use_again[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];

static void check_use(const uint8_t *p, size_t len)
{
	struct dp_err err = {{0}};
	struct dp_msg m;

	if (wire_use_parse(p, len, &use1, &err) != 0) {
		if (!err.msg[0])
			abort();
		return;
	}
	if (use1.port < 1 || use1.port > 65535 || !use1.jti[0] || !use1.method[0] ||
	    !use1.host[0] || !use1.target[0] ||
	    (strcmp(use1.scheme, "http") && strcmp(use1.scheme, "https")))
		abort();
	dp_msg_init(&m, use_again, sizeof(use_again), 0, 0, 0);
	dp_msg_put_str(&m, DP_T_JTI, use1.jti);
	dp_msg_put_str(&m, DP_T_METHOD, use1.method);
	dp_msg_put_str(&m, DP_T_HOST, use1.host);
	dp_msg_put_u64(&m, DP_T_PORT, (uint64_t)use1.port);
	dp_msg_put_str(&m, DP_T_TARGET, use1.target);
	dp_msg_put_str(&m, DP_T_SCHEME, use1.scheme);
	if (use1.cookie)
		dp_msg_put_u64(&m, DP_T_COOKIE, use1.cookie);
	if (m.err ||
	    wire_use_parse(use_again + DP_PROTO_HDR_LEN, m.len - DP_PROTO_HDR_LEN, &use2, &err) !=
		0 ||
	    memcmp(&use1, &use2, offsetof(struct wire_use, target)) != 0 ||
	    strcmp(use1.target, use2.target) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dp_err err = {{0}};
	struct dp_msg m;

	if (size > DP_PROTO_MAX_PAYLOAD)
		size = DP_PROTO_MAX_PAYLOAD;
	if (wire_parse(data, size, &first, &err) != 0) {
		if (!err.msg[0])
			abort(); /* a refusal always says why */
		return 0;
	}
	check_inside(&first, data, size);
	for (size_t i = 0; i < first.n_uses && i < DP_USES_MAX; i++)
		check_use(first.use[i], first.use_len[i]);
	if (first.n_uses > DP_USES_MAX)
		return 0; /* the rest were not kept: nothing to write again */

	/* Tags in ascending order, ARGV in its own order: another layout of the same fields. */
	dp_msg_init(&m, again, sizeof(again), DP_MSG_DECIDE, 1, 0);
	for (uint16_t t = 1; t < DP_T_MAX_; t++) {
		if (t == DP_T_ARGV)
			for (size_t i = 0; i < first.argc; i++)
				dp_msg_put_str(&m, DP_T_ARGV, first.argv[i]);
		else if (t == DP_T_USE)
			for (size_t i = 0; i < first.n_uses; i++)
				dp_msg_put(&m, DP_T_USE, first.use[i], first.use_len[i]);
		else if (first.has[t])
			dp_msg_put(&m, t, first.raw[t], first.rawlen[t]);
	}
	if (dp_msg_finish(&m) != 0 || m.len - DP_PROTO_HDR_LEN != size)
		abort();
	if (wire_parse(again + DP_PROTO_HDR_LEN, size, &second, &err) != 0)
		abort();
	check_inside(&second, again + DP_PROTO_HDR_LEN, size);
	check_same(&first, &second);
	return 0;
}
