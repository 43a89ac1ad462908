// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the revocation list (daemon/deputyd/revoke.c), revoked.json as
 * deputyd reads it at start and on every reload. Root's file, but a torn or hand-edited
 * one must be refused in one line, never crash deputyd nor half-apply; and an accepted
 * list must revoke exactly what it names.
 */
#include "../../daemon/lib/util.c"
#include "../../daemon/deputyd/revoke.c"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dp_err err = {{0}};
	json_t *arr = NULL, *e;
	size_t i;

	if (revoke_parse((const char *)data, size, &arr, &err) != 0) {
		if (arr || !err.msg[0] || strchr(err.msg, '\n'))
			__builtin_trap(); /* refused: nothing taken, one line said */
		return 0;
	}
	if (!json_is_array(arr))
		__builtin_trap();
	list = arr;
	json_array_foreach(arr, i, e)
	{
		const char *g = json_string_value(json_object_get(e, "grant"));
		const char *u = json_string_value(json_object_get(e, "user"));
		struct dp_grant grant = {.jti = (char *)(g ? g : "\x01none"),
					 .sub = (char *)(u ? u : "\x01none")};
		const char *m = revoke_match(&grant);

		if (!g == !u || !m || strcmp(m, g ? "grant" : "user") != 0)
			__builtin_trap(); /* each entry names one thing, and it is revoked */
	}
	{
		struct dp_grant none = {.jti = "\x02not-listed", .sub = "\x02not-listed"};

		if (revoke_match(&none))
			__builtin_trap();
	}
	revoke_free();
	return 0;
}
