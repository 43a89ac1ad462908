// SPDX-License-Identifier: MIT
/*
 * Test client: TCP connect through io_uring (IORING_OP_CONNECT), which never calls the
 * connect() system call. --async forces the request onto an io-wq worker thread
 * (iou-wrk-N), the case where the connecting thread is not the submitting one.
 *   net_uring [--async] ADDR PORT        exit 0 or the errno of the connect
 */
#include <liburing.h>
#include <unistd.h>

#include "netaddr.h"

int main(int argc, char **argv)
{
	struct io_uring ring;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	struct sockaddr_storage ss;
	socklen_t len;
	int i = 1, async = 0, fd, r, res;

	if (i < argc && strcmp(argv[i], "--async") == 0) {
		async = 1;
		i++;
	}
	if (argc - i != 2 || netaddr_parse(argv[i], argv[i + 1], &ss, &len) != 0) {
		fprintf(stderr, "usage: net_uring [--async] ADDR PORT\n");
		return NETADDR_USAGE;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return netaddr_report("socket", errno);
	r = io_uring_queue_init(4, &ring, 0);
	if (r < 0)
		return netaddr_report("io_uring_queue_init", -r);
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_connect(sqe, fd, (struct sockaddr *)&ss, len);
	if (async)
		sqe->flags |= IOSQE_ASYNC;
	r = io_uring_submit(&ring);
	if (r < 0)
		return netaddr_report("io_uring_submit", -r);
	r = io_uring_wait_cqe(&ring, &cqe);
	if (r < 0)
		return netaddr_report("io_uring_wait_cqe", -r);
	res = cqe->res;
	io_uring_cqe_seen(&ring, cqe);
	io_uring_queue_exit(&ring);
	close(fd);
	return netaddr_report("connect", res < 0 ? -res : 0);
}
