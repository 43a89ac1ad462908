// SPDX-License-Identifier: MIT
/*
 * mint_rtt: the mint round trip, measured from inside a session (run it under `deputy run`,
 * without the shim: it speaks include/deputy/proto.h itself, so only deputyd is measured).
 * Each request is one DECIDE for a delegate route over deputyd's Unix socket; a reply that
 * is not a DECISION carrying a token counts as an error.
 *
 *   mint_rtt [-H HOST] [-P PORT] [-m METHOD] [-u TARGET] [-n N] [-w WARMUP] [-g GAP_US]
 *            [-T 1,2,4,16] [-d MS] [-p DEPUTYD_PID]
 *
 * Phase 0: the same N round trips to an echo process over a socketpair, answering each
 * DECIDE with a reply as long as deputyd's: what the socket alone costs ("without").
 * Phase 1: latency of N sequential round trips on one connection (-g sleeps between them,
 * as an agent does between requests). Phase 2: for each client count in -T, that many
 * threads, each with its own connection, send back-to-back for -d ms; tokens/s, and the
 * CPU deputyd used meanwhile (from /proc/PID/stat) when -p names it. Phase 3: N/4 more
 * sequential round trips right after the busiest step, when deputyd has had no idle time
 * to precompute signing nonces: the latency of a token signed in full.
 * Prints one JSON object on stdout.
 */
#include <deputy/proto.h>
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define MR_MAX_THREADS 64
#define MR_MAX_STEPS 16

static const char *sock_path, *session, *host = "api.test", *method = "POST", *target = "/send";
static long port = 443;
static volatile bool stop;
/* The connection the requests say they travel on: deputyd delegates only when it goes to
 * the route's host (here the backend on 127.0.0.1:port), as a shim's request would. */
static uint64_t route_cookie;
static const uint8_t route_addr[4] = {127, 0, 0, 1};

static int mr_route_connect(void)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	socklen_t len = sizeof(route_cookie);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	memcpy(&sin.sin_addr, route_addr, 4);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_COOKIE, &route_cookie, &len) != 0)
		return -1;
	return fd; /* kept open for the whole run */
}

