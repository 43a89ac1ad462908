// SPDX-License-Identifier: MIT
/*
 * Unit tests for policy.c (what the kernel layer lets a session reach) and kevent.c (what
 * it reports back, as records of the session's log), on the real code: a parsed config,
 * a real audit log in a temporary directory, events shaped as the BPF side sends them.
 */
#include <arpa/inet.h>
#include <deputy/event.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "deputyd.h"
#include "jwt_helpers.h"
#include "kernel.h"
#include "unit.h"

#define HEAD                                                                                       \
	"{\"issuer\": \"https://deputy.test\", \"socket\": \"/run/deputy-unit.sock\", "            \
	"\"trusted_issuers\": [{\"issuer\": \"https://idp.test\", \"jwks_file\": \"/j.json\"}], "

static struct dp_config *parse(const char *text)
{
	struct dp_config *cfg = NULL;
	struct dp_err err;

	if (config_parse(text, strlen(text), &cfg, &err) != 0) {
		printf("config refused: %s\n", err.msg);
		return NULL;
	}
	return cfg;
}

static const struct dp_kallow *find_rule(const struct dp_kallow *a, size_t n, int family,
					 const char *addr, int prefix, uint16_t port)
{
	unsigned char bin[16];

	if (inet_pton(family, addr, bin) != 1)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (a[i].family == family && a[i].prefix == prefix && a[i].port == port &&
		    memcmp(a[i].addr, bin, family == AF_INET ? 4 : 16) == 0)
			return &a[i];
	return NULL;
}

/* Delegate and passthrough routes on their ports, CIDRs on any port; a deny route's
 * destination only marked (DP_RULE_STRICT: allows nothing); repeats merged. */
static void allow_list_from_routes_and_cidrs(void)
{
	struct deputyd d = {0};
	const struct dp_kallow *a;
	size_t n;

	d.cfg =
	    parse(HEAD "\"allow_resolvers\": false, \"allow_cidrs\": [\"10.0.0.0/8\"], "
		       "\"routes\": ["
		       "{\"host\": \"127.0.0.1\", \"port\": 8443, \"path\": \"/a*\", "
		       "\"action\": \"delegate\", \"audience\": \"https://x\", \"scope\": \"s\"},"
		       "{\"host\": \"127.0.0.1\", \"port\": 8443, \"path\": \"/b*\", "
		       "\"action\": \"passthrough\"},"
		       "{\"host\": \"::1\", \"port\": 443, \"action\": \"passthrough\"},"
		       "{\"host\": \"::1\", \"port\": 8444, \"action\": \"passthrough\", "
		       "\"tls\": \"opaque\"},"
		       "{\"host\": \"10.9.9.9\", \"port\": 443, \"action\": \"deny\"}]}");
	check(d.cfg);
	n = policy_allowed(&d, &a);
	check(n == 5);
	check(find_rule(a, n, AF_INET, "127.0.0.1", 32, 8443));
	check(find_rule(a, n, AF_INET, "127.0.0.1", 32, 8443)->rule ==
	      (DP_RULE_ALLOW | DP_RULE_ROUTE | DP_RULE_STRICT));
	check(find_rule(a, n, AF_INET6, "::1", 128, 443));
	check(find_rule(a, n, AF_INET6, "::1", 128, 443)->rule == (DP_RULE_ALLOW | DP_RULE_ROUTE));
	check(find_rule(a, n, AF_INET6, "::1", 128, 8444));
	check(find_rule(a, n, AF_INET6, "::1", 128, 8444)->rule ==
	      (DP_RULE_ALLOW | DP_RULE_OPAQUE));
	check(find_rule(a, n, AF_INET, "10.0.0.0", 8, 0));
	check(find_rule(a, n, AF_INET, "10.0.0.0", 8, 0)->rule == DP_RULE_ALLOW);
	check(find_rule(a, n, AF_INET, "10.9.9.9", 32, 443));
	check(find_rule(a, n, AF_INET, "10.9.9.9", 32, 443)->rule == DP_RULE_STRICT);
	config_free(d.cfg);
}

/* A route's addrs are allow rules on its port, and where its host is for destination
 * binding, as are the host's resolved addresses; nothing else is. */
