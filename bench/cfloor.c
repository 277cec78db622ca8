/* The C floor: the physical limit of a chat server on this machine, for bench/run.py.
 *
 * epoll, non-blocking sockets, no framework: one send() per delivery. It speaks the
 * floor's protocol (bench/floor.py), so the same load generator drives it:
 *
 *   "login: ", then "Password: " (the name is kept, the password ignored), then a
 *   prompt "NAME@floor:~$ " after every command;
 *   "write USER TEXT" sends "Message from NAME: TEXT\r\n" to USER;
 *   "wall TEXT" sends "Broadcast from NAME: TEXT\r\n" to every logged-in connection;
 *   "mesg" answers "is y".
 *
 * What the kernel does not take at once waits in the connection's own buffer and goes
 * out when the socket is writable (EPOLLOUT), as any server must; on loopback with
 * small messages that almost never happens. Usage: cfloor [--tune] — listens on 127.0.0.1,
 * an ephemeral port, prints "cfloor listening on port N", stops on SIGTERM/SIGINT. --tune
 * gives each connection shellserver's socket options (TCP_NODELAY, a 64 KiB send buffer),
 * to tell their cost from the rest.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_LINE 4096
#define MAX_NAME 64

enum state { LOGIN, PASSWORD, IN };

struct conn {
    int fd;
    enum state state;
    char name[MAX_NAME + 1];
    size_t name_len;
    char in[MAX_LINE];
    size_t in_len;
    char *out; /* what the kernel did not take yet */
    size_t out_len, out_cap;
    int index;            /* in the logged-in list, or -1 */
    struct conn *next;    /* in its hash bucket */
};

static struct conn **conns;  /* by fd */
static int conns_cap;
static struct conn **users;  /* logged in, for wall */
static int n_users, users_cap;
#define BUCKETS 65536
static struct conn *table[BUCKETS];  /* logged in, by name */
static int ep;
static volatile sig_atomic_t stop;

static unsigned hash(const char *s, size_t n) {
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h % BUCKETS;
}

static struct conn *find(const char *name, size_t n) {
    for (struct conn *c = table[hash(name, n)]; c; c = c->next)
        if (c->name_len == n && memcmp(c->name, name, n) == 0) return c;
    return NULL;
}

static void unlink_user(struct conn *c) {
    if (c->index < 0) return;
    struct conn **p = &table[hash(c->name, c->name_len)];
    while (*p && *p != c) p = &(*p)->next;
    if (*p) *p = c->next;
    struct conn *last = users[--n_users];
    users[c->index] = last;
    last->index = c->index;
    c->index = -1;
}

static void link_user(struct conn *c) {
    struct conn *old = find(c->name, c->name_len);
    if (old) unlink_user(old); /* the newest login of a name gets its messages */
    if (n_users == users_cap) {
        users_cap = users_cap ? users_cap * 2 : 1024;
        users = realloc(users, sizeof *users * users_cap);
        if (!users) abort();
    }
    c->index = n_users;
    users[n_users++] = c;
    unsigned h = hash(c->name, c->name_len);
    c->next = table[h];
    table[h] = c;
}

static void drop(struct conn *c) {
    unlink_user(c);
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    conns[c->fd] = NULL;
    free(c->out);
    free(c);
}

/* One delivery: one send(); what is left is kept for EPOLLOUT. */
static void put(struct conn *c, const char *data, size_t n) {
    if (c->out_len == 0) {
        ssize_t sent = send(c->fd, data, n, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) return; /* EPOLLHUP will drop it */
            sent = 0;
        }
        if ((size_t)sent == n) return;
        data += sent;
        n -= (size_t)sent;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.fd = c->fd};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    if (c->out_len + n > c->out_cap) {
        c->out_cap = (c->out_len + n) * 2;
        c->out = realloc(c->out, c->out_cap);
        if (!c->out) abort();
    }
    memcpy(c->out + c->out_len, data, n);
    c->out_len += n;
}

