/* pause: the sandbox placeholder of the test images (registry.k8s.io/pause).
 *
 * Does nothing until SIGTERM or SIGINT, then exits 0. When it is PID 1 of a
 * pod's shared PID namespace it also reaps every orphan re-parented to it.
 *
 * All three signals stay blocked for the whole run and are taken with
 * sigwaitinfo(): a blocked signal is queued even for a namespace's PID 1
 * (kernel/signal.c sig_ignored(): "Blocked signals are never ignored"), so
 * no handler and no race between a check and a sleep is needed.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "-v") == 0) {
    puts("pause (capcri test images)");
    return 0;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
    perror("pause: sigprocmask");
    return 1;
  }
  for (;;) {
    int sig = sigwaitinfo(&set, NULL);
    if (sig == SIGTERM || sig == SIGINT)
      return 0;
    if (sig == SIGCHLD)
      while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    /* sig == -1: EINTR from a stop/continue; wait again */
  }
}