static void route_addrs_and_hosts(void)
{
	struct deputyd d = {0};
	const struct dp_kallow *a;
	unsigned char in[16], out[16], v6[16];
	size_t n;

	d.cfg =
	    parse(HEAD "\"allow_resolvers\": false, \"allow_cidrs\": [\"10.0.0.0/8\"], "
		       "\"routes\": ["
		       "{\"host\": \"api.invalid\", \"port\": 8443, \"action\": \"delegate\", "
		       "\"audience\": \"https://x\", \"scope\": \"s\", "
		       "\"addrs\": [\"192.0.2.0/25\"]},"
		       "{\"host\": \"127.0.0.1\", \"port\": 443, \"action\": \"passthrough\"}]}");
	check(d.cfg);
	if (!d.cfg)
		return;
	n = policy_allowed(&d, &a);
	check(find_rule(a, n, AF_INET, "192.0.2.0", 25, 8443));
	inet_pton(AF_INET, "192.0.2.127", in);
	inet_pton(AF_INET, "192.0.2.128", out);
	inet_pton(AF_INET6, "::1", v6);
	check(policy_route_has_addr(&d, &d.cfg->routes[0], AF_INET, in));
	check(!policy_route_has_addr(&d, &d.cfg->routes[0], AF_INET, out));
	check(!policy_route_has_addr(&d, &d.cfg->routes[0], AF_INET6, v6));
	/* allow_cidrs let connections through, they do not say where a route host is */
	inet_pton(AF_INET, "10.1.1.1", out);
	check(!policy_route_has_addr(&d, &d.cfg->routes[0], AF_INET, out));
	inet_pton(AF_INET, "127.0.0.1", in);
	check(policy_route_has_addr(&d, &d.cfg->routes[1], AF_INET, in));
	check(!policy_route_has_addr(&d, &d.cfg->routes[0], AF_INET, in));
	config_free(d.cfg);
}

/* The nameservers of /etc/resolv.conf on port 53, only while allow_resolvers is on. */
static void resolvers_follow_the_setting(void)
{
	struct deputyd d = {0};
	const struct dp_kallow *a;
	size_t off, on, dns = 0;

	d.cfg = parse(HEAD "\"allow_resolvers\": false, \"routes\": []}");
	check(d.cfg);
	off = policy_allowed(&d, &a);
	config_free(d.cfg);
	d.cfg = parse(HEAD "\"routes\": []}");
	check(d.cfg);
	on = policy_allowed(&d, &a);
	for (size_t i = 0; i < on; i++)
		dns += a[i].port == 53 && a[i].prefix == (a[i].family == AF_INET ? 32 : 128);
	config_free(d.cfg);
	check(off == 0);
	check(dns == on);
	{
		FILE *f = fopen("/etc/resolv.conf", "r");
		char line[512], addr[64];
		size_t listed = 0;

		while (f && fgets(line, sizeof(line), f))
			listed += sscanf(line, " nameserver %63s", addr) == 1;
		if (f)
			fclose(f);
		check(on <= listed && (listed == 0 || on > 0));
	}
}

/* ---- kevent ----------------------------------------------------------------------------- */

static struct deputyd kd;
static struct session ks;
static char log_path[512];

/* Frees what the last kevent_setup made (cases may end early, on a failed check). */
static void kevent_teardown(void)
{
	if (!kd.cfg)
		return;
	repeat_free(&ks);
	audit_log_free(ks.log);
	free(ks.grant);
	cookie_set_free(&ks.cookies);
	config_free(kd.cfg);
}

static int kevent_setup(void)
{
	static int n;
	struct dp_err err;

	kevent_teardown();
	memset(&kd, 0, sizeof(kd));
	memset(&ks, 0, sizeof(ks));
	kd.cfg = parse(HEAD "\"routes\": []}");
	if (!kd.cfg)
		return -1;
	snprintf(ks.id, sizeof(ks.id), "kevent-session-%07d", ++n);
	ks.cg_id = 4242;
	ks.grant = calloc(1, sizeof(*ks.grant));
	if (audit_log_create(th_tmpdir(), ks.id, &ks.log, &err) != 0) {
		printf("audit_log_create: %s\n", err.msg);
		return -1;
	}
	snprintf(log_path, sizeof(log_path), "%s/%s.jsonl", th_tmpdir(), ks.id);
	kd.sessions = &ks;
	kd.n_sessions = 1;
	return 0;
}

