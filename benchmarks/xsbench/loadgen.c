/* xsloadgen: a compiled closed-loop load generator for the throughput workload.
 *
 * Why it exists: with 16 Python client processes on one core, the socket throughput
 * workload measures the clients as much as the daemon (their core is ~100 % busy). One
 * process with epoll, in C, costs a request little more than its two syscalls, so the
 * daemon sets the pace. It sends the same bytes as workloads.request_maker: an evenly
 * spread READ/WRITE mix of one key per connection (measure.make_value's value),
 * PIPELINE requests in flight each.
 *
 * Protocol with its parent (xsbench/native.py), one line each way:
 *   argv: SOCKET CLIENTS SECONDS PIPELINE READ_FRACTION VALUE_SIZE KEY_PREFIX
 *   stdout "ready"   every connection is open and has written its key once
 *   stdin  "go"      start the measured phase (the parent samples the daemon's CPU)
 *   stdout JSON      {"elapsed": s, "cpu": s, "clients": [{"completed", "reads",
 *                     "writes", "errors"}, ...]} after the phase and a drain of the
 *                     requests still in flight; cpu is this process's user + system
 * Any failure: a message on stderr and exit status 1.
 *
 * Standard C and Linux only; xsbench/native.py builds it with the system's cc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { XS_READ = 2, XS_WRITE = 11, XS_WATCH_EVENT = 15, XS_ERROR = 16 };
enum { HEADER = 16, PAYLOAD_MAX = 4096, INBUF = 1 << 18 };

struct client {
    int fd;
    uint32_t req_id;
    uint64_t op;          /* position in the READ/WRITE sequence */
    long outstanding;
    long completed, reads, writes, errors;
    size_t read_len, write_len;
    unsigned char read_body[PAYLOAD_MAX];   /* KEY\0 */
    unsigned char write_body[PAYLOAD_MAX];  /* KEY\0VALUE */
    size_t have;          /* bytes held in buf */
    unsigned char buf[INBUF];
};

static double read_fraction;
static const char VALUE_PATTERN[] = "0123456789abcdefghijklmnopqrstuvwxyz";

static void die(const char *what)
{
    fprintf(stderr, "xsloadgen: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void put_header(unsigned char *p, uint32_t type, uint32_t req_id, uint32_t len)
{
    uint32_t h[4] = {type, req_id, 0, len};  /* little-endian hosts only, as x86 is */
    memcpy(p, h, HEADER);
}

static void send_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EPIPE || errno == ECONNRESET) {
                errno = 0;
                die("the daemon closed a connection");
            }
            die("send");
        }
        p += k;
        n -= (size_t)k;
    }
}

/* The next request of c's evenly spread mix (measure.op_sequence), appended at out. */
static size_t next_request(struct client *c, unsigned char *out)
{
    uint64_t i = c->op++;
    int is_read = floor((i + 1) * read_fraction) > floor(i * read_fraction);
    const unsigned char *body = is_read ? c->read_body : c->write_body;
    size_t len = is_read ? c->read_len : c->write_len;
    put_header(out, is_read ? XS_READ : XS_WRITE, ++c->req_id, (uint32_t)len);
    memcpy(out + HEADER, body, len);
    if (is_read)
        c->reads++;
    else
        c->writes++;
    c->outstanding++;
    return HEADER + len;
}

/* Take the complete replies in c's buffer; return how many answered a request. */
static long take_replies(struct client *c, long *errors)
{
    size_t at = 0;
    long answered = 0;
    while (c->have - at >= HEADER) {
        uint32_t h[4];
        memcpy(h, c->buf + at, HEADER);
        if (h[3] > PAYLOAD_MAX) {
            errno = 0;
            die("reply longer than the protocol allows");
        }
        if (c->have - at < HEADER + h[3])
            break;
        if (h[0] != XS_WATCH_EVENT) {
            answered++;
            if (h[0] == XS_ERROR)
                (*errors)++;
        }
        at += HEADER + h[3];
    }
    memmove(c->buf, c->buf + at, c->have - at);
    c->have -= at;
    return answered;
}

