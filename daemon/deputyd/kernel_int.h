/* SPDX-License-Identifier: MIT */
/*
 * kernel_int: what the kernel module's files share and nobody else sees: the loader's
 * state. kernel.c loads and attaches, kernel_policy.c writes the policy maps,
 * kernel_names.c turns events into the audit log's words.
 */
#ifndef DEPUTY_KERNEL_INT_H
#define DEPUTY_KERNEL_INT_H

#include <limits.h>

#include "deputy.skel.h"
#include "kernel.h"

enum kernel_prog {
	KP_CONNECT4,
	KP_CONNECT6,
	KP_SENDMSG4,
	KP_SENDMSG6,
	KP_SOCK_CREATE,
	KP_CONNECT_UNIX,
	KP_SENDMSG_UNIX,
	KP_SOCK_STATE,
	KP_SOCKET_ENTER,
	KP_SETSOCKOPT,
	KP_GETSOCKOPT,
	KP_GETPEERNAME4,
	KP_GETPEERNAME6,
	KP_SOCKOPS,
	KP_BIND4,
	KP_BIND6,
	KP_N_,
};

struct dp_kernel {
	struct deputy_bpf *skel;
	struct ring_buffer *rb;
	dp_kernel_event_fn fn;
	void *ctx;
	int cg_fd;
	uint64_t parent_cgid;
	int link_fd[KP_N_]; /* -1: not attached (the unix hooks on older kernels) */
	char pin_dir[PATH_MAX];
};

#endif
