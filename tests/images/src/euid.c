/* euid: print the effective uid, "Effective uid: N".
 *
 * Installed setuid root (mode 04755) as /usr/local/bin/nnp in the
 * e2e-test-images/nonewprivs image. Run as uid 1000 it prints 0, unless the
 * process has no_new_privs, in which case execve ignores the setuid bit
 * (fs/exec.c, bprm_fill_uid) and it prints 1000: critest's NoNewPrivs specs.
 */
#include <stdio.h>
#include <unistd.h>

int main(void) {
  if (printf("Effective uid: %u\n", (unsigned)geteuid()) < 0 || fflush(stdout) != 0)
    return 1;
  return 0;
}