/* The records written since the log had `from` lines, as a JSON array. */
static json_t *records_after(size_t from)
{
	json_t *out = json_array();
	char line[8192];
	size_t i = 0;
	FILE *f;

	audit_log_flush_all(); /* as deputyd's loop does at the end of each turn */
	f = fopen(log_path, "r");

	while (f && fgets(line, sizeof(line), f))
		if (i++ >= from)
			json_array_append_new(out, json_loads(line, 0, NULL));
	if (f)
		fclose(f);
	return out;
}

static size_t lines(void)
{
	json_t *all = records_after(0);
	size_t n = json_array_size(all);

	json_decref(all);
	return n;
}

static struct dp_event tcp_event(uint64_t cgid, const char *addr, uint16_t port, int verdict)
{
	struct dp_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.type = DP_EV_CONNECT;
	ev.cgid = cgid;
	ev.tgid = 77;
	ev.pid = 78;
	ev.family = AF_INET;
	ev.protocol = DP_EV_PROTO_TCP;
	ev.port = port;
	ev.verdict = verdict;
	ev.enforced = 1;
	ev.cookie = 99;
	inet_pton(AF_INET, addr, ev.addr);
	memcpy(ev.comm, "agent\xff", 6); /* not UTF-8: must still be logged */
	return ev;
}

static const char *str(json_t *rec, const char *key)
{
	return json_string_value(json_object_get(rec, key));
}

static void kevent_connect_records(void)
{
	struct dp_event ev;
	json_t *recs, *r;
	size_t before;

	if (kevent_setup() != 0)
		fail("setup");
	before = lines();
	/* The shim claimed that socket: the connection is mediated. */
	ev = tcp_event(4242, "192.0.2.7", 443, DP_EV_ALLOW);
	ev.flags = DP_EVF_CLAIMED;
	kevent_record(&kd, &ev);
	/* Another cookie, refused by the kernel: connect (block) and a kernel deny. */
	ev = tcp_event(4242, "192.0.2.8", 8080, DP_EV_BLOCK);
	ev.cookie = 100;
	kevent_record(&kd, &ev);
	/* Not this session's cgroup: nothing. */
	ev = tcp_event(1, "192.0.2.9", 80, DP_EV_ALLOW);
	kevent_record(&kd, &ev);
	recs = records_after(before);
	check(json_array_size(recs) == 3);
	r = json_array_get(recs, 0);
	check_str(str(r, "type"), "connect");
	check_str(str(r, "daddr"), "192.0.2.7");
	check(json_integer_value(json_object_get(r, "dport")) == 443);
	check_str(str(r, "verdict"), "allow");
	check(json_is_true(json_object_get(r, "mediated")));
	check_str(str(r, "mediator"), "shim");
	check_str(str(r, "comm"), "agent\\xff");
	check(json_integer_value(json_object_get(r, "pid")) == 77);
	r = json_array_get(recs, 1);
	check_str(str(r, "type"), "connect");
	check_str(str(r, "verdict"), "block");
	check(json_is_false(json_object_get(r, "mediated")));
	r = json_array_get(recs, 2);
	check_str(str(r, "type"), "deny");
	check_str(str(r, "layer"), "kernel");
	check(ks.counts.connects == 2 && ks.counts.blocked == 1 && ks.counts.unmediated == 1 &&
	      ks.counts.denies == 1);
	json_decref(recs);
}

