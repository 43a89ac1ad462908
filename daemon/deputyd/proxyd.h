/* SPDX-License-Identifier: MIT */
/*
 * proxyd: deputyd's side of deputy-proxy (design: layer 4). Starts the proxy as the
 * unprivileged user deputy-proxy (created if missing) with no capabilities, in a cgroup of
 * its own outside every session; watches it and restarts it with backoff; answers its
 * requests on a socketpair only the started process holds. Connections are attributed to a
 * session from kernel data (the accepted socket itself, looked up in the kernel's map of
 * redirected connections), never from what the proxy says. Also keeps each session's CA.
 */
#ifndef DEPUTY_PROXYD_H
#define DEPUTY_PROXYD_H

#include <stdint.h>

#include "deputyd.h"

/* Start the proxy when the config wants it (kernel on, "proxy": "on"); its events come
 * tagged ep_tag on d->epfd. A proxy that cannot start is retried, not fatal: meanwhile the
 * kernel refuses what it would redirect to it. */
void proxyd_start(struct deputyd *d, uint64_t ep_tag);
/* d->epfd said the proxy's channel has something. */
void proxyd_event(struct deputyd *d);
/* Every server tick: notice an exited proxy, restart it when due, forget closed sessions. */
void proxyd_tick(struct deputyd *d);
/* After a reload: restart the proxy if its settings changed. */
void proxyd_reload(struct deputyd *d);
void proxyd_stop(struct deputyd *d);

/* For proxyreq.c: the reply to the proxy's current request (a proxy that does not read
 * its replies is stopped), whether an address is one the proxy listens on, and a session's
 * CA (NULL when it has none). */
struct dp_msg;
struct sessca;
struct sockaddr_storage;
void proxyd_reply(struct deputyd *d, struct dp_msg *m);
void proxyd_reply_fd(struct deputyd *d, struct dp_msg *m, int fd); /* fd as SCM_RIGHTS */
bool proxyd_is_listener(const struct sockaddr_storage *ss);
struct sessca *proxyd_sessca(const char *sid);

/* The session's CA certificate (PEM), made on first use. NULL with err set. */
const char *proxyd_session_ca(struct session *s, struct dp_err *err);

#endif