static void flush(struct conn *c) {
    ssize_t sent = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
    if (sent < 0) return;
    memmove(c->out, c->out + sent, c->out_len - (size_t)sent);
    c->out_len -= (size_t)sent;
    if (c->out_len == 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = c->fd};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static void prompt(struct conn *c) {
    char p[MAX_NAME + 16];
    int n = snprintf(p, sizeof p, "%.*s@floor:~$ ", (int)c->name_len, c->name);
    put(c, p, (size_t)n);
}

static void command(struct conn *c, char *line, size_t n) {
    char msg[MAX_LINE + 2 * MAX_NAME + 64];
    char *sp = memchr(line, ' ', n);
    size_t verb = sp ? (size_t)(sp - line) : n;
    char *rest = sp ? sp + 1 : line + n;
    size_t rest_len = (size_t)(line + n - rest);
    if (verb == 5 && memcmp(line, "write", 5) == 0) {
        char *sp2 = memchr(rest, ' ', rest_len);
        size_t user = sp2 ? (size_t)(sp2 - rest) : rest_len;
        char *text = sp2 ? sp2 + 1 : rest + rest_len;
        size_t text_len = (size_t)(rest + rest_len - text);
        struct conn *t = find(rest, user);
        int m;
        if (!t) {
            m = snprintf(msg, sizeof msg, "write: %.*s is not logged in\r\n", (int)user, rest);
            put(c, msg, (size_t)m);
        } else {
            m = snprintf(msg, sizeof msg, "Message from %.*s: %.*s\r\n", (int)c->name_len,
                         c->name, (int)text_len, text);
            put(t, msg, (size_t)m);
        }
    } else if (verb == 4 && memcmp(line, "wall", 4) == 0) {
        int m = snprintf(msg, sizeof msg, "Broadcast from %.*s: %.*s\r\n", (int)c->name_len,
                         c->name, (int)rest_len, rest);
        for (int i = 0; i < n_users; i++) put(users[i], msg, (size_t)m);
    } else if (verb == 4 && memcmp(line, "mesg", 4) == 0) {
        put(c, "is y\r\n", 6);
    } else if (verb) {
        int m = snprintf(msg, sizeof msg, "%.*s: command not found\r\n", (int)verb, line);
        put(c, msg, (size_t)m);
    }
    prompt(c);
}

static void line_received(struct conn *c, char *line, size_t n) {
    if (c->state == IN) {
        command(c, line, n);
    } else if (c->state == LOGIN) {
        while (n && line[n - 1] == ' ') n--;
        while (n && line[0] == ' ') line++, n--;
        c->name_len = n > MAX_NAME ? MAX_NAME : n;
        memcpy(c->name, line, c->name_len);
        c->state = PASSWORD;
        put(c, "Password: ", 10);
    } else {
        c->state = IN;
        link_user(c);
        prompt(c);
    }
}

static void readable(struct conn *c) {
    for (;;) {
        ssize_t got = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
        if (got == 0) { drop(c); return; }
        if (got < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) drop(c);
            return;
        }
        c->in_len += (size_t)got;
        size_t start = 0;
        for (size_t i = 0; i < c->in_len; i++) {
            if (c->in[i] != '\n') continue;
            size_t end = i;
            if (end > start && c->in[end - 1] == '\r') end--;
            line_received(c, c->in + start, end - start);
            if (conns[c->fd] != c) return;
            start = i + 1;
        }
        memmove(c->in, c->in + start, c->in_len - start);
        c->in_len -= start;
        if (c->in_len == sizeof c->in) { drop(c); return; } /* a line over MAX_LINE */
    }
}

static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
    int tune = argc > 1 && strcmp(argv[1], "--tune") == 0;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 1024) ||
        getsockname(lfd, (struct sockaddr *)&addr, &len)) {
        perror("cfloor");
        return 1;
    }
    printf("cfloor listening on port %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event events[256];
    while (!stop) {
        int n = epoll_wait(ep, events, 256, 500);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                int cfd;
                while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (cfd >= conns_cap) {
                        int cap = conns_cap ? conns_cap : 1024;
                        while (cap <= cfd) cap *= 2;
                        conns = realloc(conns, sizeof *conns * cap);
                        if (!conns) abort();
                        memset(conns + conns_cap, 0, sizeof *conns * (cap - conns_cap));
                        conns_cap = cap;
                    }
                    if (tune) {
                        int sndbuf = 64 * 1024;
                        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                        setsockopt(cfd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
                    }
                    struct conn *c = calloc(1, sizeof *c);
                    if (!c) abort();
                    c->fd = cfd;
                    c->index = -1;
                    conns[cfd] = c;
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = cfd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev);
                    put(c, "login: ", 7);
                }
                continue;
            }
            struct conn *c = fd < conns_cap ? conns[fd] : NULL;
            if (!c) continue;
            if (events[i].events & (EPOLLHUP | EPOLLERR)) { drop(c); continue; }
            if (events[i].events & EPOLLOUT) flush(c);
            if (events[i].events & EPOLLIN) readable(c);
        }
    }
    return 0;
}
