// SPDX-License-Identifier: MIT
/*
 * Unit tests for daemon/httpd.c over real loopback sockets: both documents, 404/405/400,
 * hostile heads, clients that stall or flood the slots, document swaps, IPv6, clean stop.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "httpd.h"
#include "unit.h"

#define JWKS                                                                                       \
	"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"k1\",\"x\":\"x\",\"y\":\"y\"}]}"
#define META "{\"issuer\":\"https://deputy.test\"}"

static struct dp_httpd *srv;
static int srv_port;
static int srv_family = AF_INET;

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n++;
	closedir(d);
	return n;
}

/* A blocking client socket connected to srv, with generous timeouts so a server bug shows
 * as a failure, not a hang. */
static int client_connect(int family, int port)
{
	struct timeval tv = {.tv_sec = 20};
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_addr = in6addr_loopback;
		s6->sin6_port = htons((uint16_t)port);
		sl = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		s4->sin_port = htons((uint16_t)port);
		sl = sizeof(*s4);
	}
	if (connect(fd, (struct sockaddr *)&ss, sl) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Reads until EOF into buf (NUL-terminated); the length, or -1 on error/timeout. */
static ssize_t read_all(int fd, char *buf, size_t size)
{
	size_t n = 0;

	for (;;) {
		ssize_t r = recv(fd, buf + n, size - 1 - n, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == ECONNRESET && n > 0)
			break;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		n += (size_t)r;
		if (n == size - 1)
			break;
	}
	buf[n] = '\0';
	return (ssize_t)n;
}

static ssize_t send_all(int fd, const char *data, size_t len)
{
	size_t n = 0;

	while (n < len) {
		ssize_t r = send(fd, data + n, len - n, MSG_NOSIGNAL);

		if (r < 0)
			return n > 0 ? (ssize_t)n : -1;
		n += (size_t)r;
	}
	return (ssize_t)n;
}

/* One raw exchange: sends req (len bytes), returns the whole response in buf. */
static ssize_t exchange(const char *req, size_t len, char *buf, size_t size)
{
	int fd = client_connect(srv_family, srv_port);
	ssize_t n;

	if (fd < 0)
		return -1;
	send_all(fd, req, len);
	n = read_all(fd, buf, size);
	close(fd);
	return n;
}

static int status_of(const char *resp)
{
	int st;

	if (sscanf(resp, "HTTP/1.1 %d ", &st) != 1)
		return -1;
	return st;
}

static const char *body_of(const char *resp)
{
	const char *p = strstr(resp, "\r\n\r\n");

	return p ? p + 4 : NULL;
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n"

static void expect_status(const char *req, size_t len, int want, char *buf, size_t size,
			  const char **why)
{
	static char msg[256];
	ssize_t n = exchange(req, len, buf, size);

	*why = NULL;
	if (n < 0) {
		*why = "no response";
		return;
	}
	if (status_of(buf) != want) {
		snprintf(msg, sizeof(msg), "want %d, got \"%.60s\"", want, buf);
		*why = msg;
	}
}

#define check_status(req, len, want)                                                               \
	do {                                                                                       \
		char buf_[16384];                                                                  \
		const char *why_;                                                                  \
		expect_status(req, len, want, buf_, sizeof(buf_), &why_);                          \
		if (why_)                                                                          \
			fail("%s: %s", #req, why_);                                                \
	} while (0)
#define check_status_str(req, want) check_status(req, strlen(req), want)

static void test_start(void)
{
	struct dp_err err = {{0}};

	srv = httpd_start("127.0.0.1:0", JWKS, META, &err);
	if (!srv)
		fail("httpd_start: %s", err.msg);
	srv_port = httpd_port(srv);
	check(srv_port > 0 && srv_port < 65536);
}

static void test_jwks(void)
{
	char buf[16384];
	ssize_t n = exchange(GET(HTTPD_JWKS_PATH), strlen(GET(HTTPD_JWKS_PATH)), buf, sizeof(buf));
	char want_len[64];

	check(n > 0);
	check(status_of(buf) == 200);
	check(strstr(buf, "\r\nContent-Type: application/json\r\n") != NULL);
	snprintf(want_len, sizeof(want_len), "\r\nContent-Length: %zu\r\n", strlen(JWKS));
	check(strstr(buf, want_len) != NULL);
	check(strstr(buf, "\r\nConnection: close\r\n") != NULL);
	check_str(body_of(buf), JWKS);

	/* a query string does not change the resource */
	n = exchange(GET(HTTPD_JWKS_PATH "?x=1"), strlen(GET(HTTPD_JWKS_PATH "?x=1")), buf,
		     sizeof(buf));
	check(n > 0 && status_of(buf) == 200);
	check_str(body_of(buf), JWKS);

	/* HTTP/1.0 without Host is fine */
	n = exchange("GET " HTTPD_JWKS_PATH " HTTP/1.0\r\n\r\n",
		     strlen("GET " HTTPD_JWKS_PATH " HTTP/1.0\r\n\r\n"), buf, sizeof(buf));
	check(n > 0 && status_of(buf) == 200);
}

static void test_metadata(void)
{
	char buf[16384];
	ssize_t n =
	    exchange(GET(HTTPD_METADATA_PATH), strlen(GET(HTTPD_METADATA_PATH)), buf, sizeof(buf));

	check(n > 0);
	check(status_of(buf) == 200);
	check(strstr(buf, "\r\nContent-Type: application/json\r\n") != NULL);
	check_str(body_of(buf), META);
}

static void test_metadata_document(void)
{
	char *doc = httpd_metadata_json("https://deputy.test", "[::1]:8471");
	json_error_t jerr;
	json_t *j, *v;

	check(doc != NULL);
	j = json_loads(doc, 0, &jerr);
	free(doc);
	if (!j)
		fail("not JSON: %s", jerr.text);
	check(json_is_object(j));
	check_str(json_string_value(json_object_get(j, "issuer")), "https://deputy.test");
	check_str(json_string_value(json_object_get(j, "jwks_uri")),
		  "http://[::1]:8471/.well-known/jwks.json");
	v = json_object_get(j, "response_types_supported");
	check(json_is_array(v) && json_array_size(v) == 0);
	json_decref(j);
	check(httpd_metadata_json(NULL, "127.0.0.1:1") == NULL);
}

static void test_head(void)
{
	char buf[16384];
	const char req[] = "HEAD " HTTPD_JWKS_PATH " HTTP/1.1\r\nHost: x\r\n\r\n";
	char want_len[64];
	ssize_t n = exchange(req, strlen(req), buf, sizeof(buf));

	check(n > 0 && status_of(buf) == 200);
	snprintf(want_len, sizeof(want_len), "\r\nContent-Length: %zu\r\n", strlen(JWKS));
	check(strstr(buf, want_len) != NULL);
	check_str(body_of(buf), "");
}

static void test_not_found_and_method(void)
{
	char buf[16384];
	const char post[] =
	    "POST " HTTPD_JWKS_PATH " HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";

	check_status_str(GET("/"), 404);
	check_status_str(GET("/.well-known/jwks.json/"), 404);
	check_status_str(GET("/.well-known/jwks.jsonx"), 404);
	check_status_str(GET("/.well-known/JWKS.json"), 404);
	check_status_str(GET("/.well-known/%6Awks.json"), 404);
	check_status_str("DELETE " HTTPD_METADATA_PATH " HTTP/1.1\r\nHost: x\r\n\r\n", 405);
	check(exchange(post, strlen(post), buf, sizeof(buf)) > 0);
	check(status_of(buf) == 405);
	check(strstr(buf, "\r\nAllow: GET, HEAD\r\n") != NULL);
	/* methods are case-sensitive (RFC 9110 §9.1) */
	check_status_str("get " HTTPD_JWKS_PATH " HTTP/1.1\r\nHost: x\r\n\r\n", 405);
}

static void test_malformed(void)
{
	static const char h2[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	static const char nul[] = "GET /.well-known/jwks.json\0 HTTP/1.1\r\nHost: x\r\n\r\n";

	check_status_str("hello world\r\n\r\n", 400);
	check_status_str("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
			 400); /* a TLS ClientHello */
	check_status(h2, sizeof(h2) - 1, 400);
	check_status(nul, sizeof(nul) - 1, 400);
	check_status_str("GET " HTTPD_JWKS_PATH "\r\n\r\n", 400); /* HTTP/0.9 */
	check_status_str("GET " HTTPD_JWKS_PATH " HTTP/1.2\r\nHost: x\r\n\r\n", 400);
	check_status_str("GET " HTTPD_JWKS_PATH " HTTP/2\r\nHost: x\r\n\r\n", 400);
	check_status_str("GET  " HTTPD_JWKS_PATH " HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	check_status_str("GET http://x" HTTPD_JWKS_PATH " HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	check_status_str("GET " HTTPD_JWKS_PATH " HTTP/1.1\nHost: x\n\n", 400); /* bare LF */
	check_status_str("GET " HTTPD_JWKS_PATH " HTTP/1.1\rHost: x\r\n\r\n", 400);
	check_status_str("GET " HTTPD_JWKS_PATH " HTTP/1.1\r\n\r\n", 400); /* no Host */
	check_status_str("GET " HTTPD_JWKS_PATH " HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
	check_status_str("GET " HTTPD_JWKS_PATH " HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400);
	check_status_str("GET " HTTPD_JWKS_PATH " HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400);
	check_status_str("GET " HTTPD_JWKS_PATH " HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n", 400);
	check_status_str("GET " HTTPD_JWKS_PATH " HTTP/1.1\r\nHost: x\r\nX: a\x01z\r\n\r\n", 400);
	check_status_str("G(ET " HTTPD_JWKS_PATH " HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	check_status_str("GET /a\x7f HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	check_status_str("\r\n\r\n", 400);
	/* a head cut short by a half-close still gets an answer */
	{
		char buf[4096];
		int fd = client_connect(srv_family, srv_port);

		check(fd >= 0);
		send_all(fd, "GET / HTTP/1.1\r\nHost:", 21);
		shutdown(fd, SHUT_WR);
		check(read_all(fd, buf, sizeof(buf)) > 0);
		close(fd);
		check(status_of(buf) == 400);
	}
}

static void test_oversized(void)
{
	static char req[20000];
	size_t n;

	/* a request line that never ends */
	memcpy(req, "GET /", 5);
	memset(req + 5, 'a', 9000);
	check_status(req, 9005, 400);

	/* a head that is too large, sent complete */
	n = (size_t)snprintf(req, sizeof(req),
			     "GET " HTTPD_JWKS_PATH " HTTP/1.1\r\nHost: x\r\nX-Big: ");
	memset(req + n, 'b', 9000);
	n += 9000;
	memcpy(req + n, "\r\n\r\n", 4);
	check_status(req, n + 4, 400);

	/* many headers, each fine, together too many bytes */
	n = (size_t)snprintf(req, sizeof(req), "GET " HTTPD_JWKS_PATH " HTTP/1.1\r\nHost: x\r\n");
	while (n < 12000)
		n += (size_t)snprintf(req + n, sizeof(req) - n, "X-H: 0123456789\r\n");
	memcpy(req + n, "\r\n", 2);
	check_status(req, n + 2, 400);

	/* a target just over the limit */
	memcpy(req, "GET /", 5);
	memset(req + 5, 'c', 2100);
	n = 2105 + (size_t)snprintf(req + 2105, sizeof(req) - 2105, " HTTP/1.1\r\nHost: x\r\n\r\n");
	check_status(req, n, 400);

	/* and a head just under the cap is served */
	n = (size_t)snprintf(req, sizeof(req),
			     "GET " HTTPD_JWKS_PATH " HTTP/1.1\r\nHost: x\r\nX-Pad: ");
	memset(req + n, 'p', 8192 - n - 4);
	memcpy(req + 8192 - 4, "\r\n\r\n", 4);
	check_status(req, 8192, 200);
}

/* True when fd is still open from the server's side: no EOF, no response, no error. */
static bool still_pending(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return poll(&p, 1, 0) == 0;
}

static void test_stalled_client(void)
{
	char buf[16384];
	int silent = client_connect(srv_family, srv_port);
	int slow = client_connect(srv_family, srv_port);
	ssize_t n;

	check(silent >= 0 && slow >= 0);
	send_all(slow, "GET /.well-known/", 17);
	n = exchange(GET(HTTPD_JWKS_PATH), strlen(GET(HTTPD_JWKS_PATH)), buf, sizeof(buf));
	check(n > 0 && status_of(buf) == 200);
	/* served while both stallers were still connected and unanswered */
	check(still_pending(silent));
	check(still_pending(slow));
	/* the slow one can still finish its request */
	send_all(slow, "jwks.json HTTP/1.1\r\nHost: x\r\n\r\n", 31);
	check(read_all(slow, buf, sizeof(buf)) > 0 && status_of(buf) == 200);
	close(slow);
	/* and the silent one is dropped at its deadline (seconds), never answered with data */
	n = read_all(silent, buf, sizeof(buf));
	check(n == 0);
	close(silent);
}

static void test_slow_head_gets_408(void)
{
	char buf[4096];
	int fd = client_connect(srv_family, srv_port);

	check(fd >= 0);
	send_all(fd, "GET / HTTP/1.1\r\n", 16);
	check(read_all(fd, buf, sizeof(buf)) > 0);
	close(fd);
	check(status_of(buf) == 408);
}

static void test_many_clients(void)
{
	enum { N = 40 };
	int fds[N];
	char buf[16384];

	for (int i = 0; i < N; i++) {
		fds[i] = client_connect(srv_family, srv_port);
		if (fds[i] < 0)
			fail("connect %d: %s", i, strerror(errno));
		send_all(fds[i], "GET /.well-known/", 17);
	}
	/* finish them in reverse order: none waits on another */
	for (int i = N - 1; i >= 0; i--) {
		const char *rest = i % 2 ? "jwks.json HTTP/1.1\r\nHost: x\r\n\r\n"
					 : "oauth-authorization-server HTTP/1.1\r\nHost: x\r\n\r\n";

		send_all(fds[i], rest, strlen(rest));
		if (read_all(fds[i], buf, sizeof(buf)) <= 0 || status_of(buf) != 200)
			fail("client %d: \"%.40s\"", i, buf);
		check_str(body_of(buf), i % 2 ? JWKS : META);
	}
	for (int i = 0; i < N; i++)
		close(fds[i]);
}

static void test_slots_exhausted(void)
{
	enum { N = 100 }; /* more than the server's slots */
	int fds[N];
	char buf[16384];
	ssize_t n;

	for (int i = 0; i < N; i++) {
		fds[i] = client_connect(srv_family, srv_port);
		if (fds[i] < 0)
			fail("connect %d: %s", i, strerror(errno));
	}
	/* the newest connection evicts a stale one instead of waiting behind them all */
	n = exchange(GET(HTTPD_JWKS_PATH), strlen(GET(HTTPD_JWKS_PATH)), buf, sizeof(buf));
	for (int i = 0; i < N; i++)
		close(fds[i]);
	check(n > 0 && status_of(buf) == 200);
}

static void test_swap_documents(void)
{
	char buf[16384];

	check(httpd_set_documents(srv, "{\"keys\":[]}", NULL) == 0);
	check(exchange(GET(HTTPD_JWKS_PATH), strlen(GET(HTTPD_JWKS_PATH)), buf, sizeof(buf)) > 0);
	check_str(body_of(buf), "{\"keys\":[]}");
	check(exchange(GET(HTTPD_METADATA_PATH), strlen(GET(HTTPD_METADATA_PATH)), buf,
		       sizeof(buf)) > 0);
	check_str(body_of(buf), META);
	check(httpd_set_documents(srv, JWKS, "{}") == 0);
	check(exchange(GET(HTTPD_METADATA_PATH), strlen(GET(HTTPD_METADATA_PATH)), buf,
		       sizeof(buf)) > 0);
	check_str(body_of(buf), "{}");
}

static void test_stop(void)
{
	int fd;

	httpd_stop(srv);
	srv = NULL;
	fd = client_connect(srv_family, srv_port);
	if (fd >= 0)
		close(fd);
	check(fd < 0 && errno == ECONNREFUSED);
}

static void test_refused_addresses(void)
{
	struct dp_err err = {{0}};

	check(httpd_start("0.0.0.0:0", JWKS, META, &err) == NULL);
	check(strstr(err.msg, "not a loopback address") != NULL);
	check(httpd_start("[::]:0", JWKS, META, &err) == NULL);
	check(httpd_start("localhost:0", JWKS, META, &err) == NULL);
	check(httpd_start(NULL, JWKS, META, &err) == NULL);
	check(httpd_start("127.0.0.1", JWKS, META, &err) == NULL);
}

static void test_port_in_use(void)
{
	struct dp_err err = {{0}};
	struct dp_httpd *a = httpd_start("127.0.0.1:0", JWKS, META, &err), *b;
	char addr[32];

	if (!a)
		fail("start: %s", err.msg);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", httpd_port(a));
	b = httpd_start(addr, JWKS, META, &err);
	httpd_stop(a);
	if (b) {
		httpd_stop(b);
		fail("second server on the same port started");
	}
	check(strstr(err.msg, "Address already in use") != NULL);
}

static void test_no_fd_leak(void)
{
	int before = count_fds();
	struct dp_err err = {{0}};

	for (int i = 0; i < 20; i++) {
		struct dp_httpd *h = httpd_start("127.0.0.1:0", JWKS, META, &err);
		int fd;

		if (!h)
			fail("start: %s", err.msg);
		/* leave a connection open at stop time */
		fd = client_connect(AF_INET, httpd_port(h));
		httpd_stop(h);
		if (fd >= 0)
			close(fd);
	}
	check(count_fds() == before);
}

static bool ipv6_available(void)
{
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&s6, sizeof(s6)) == 0;

	if (fd >= 0)
		close(fd);
	return ok;
}

static void test_ipv6(void)
{
	struct dp_err err = {{0}};
	char buf[16384];

	srv = httpd_start("[::1]:0", JWKS, META, &err);
	if (!srv)
		fail("httpd_start [::1]: %s", err.msg);
	srv_family = AF_INET6;
	srv_port = httpd_port(srv);
	check(exchange(GET(HTTPD_JWKS_PATH), strlen(GET(HTTPD_JWKS_PATH)), buf, sizeof(buf)) > 0);
	check(status_of(buf) == 200);
	check_str(body_of(buf), JWKS);
	check_status_str("garbage\r\n\r\n", 400);
	httpd_stop(srv);
	srv = NULL;
	srv_family = AF_INET;
}

int main(void)
{
	RUN(test_start);
	if (!srv)
		return 1;
	RUN(test_jwks);
	RUN(test_metadata);
	RUN(test_metadata_document);
	RUN(test_head);
	RUN(test_not_found_and_method);
	RUN(test_malformed);
	RUN(test_oversized);
	RUN(test_stalled_client);
	RUN(test_slow_head_gets_408);
	RUN(test_many_clients);
	RUN(test_slots_exhausted);
	RUN(test_swap_documents);
	RUN(test_stop);
	RUN(test_refused_addresses);
	RUN(test_port_in_use);
	RUN(test_no_fd_leak);
	if (ipv6_available())
		RUN(test_ipv6);
	else
		printf("SKIP: test_ipv6: no IPv6 loopback on this host\n");
	UNIT_EXIT();
}
