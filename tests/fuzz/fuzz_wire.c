// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the wire-field parser (daemon/deputyd/wire.c): the payload of every
 * frame a local process sends to deputyd, which runs as root. Beyond not crashing, an
 * accepted payload must mean exactly what its bytes say: every field lies inside the
 * payload, strings and integers are its bytes, and the fields encoded again with the
 * protocol's own writer make the same bytes' worth and parse to the same fields.
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
	/* Nothing was skipped: the fields account for every byte. */
	if (total != len)
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
	if (a->argc != b->argc)
		abort();
	for (size_t i = 0; i < a->argc; i++)
		if (strcmp(a->argv[i], b->argv[i]) != 0)
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

	/* Tags in ascending order, ARGV in its own order: another layout of the same fields. */
	dp_msg_init(&m, again, sizeof(again), DP_MSG_DECIDE, 1, 0);
	for (uint16_t t = 1; t < DP_T_MAX_; t++) {
		if (t == DP_T_ARGV)
			for (size_t i = 0; i < first.argc; i++)
				dp_msg_put_str(&m, DP_T_ARGV, first.argv[i]);
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
