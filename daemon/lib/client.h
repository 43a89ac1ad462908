/* SPDX-License-Identifier: MIT */
/* client: the deputy CLI's side of the wire protocol (include/deputy/proto.h). */
#ifndef DEPUTY_CLIENT_H
#define DEPUTY_CLIENT_H

#include <deputy/proto.h>
#include <stdbool.h>

#include "util.h"

#define DP_DEFAULT_SOCKET "/run/deputy/deputy.sock"

struct dpc {
	int fd;
	uint32_t seq;
	/* the last reply */
	struct dp_hdr hdr;
	uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
};

/* --socket value, else $DEPUTY_SOCKET, else the default. */
const char *dpc_socket_path(const char *opt);
int dpc_connect(struct dpc *c, const char *path, struct dp_err *err) DP_WUR;
void dpc_close(struct dpc *c);
/* Send m (built with dp_msg_init(&m, …, type, dpc_next_seq(c), 0)) and wait for its reply.
 * A DP_MSG_ERROR reply is returned as -EPERM with its reason in err. */
int dpc_call(struct dpc *c, struct dp_msg *m, struct dp_err *err) DP_WUR;
uint32_t dpc_next_seq(struct dpc *c);
/* A field of the last reply: true and its value when present. */
bool dpc_field(const struct dpc *c, uint16_t tag, const uint8_t **val, uint16_t *len);
/* A string field as a malloc'd C string, or NULL. */
char *dpc_field_str(const struct dpc *c, uint16_t tag);
uint64_t dpc_field_u64(const struct dpc *c, uint16_t tag, uint64_t dflt);

#endif
