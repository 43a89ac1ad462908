/* SPDX-License-Identifier: MIT */
/*
 * The HTTP methods deputy knows (design: Policy, "Methods are matched exactly"). On a
 * routed destination a request whose method is not one of these, exactly as written here
 * (upper-case), is refused unless the route it matches names that method.
 */
#ifndef DEPUTY_METHODS_H
#define DEPUTY_METHODS_H

#include <stdbool.h>
#include <string.h>

static inline bool dp_http_method_known(const char *m)
{
	static const char *const known[] = {
	    "GET",   "HEAD",   "POST",	   "PUT",	"DELETE", "CONNECT", "OPTIONS",
	    "TRACE", "PATCH",  "PROPFIND", "PROPPATCH", "MKCOL",  "COPY",    "MOVE",
	    "LOCK",  "UNLOCK", "REPORT",   "SEARCH",	"PURGE",  "QUERY",
	};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strcmp(m, known[i]) == 0)
			return true;
	return false;
}

#endif
