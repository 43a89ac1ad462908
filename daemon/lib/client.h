/* SPDX-License-Identifier: MIT */
/* client: the deputy CLI's side of the wire protocol (include/deputy/proto.h). */
#ifndef DEPUTY_CLIENT_H
#define DEPUTY_CLIENT_H

#include <deputy/proto.h>
#include <stdbool.h>

#include "util.h"

#define DP_DEFAULT_SOCKET "/run/deputy/deputy.sock"

struct dcli {
	int fd;
	uint32_t seq;
	/* the last reply */
	struct dp_hdr hdr;
	uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
};

/* --socket value, else $DEPUTY_SOCKET, else the default. */
const char *dcli_socket_path(const char *opt);
int dcli_connect(struct dcli *c, const char *path, struct dp_err *err) DP_WUR;
void dcli_close(struct dcli *c);
/* Send m (built with dp_msg_init(&m, …, type, dcli_next_seq(c), 0)) and wait for its reply.
 * A DP_MSG_ERROR reply is returned as -EPERM with its reason in err. */
int dcli_call(struct dcli *c, struct dp_msg *m, struct dp_err *err) DP_WUR;
uint32_t dcli_next_seq(struct dcli *c);
/* A field of the last reply: true and its value when present. */
bool dcli_field(const struct dcli *c, uint16_t tag, const uint8_t **val, uint16_t *len);
/* A string field as a malloc'd C string, or NULL. */
char *dcli_field_str(const struct dcli *c, uint16_t tag);
uint64_t dcli_field_u64(const struct dcli *c, uint16_t tag, uint64_t dflt);

#endif
