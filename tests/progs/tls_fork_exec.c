// SPDX-License-Identifier: MIT
/*
 * tls_fork_exec: starts a child with an explicit, minimal environment that LACKS
 * LD_PRELOAD and every DEPUTY_* variable — what a program does when it sanitises the
 * environment of its children. Under deputy the shim must put them back (its exec hooks),
 * so the child's HTTPS requests are still mediated.
 *
 *   tls_fork_exec [-m execve|execvpe|posix_spawn|posix_spawnp] [-e NAME=VALUE]... -- PROG [ARG]...
 *
 * The child's environment is PATH, HOME, LANG plus any -e given. Exits with the child's
 * exit status (128+signal when killed), after printing "child exit N" on stderr.
 */
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FE_MAX_ENV 32

int main(int argc, char **argv)
{
	char *envp[FE_MAX_ENV + 4] = {
	    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/",
	    "LANG=C"};
	const char *mode = "execve";
	int nenv = 3, o, status;
	pid_t pid;

	while ((o = getopt(argc, argv, "+m:e:")) != -1) {
		switch (o) {
		case 'm':
			mode = optarg;
			break;
		case 'e':
			if (nenv == FE_MAX_ENV + 3) {
				fprintf(stderr, "tls_fork_exec: too many -e\n");
				return 2;
			}
			envp[nenv++] = optarg;
			break;
		default:
			return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "usage: tls_fork_exec [-m MODE] [-e N=V]... -- PROG [ARG]...\n");
		return 2;
	}
	envp[nenv] = NULL;
	fflush(stdout);
	if (!strncmp(mode, "posix_spawn", 11)) {
		int rc = !strcmp(mode, "posix_spawnp")
			     ? posix_spawnp(&pid, argv[optind], NULL, NULL, argv + optind, envp)
			     : posix_spawn(&pid, argv[optind], NULL, NULL, argv + optind, envp);

		if (rc) {
			fprintf(stderr, "tls_fork_exec: %s %s: %s\n", mode, argv[optind],
				strerror(rc));
			return 127;
		}
	} else {
		pid = fork();
		if (pid < 0) {
			perror("fork");
			return 2;
		}
		if (pid == 0) {
			if (!strcmp(mode, "execvpe"))
				execvpe(argv[optind], argv + optind, envp);
			else
				execve(argv[optind], argv + optind, envp);
			fprintf(stderr, "tls_fork_exec: %s %s: %s\n", mode, argv[optind],
				strerror(errno));
			_exit(127);
		}
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			perror("waitpid");
			return 2;
		}
	}
	status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	fprintf(stderr, "child exit %d\n", status);
	return status;
}