static void fill(struct client *c)
{
    ssize_t k = read(c->fd, c->buf + c->have, INBUF - c->have);
    if (k == 0) {
        errno = 0;
        die("the daemon closed a connection");
    }
    if (k < 0) {
        if (errno == EINTR || errno == EAGAIN)
            return;
        if (errno == ECONNRESET) {
            errno = 0;
            die("the daemon closed a connection");
        }
        die("read");
    }
    c->have += (size_t)k;
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: xsloadgen SOCKET CLIENTS SECONDS PIPELINE READ_FRACTION "
                        "VALUE_SIZE KEY_PREFIX\n");
        return 2;
    }
    const char *path = argv[1];
    int nclients = atoi(argv[2]);
    double seconds = atof(argv[3]);
    int depth = atoi(argv[4]);
    read_fraction = atof(argv[5]);
    int value_size = atoi(argv[6]);
    const char *prefix = argv[7];
    if (nclients < 1 || depth < 1 || value_size < 0 || value_size > 2048 || seconds <= 0) {
        errno = 0;
        die("bad arguments");
    }

    struct client *clients = calloc((size_t)nclients, sizeof *clients);
    unsigned char *out = malloc((size_t)depth * (HEADER + PAYLOAD_MAX));
    if (!clients || !out)
        die("malloc");
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");

    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        errno = 0;
        die("socket path too long");
    }
    strcpy(addr.sun_path, path);

    /* Connect, and write each connection's key once (as SocketTransport.load does). */
    for (int i = 0; i < nclients; i++) {
        struct client *c = &clients[i];
        char key[256];
        int klen = snprintf(key, sizeof key, "%s%d", prefix, i);
        if (klen < 0 || klen >= (int)sizeof key) {
            errno = 0;
            die("key too long");
        }
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0)
            die("connect");
        memcpy(c->read_body, key, (size_t)klen + 1);
        c->read_len = (size_t)klen + 1;
        memcpy(c->write_body, key, (size_t)klen + 1);
        unsigned char *value = c->write_body + klen + 1;  /* measure.make_value's bytes */
        for (int v = 0; v < value_size; v++)
            value[v] = (unsigned char)VALUE_PATTERN[v % (int)(sizeof VALUE_PATTERN - 1)];
        c->write_len = (size_t)klen + 1 + (size_t)value_size;
        put_header(out, XS_WRITE, 0, (uint32_t)c->write_len);
        memcpy(out + HEADER, c->write_body, c->write_len);
        send_all(c->fd, out, HEADER + c->write_len);
        long errors = 0;
        while (take_replies(c, &errors) == 0)
            fill(c);
        if (errors) {
            errno = 0;
            die("the daemon refused a setup WRITE");
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            die("epoll_ctl");
    }
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin) || strncmp(line, "go", 2) != 0) {
        errno = 0;
        die("no go from the parent");
    }

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    double t0 = now(), deadline = t0 + seconds;
    long outstanding_total = 0;
    for (int i = 0; i < nclients; i++) {
        struct client *c = &clients[i];
        size_t n = 0;
        for (int d = 0; d < depth; d++)
            n += next_request(c, out + n);
        send_all(c->fd, out, n);
        outstanding_total += depth;
    }
    int sending = 1;
    struct epoll_event events[64];
    while (outstanding_total) {
        int n = epoll_wait(ep, events, 64, 1000);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        if (sending && now() >= deadline)
            sending = 0;
        for (int e = 0; e < n; e++) {
            struct client *c = events[e].data.ptr;
            fill(c);
            long answered = take_replies(c, &c->errors);
            c->outstanding -= answered;
            c->completed += answered;
            outstanding_total -= answered;
            if (sending && answered) {
                size_t len = 0;
                for (long a = 0; a < answered; a++)
                    len += next_request(c, out + len);
                send_all(c->fd, out, len);
                outstanding_total += answered;
            }
        }
    }
    double elapsed = now() - t0;
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec)
                 + (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec)
                 + (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec
                            + ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;

    printf("{\"elapsed\": %.6f, \"cpu\": %.6f, \"clients\": [", elapsed, cpu);
    for (int i = 0; i < nclients; i++) {
        const struct client *c = &clients[i];
        printf("%s{\"completed\": %ld, \"reads\": %ld, \"writes\": %ld, \"errors\": %ld}",
               i ? ", " : "", c->completed, c->reads, c->writes, c->errors);
    }
    printf("]}\n");
    return 0;
}