static void kevent_unix_close_and_refused(void)
{
	struct dp_event ev;
	json_t *recs;
	size_t before;

	if (kevent_setup() != 0)
		fail("setup");
	before = lines();
	memset(&ev, 0, sizeof(ev));
	ev.type = DP_EV_UNIX_CONNECT;
	ev.cgid = 4242;
	/* deputyd's own socket is deputy's plumbing, not the agent's: no record. */
	ev.path_len = (uint32_t)strlen(kd.cfg->socket);
	memcpy(ev.path, kd.cfg->socket, ev.path_len);
	kevent_record(&kd, &ev);
	ev.path_len = 9;
	memcpy(ev.path, "/tmp/x\x01yz", 9);
	kevent_record(&kd, &ev);
	ev = tcp_event(4242, "192.0.2.7", 443, DP_EV_ALLOW);
	ev.type = DP_EV_CLOSE;
	ev.duration_ns = 5000000;
	ev.flags = DP_EVF_ESTABLISHED;
	kevent_record(&kd, &ev);
	ev.type = DP_EV_SOCK_REFUSED;
	ev.port = SOCK_RAW;
	kevent_record(&kd, &ev);
	recs = records_after(before);
	check(json_array_size(recs) == 3);
	check_str(str(json_array_get(recs, 0), "family"), "unix");
	check_str(str(json_array_get(recs, 0), "path"), "/tmp/x?yz");
	check_str(str(json_array_get(recs, 1), "type"), "disconnect");
	check(json_integer_value(json_object_get(json_array_get(recs, 1), "duration_us")) == 5000);
	check(json_is_true(json_object_get(json_array_get(recs, 1), "established")));
	check_str(str(json_array_get(recs, 2), "type"), "deny");
	check(strstr(str(json_array_get(recs, 2), "reason") ?: "", "raw"));
	check(ks.counts.connects == 0 && ks.counts.denies == 1);
	json_decref(recs);
}

/* A connection mediated at connect time is still unmediated if it carried bytes without a
 * mediated request; requests count only on connections the kernel reported. */
static void kevent_requests_and_the_late_unmediated(void)
{
	struct dp_event ev;
	json_t *recs, *r;
	size_t before;

	if (kevent_setup() != 0)
		fail("setup");
	before = lines();
	for (uint64_t cookie = 1; cookie <= 3; cookie++) {
		ev = tcp_event(4242, "192.0.2.7", 443, DP_EV_ALLOW);
		ev.flags = cookie == 3 ? 0 : cookie == 1 ? DP_EVF_CLAIMED : DP_EVF_PROXIED;
		ev.cookie = cookie;
		kevent_record(&kd, &ev);
	}
	kevent_request(&kd, &ks, 1);
	kevent_request(&kd, &ks, 1);
	kevent_request(&kd, &ks, 77); /* made up: nothing */
	check(ks.cookies.used == 3);
	check(ks.counts.unmediated == 1);
	for (uint64_t cookie = 1; cookie <= 3; cookie++) {
		ev = tcp_event(4242, "192.0.2.7", 443, DP_EV_ALLOW);
		ev.type = DP_EV_CLOSE;
		ev.flags = cookie == 3 ? 0 : cookie == 1 ? DP_EVF_CLAIMED : DP_EVF_PROXIED;
		ev.cookie = cookie;
		ev.bytes_out = 100;
		kevent_record(&kd, &ev);
	}
	check(ks.cookies.used == 0);
	recs = records_after(before);
	check(json_array_size(recs) == 6);
	r = json_array_get(recs, 3);
	check_str(str(r, "type"), "disconnect");
	check(json_integer_value(json_object_get(r, "requests")) == 2);
	check(json_is_true(json_object_get(r, "mediated")));
	check_str(str(r, "mediator"), "shim");
	r = json_array_get(recs, 4);
	check(json_integer_value(json_object_get(r, "requests")) == 0);
	check(json_is_false(json_object_get(r, "mediated")));
	check_str(str(r, "mediator"), "proxy");
	check(json_integer_value(json_object_get(r, "bytes_sent")) == 100);
	r = json_array_get(recs, 5);
	check(json_is_false(json_object_get(r, "mediated")) && !json_object_get(r, "mediator"));
	/* the proxied one that carried bytes without a request, besides the unclaimed one */
	check(ks.counts.unmediated == 2 && ks.counts.connects == 3);
	json_decref(recs);
}

int main(void)
{
	dp_log_init("test_policy", DP_LOG_WARN);
	RUN(allow_list_from_routes_and_cidrs);
	RUN(route_addrs_and_hosts);
	RUN(resolvers_follow_the_setting);
	RUN(kevent_connect_records);
	RUN(kevent_unix_close_and_refused);
	RUN(kevent_requests_and_the_late_unmediated);
	kevent_teardown();
	th_cleanup();
	UNIT_EXIT();
}
