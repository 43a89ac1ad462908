/* SPDX-License-Identifier: MIT */
/*
 * chan: the proxy's side of its socketpair to deputyd (include/deputy/proto.h frames, one
 * per SOCK_SEQPACKET message). Threads share it: a call holds a lock from its send to its
 * reply, so replies need no routing. Losing deputyd is fatal: without it the proxy can
 * mediate nothing, and exiting makes new redirected connections fail (refused).
 */
#ifndef DEPUTY_PROXY_CHAN_H
#define DEPUTY_PROXY_CHAN_H

#include <deputy/proto.h>
#include <stdint.h>

struct chan_reply {
	struct dp_hdr h;
	uint8_t payload[DP_PROTO_MAX_PAYLOAD];
};

void chan_init(int fd);
/* Sends m (finished here), with pass_fd as SCM_RIGHTS when >= 0, and waits for the reply.
 * 0, or -errno (then the proxy is exiting). */
int chan_call(struct dp_msg *m, int pass_fd, struct chan_reply *rep);
/* The same; a descriptor the reply carries goes to *rfd (-1 when none): the caller's. */
int chan_call_fd(struct dp_msg *m, int pass_fd, struct chan_reply *rep, int *rfd);
/* Sends a DP_F_NOREPLY message. */
void chan_tell(struct dp_msg *m);
/* The first field `tag` of a reply; NULL when absent. */
const uint8_t *chan_field(const struct chan_reply *rep, uint16_t tag, uint16_t *len);
/* A string field copied NUL-terminated into out (cut to outsz); 0 or -ENOENT. */
int chan_str(const struct chan_reply *rep, uint16_t tag, char *out, size_t outsz);
uint64_t chan_u64(const struct chan_reply *rep, uint16_t tag);

#endif
