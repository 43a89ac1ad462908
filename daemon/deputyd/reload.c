// SPDX-License-Identifier: MIT
/*
 * reload: SIGHUP. A new config replaces routes, issuers and policy only if it loads and its
 * issuers' keys do; what only a restart may change (socket, state, issuer, cgroup, kernel)
 * stays, with a warning.
 */
#include "reload.h"

#include <string.h>

#include "audit_export.h"
#include "hostlog.h"
#include "proxyd.h"
#include "revoke.h"

/* The running config as JSON, to tell the host log which keys a reload changed. */
static json_t *running;

/* Keys only a restart applies (reload_config keeps them). */
static const char *const reload_restart_keys[] = {
    "socket", "state_dir", "issuer", "cgroup", "signing_key", "kernel", "http_listen"};

void reload_remember(const char *path)
{
	json_decref(running);
	running = json_load_file(path, 0, NULL);
}

/* {"changed": [keys], "restart_needed": [keys]}: top-level keys whose values differ
 * (added and removed ones included) between the running file and the new one. */
static json_t *reload_diff(const json_t *old, const json_t *new)
{
	json_t *changed = json_array(), *restart = json_array(), *v;
	const char *k;

	for (int pass = 0; pass < 2; pass++) {
		const json_t *a = pass ? new : old, *b = pass ? old : new;

		json_object_foreach((json_t *)a, k, v)
		{
			json_t *w = json_object_get(b, k);

			if ((pass && w) || (w && json_equal(v, w)))
				continue; /* the second pass adds only keys the old file lacked */
			json_array_append_new(changed, json_string(k));
			for (size_t i = 0; i < DP_ARRAY_SIZE(reload_restart_keys); i++)
				if (strcmp(k, reload_restart_keys[i]) == 0)
					json_array_append_new(restart, json_string(k));
		}
	}
	return json_pack("{s:o, s:o}", "changed", changed, "restart_needed", restart);
}

static void reload_record_failure(const char *why)
{
	hostlog_write("reload", json_pack("{s:b, s:s}", "ok", 0, "error", why));
}

void reload_config(struct deputyd *d)
{
	struct dp_config *cfg;
	struct dp_trust *trust;
	struct dp_err err;

	json_t *rec, *now;

	if (config_load(d->cfg->path, &cfg, &err) != 0) {
		pr_warn("reload: %s; keeping the running configuration", err.msg);
		reload_record_failure(err.msg);
		return;
	}
	trust = trust_new_deferred(cfg, d->trust, &err);
	if (!trust) {
		pr_warn("reload: %s; keeping the running configuration", err.msg);
		reload_record_failure(err.msg);
		config_free(cfg);
		return;
	}
	now = json_load_file(d->cfg->path, 0, NULL);
	rec = reload_diff(running, now);
	json_decref(running);
	running = now;
	if (strcmp(cfg->socket, d->cfg->socket) || strcmp(cfg->state_dir, d->cfg->state_dir) ||
	    strcmp(cfg->issuer, d->cfg->issuer) || strcmp(cfg->cgroup, d->cfg->cgroup) ||
	    cfg->kernel != d->cfg->kernel)
		pr_warn("reload: socket, state_dir, issuer, cgroup and kernel take effect only "
			"at restart");
	/* Keep what only a restart may change; take routes, issuers and policy. */
	{
		struct dp_config *old = d->cfg;
#define KEEP(field)                                                                                \
	do {                                                                                       \
		char *t_ = cfg->field;                                                             \
		cfg->field = old->field;                                                           \
		old->field = t_;                                                                   \
	} while (0)
		KEEP(socket);
		KEEP(state_dir);
		KEEP(issuer);
		KEEP(cgroup);
		KEEP(signing_key);
#undef KEEP
		cfg->kernel = old->kernel;
		d->cfg = cfg;
		config_free(old);
	}
	trust_free(d->trust);
	d->trust = trust;
	policy_refresh(d);
	d->retention_next = 0; /* a changed retention_days applies now, not tomorrow */
	/* A shim's table was made from the old routes: the next request asks again. */
	table_invalidate_all(d);
	proxyd_reload(d);
	if (audit_export_open(d->cfg->audit_syslog, &err) != 0)
		pr_warn("reload: %s; audit records are not exported", err.msg);
	if (policy_unix_apply(d) != 0)
		pr_warn("reload: cannot update the kernel's allow_unix list");
	/* An edited revocation list (a revocation lifted by hand) is read again; a broken one
	 * leaves the list in force as it was. */
	if (revoke_load(d->cfg->state_dir, &err) != 0) {
		pr_warn("reload: %s; keeping the revocation list in force", err.msg);
		if (rec)
			json_object_set_new(rec, "revocations_error", json_string(err.msg));
	}
	if (rec)
		json_object_set_new(rec, "ok", json_true());
	hostlog_write("reload", rec);
	pr_info("reloaded %s: %zu routes, %zu trusted issuers", d->cfg->path, d->cfg->n_routes,
		d->cfg->n_issuers);
}
