// SPDX-License-Identifier: MIT
/*
 * reload: SIGHUP. A new config replaces routes, issuers and policy only if it loads and its
 * issuers' keys do; what only a restart may change (socket, state, issuer, cgroup, kernel)
 * stays, with a warning.
 */
#include "reload.h"

#include <string.h>

#include "audit_export.h"
#include "proxyd.h"

void reload_config(struct deputyd *d)
{
	struct dp_config *cfg;
	struct dp_trust *trust;
	struct dp_err err;

	if (config_load(d->cfg->path, &cfg, &err) != 0) {
		pr_warn("reload: %s; keeping the running configuration", err.msg);
		return;
	}
	trust = trust_new(cfg, &err);
	if (!trust) {
		pr_warn("reload: %s; keeping the running configuration", err.msg);
		config_free(cfg);
		return;
	}
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
	pr_info("reloaded %s: %zu routes, %zu trusted issuers", d->cfg->path, d->cfg->n_routes,
		d->cfg->n_issuers);
}
