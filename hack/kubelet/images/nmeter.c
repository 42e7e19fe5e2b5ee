/* The part of busybox's nmeter the Node Conformance tests use, for the e2e
 * busybox image (Debian's busybox is built without the applet):
 *
 *   nmeter -d0 '%3t' | head -n1     the time of day, HH:MM:SS.mmm (UTC)
 *
 * test/e2e_node/container_lifecycle_pod_construction.go builds its log
 * timestamps from it. Supported: -d MSEC (delay between lines, 0 = none) and
 * a format where %t and %Nt (N fraction digits, 1-6; default 1 as busybox)
 * are the time and everything else is copied. One line per interval until
 * the reader goes away (SIGPIPE), as busybox's does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void print_line(const char *fmt)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    for (const char *p = fmt; *p; p++) {
        if (p[0] == '%') {
            int digits = 1;
            const char *q = p + 1;
            if (*q >= '1' && *q <= '6') {
                digits = *q - '0';
                q++;
            }
            if (*q == 't') {
                long frac = tv.tv_usec;
                for (int i = digits; i < 6; i++)
                    frac /= 10;
                printf("%02d:%02d:%02d.%0*ld", tm.tm_hour, tm.tm_min, tm.tm_sec, digits, frac);
                p = q;
                continue;
            }
        }
        putchar(*p);
    }
    putchar('\n');
    fflush(stdout);
}

int main(int argc, char **argv)
{
    long delay_ms = 1000;
    int opt;
    while ((opt = getopt(argc, argv, "d:")) != -1) {
        if (opt == 'd')
            delay_ms = strtol(optarg, NULL, 10);
        else
            return 1;
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: nmeter [-d MSEC] FORMAT (only %%t and %%Nt are supported)\n");
        return 1;
    }
    for (;;) {
        print_line(argv[optind]);
        if (ferror(stdout))
            return 0;
        if (delay_ms > 0)
            usleep((useconds_t)delay_ms * 1000);
    }
}