static int mr_connect(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(sock_path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, sock_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

static int mr_read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, (char *)buf + got, n - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/* One DECIDE round trip: 0 when deputyd delegated and sent a token. */
static int mr_decide(int fd, uint32_t seq)
{
	static __thread uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
	const uint8_t *val;
	struct dp_hdr h;
	struct dp_msg m;
	size_t off = 0;
	uint16_t tag, vlen;
	uint64_t verdict = DP_VERDICT_DENY;
	bool token = false;

	dp_msg_init(&m, buf, sizeof(buf), DP_MSG_DECIDE, seq, 0);
	dp_msg_put_str(&m, DP_T_SESSION, session);
	dp_msg_put_str(&m, DP_T_SCHEME, "https");
	dp_msg_put_str(&m, DP_T_HOST, host);
	dp_msg_put_u64(&m, DP_T_PORT, (uint64_t)port);
	dp_msg_put_str(&m, DP_T_METHOD, method);
	dp_msg_put_str(&m, DP_T_TARGET, target);
	dp_msg_put_u64(&m, DP_T_COOKIE, route_cookie);
	dp_msg_put_u64(&m, DP_T_FAMILY, AF_INET);
	dp_msg_put(&m, DP_T_ADDR, route_addr, 4);
	if (dp_msg_finish(&m) != 0 || write(fd, m.buf, m.len) != (ssize_t)m.len)
		return -1;
	if (mr_read_full(fd, &h, sizeof(h)) != 0 || dp_hdr_check(&h) != 0 ||
	    mr_read_full(fd, buf, h.len) != 0)
		return -1;
	if (h.type != DP_MSG_DECISION || h.seq != seq)
		return -1;
	while (dp_field_next(buf, h.len, &off, &tag, &val, &vlen) == 1) {
		if (tag == DP_T_VERDICT && vlen == 8)
			memcpy(&verdict, val, 8);
		if (tag == DP_T_TOKEN && vlen > 0)
			token = true;
	}
	return verdict == DP_VERDICT_DELEGATE && token ? 0 : -1;
}

/* n sequential round trips on a new connection; prints the "name":{…} member. */
static long mr_latency(const char *name, long n, long gap_us, uint64_t *lat)
{
	long errors = 0;
	int fd = mr_connect();

	if (fd < 0)
		return -1;
	for (long i = 0; i < n; i++) {
		uint64_t t0;

		if (gap_us)
			usleep((useconds_t)gap_us);
		t0 = bench_now_ns();
		if (mr_decide(fd, (uint32_t)i + 1) != 0)
			errors++;
		lat[i] = bench_now_ns() - t0;
	}
	close(fd);
	printf("\"%s\":{\"n\":%ld,\"gap_us\":%ld,\"errors\":%ld,", name, n, gap_us, errors);
	printf("\"p50_us\":%.2f,", bench_quantile_us(lat, (size_t)n, 0.50));
	printf("\"p90_us\":%.2f,", bench_quantile_us(lat, (size_t)n, 0.90));
	printf("\"p99_us\":%.2f,", bench_quantile_us(lat, (size_t)n, 0.99));
	printf("\"max_us\":%.2f}", bench_quantile_us(lat, (size_t)n, 1.0));
	return errors;
}

/* The echo side of phase 0: reads frames, answers each with reply_len bytes. */
static void mr_echo_child(int fd, size_t reply_len)
{
	static uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
	struct dp_hdr h;

	for (;;) {
		if (mr_read_full(fd, &h, sizeof(h)) != 0 || dp_hdr_check(&h) != 0 ||
		    mr_read_full(fd, buf, h.len) != 0)
			_exit(0);
		h.len = (uint32_t)(reply_len - DP_PROTO_HDR_LEN);
		h.type = DP_MSG_DECISION;
		memcpy(buf, &h, sizeof(h));
		if (write(fd, buf, reply_len) != (ssize_t)reply_len)
			_exit(1);
	}
}

/* Round trips to the echo child: no decision, no token, just the socket and a wakeup. */
static int mr_echo_latency(long n, uint64_t *lat)
{
	static uint8_t buf[DP_PROTO_HDR_LEN + DP_PROTO_MAX_PAYLOAD];
	struct dp_hdr h;
	struct dp_msg m;
	int sv[2], status;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		close(sv[0]);
		mr_echo_child(sv[1], 700); /* about a DECISION with a token */
	}
	close(sv[1]);
	for (long i = 0; i < n + 100; i++) {
		uint64_t t0 = bench_now_ns();

		dp_msg_init(&m, buf, sizeof(buf), DP_MSG_DECIDE, (uint32_t)i, 0);
		dp_msg_put_str(&m, DP_T_SESSION, session);
		dp_msg_put_str(&m, DP_T_SCHEME, "https");
		dp_msg_put_str(&m, DP_T_HOST, host);
		dp_msg_put_u64(&m, DP_T_PORT, (uint64_t)port);
		dp_msg_put_str(&m, DP_T_METHOD, method);
		dp_msg_put_str(&m, DP_T_TARGET, target);
		if (dp_msg_finish(&m) != 0 || write(sv[0], m.buf, m.len) != (ssize_t)m.len ||
		    mr_read_full(sv[0], &h, sizeof(h)) != 0 || mr_read_full(sv[0], buf, h.len) != 0)
			return -1;
		if (i >= 100) /* the first 100 warm up */
			lat[i - 100] = bench_now_ns() - t0;
	}
	close(sv[0]);
	waitpid(pid, &status, 0);
	printf("\"echo\":{\"n\":%ld,", n);
	printf("\"p50_us\":%.2f,", bench_quantile_us(lat, (size_t)n, 0.50));
	printf("\"p90_us\":%.2f,", bench_quantile_us(lat, (size_t)n, 0.90));
	printf("\"p99_us\":%.2f},", bench_quantile_us(lat, (size_t)n, 0.99));
	return 0;
}

struct mr_worker {
	pthread_t th;
	int fd;
	uint64_t ok, errors;
};

static void *mr_worker_main(void *arg)
{
	struct mr_worker *w = arg;
	uint32_t seq = 1;

	while (!stop) {
		if (mr_decide(w->fd, seq++) == 0) {
			w->ok++;
		} else {
			w->errors++;
			break;
		}
	}
	return NULL;
}

/* Over 100 lines: a benchmark's options, steps and report, read top to bottom. */
int main(int argc, char **argv)
{
	static struct mr_worker workers[MR_MAX_THREADS];
	long n = 2000, warmup = 100, gap_us = 0, step_ms = 1500, pid = 0;
	long steps[MR_MAX_STEPS] = {1, 2, 4, 16}, nsteps = 4, errors = 0;
	long clk = sysconf(_SC_CLK_TCK);
	uint64_t *lat;
	int fd, o;

	while ((o = getopt(argc, argv, "H:P:m:u:n:w:g:T:d:p:")) != -1) {
		switch (o) {
		case 'H':
			host = optarg;
			break;
		case 'P':
			port = atol(optarg);
			break;
		case 'm':
			method = optarg;
			break;
		case 'u':
			target = optarg;
			break;
		case 'n':
			n = atol(optarg);
			break;
		case 'w':
			warmup = atol(optarg);
			break;
		case 'g':
			gap_us = atol(optarg);
			break;
		case 'd':
			step_ms = atol(optarg);
			break;
		case 'p':
			pid = atol(optarg);
			break;
		case 'T': {
			char *s = optarg, *end;

			for (nsteps = 0; *s && nsteps < MR_MAX_STEPS; s = *end ? end + 1 : end) {
				steps[nsteps] = strtol(s, &end, 10);
				if (end == s || steps[nsteps] < 1 || steps[nsteps] > MR_MAX_THREADS)
					return 2;
				nsteps++;
			}
			break;
		}
		default:
			return 2;
		}
	}
	sock_path = getenv("DEPUTY_SOCKET");
	session = getenv("DEPUTY_SESSION");
	if (mr_route_connect() < 0) {
		perror("mint_rtt: connect to the route's host");
		return 1;
	}
	if (!sock_path || !session || n < 1 || n > 10000000 || step_ms < 1) {
		fprintf(stderr,
			"mint_rtt: run me under `deputy run` (DEPUTY_SOCKET, DEPUTY_SESSION)\n");
		return 2;
	}
	lat = calloc((size_t)n, sizeof(*lat));
	fd = mr_connect();
	if (!lat || fd < 0) {
		fprintf(stderr, "mint_rtt: cannot connect to %s: %s\n", sock_path, strerror(-fd));
		return 1;
	}
	for (long i = 0; i < warmup; i++)
		if (mr_decide(fd, (uint32_t)i + 1) != 0)
			errors++;
	close(fd);
	if (errors) {
		fprintf(stderr, "mint_rtt: %ld of %ld warm-up decisions did not delegate\n", errors,
			warmup);
		return 1;
	}
	printf("{");
	if (mr_echo_latency(n, lat) < 0)
		return 1;
	if (mr_latency("latency", n, gap_us, lat) < 0)
		return 1;
	printf(",\"throughput\":[");
	for (long s = 0; s < nsteps; s++) {
		long long cpu0 = pid ? bench_cpu_ticks((int)pid) : -1, cpu1;
		uint64_t t0, t1, ok = 0, err = 0;
		long k = steps[s], started = 0;

		stop = false;
		for (long i = 0; i < k; i++) {
			workers[i] = (struct mr_worker){.fd = mr_connect()};
			if (workers[i].fd < 0)
				break;
			started++;
		}
		t0 = bench_now_ns();
		for (long i = 0; i < started; i++)
			if (pthread_create(&workers[i].th, NULL, mr_worker_main, &workers[i]) != 0)
				return 1;
		usleep((useconds_t)step_ms * 1000);
		stop = true;
		for (long i = 0; i < started; i++) {
			pthread_join(workers[i].th, NULL);
			close(workers[i].fd);
			ok += workers[i].ok;
			err += workers[i].errors;
		}
		t1 = bench_now_ns();
		cpu1 = pid ? bench_cpu_ticks((int)pid) : -1;
		printf("%s{\"clients\":%ld,\"connected\":%ld,\"tokens\":%llu,\"errors\":%llu,"
		       "\"secs\":%.3f,\"tokens_per_s\":%.1f,\"daemon_cpu_s\":%.3f}",
		       s ? "," : "", k, started, (unsigned long long)ok, (unsigned long long)err,
		       (double)(t1 - t0) / 1e9, (double)ok / ((double)(t1 - t0) / 1e9),
		       cpu0 >= 0 && cpu1 >= 0 ? (double)(cpu1 - cpu0) / (double)clk : -1.0);
	}
	printf("],");
	if (mr_latency("latency_full_sign", n / 4 > 0 ? n / 4 : 1, gap_us, lat) < 0)
		return 1;
	printf("}\n");
	free(lat);
	return 0;
}
