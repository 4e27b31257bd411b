/* Integration tests of the net module: real namespaces, veth, tap, tc, nftables and VXLAN.
 * Every "host" is a network namespace named oakt-*, and so is every instance, so nothing touches
 * the machine's own networking. Each test runs in a subprocess; the parent removes every oakt-*
 * namespace afterwards, also when the test failed. Needs root. */
#include "net-private.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <json-glib/json-glib.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

/* Names of this run's namespaces: unique per test process, so parallel runs do not collide. */
static const char *prefix(void) {
  static char buf[32];
  if (buf[0] == '\0')
    g_snprintf(buf, sizeof buf, "t%d-", (int)(g_test_subprocess() ? getppid() : getpid()));
  return buf;
}

/* prefix() + s, interned. */
static const char *P(const char *s) {
  g_autofree char *full = g_strconcat(prefix(), s, NULL);
  return g_intern_string(full);
}

/* ------------------------------------------------------------------ helpers */

static char *run(const char *cmdline) {
  g_auto(GStrv) argv = NULL;
  g_autofree char *out = NULL, *err = NULL;
  int status = 0;
  g_assert_true(g_shell_parse_argv(cmdline, NULL, &argv, NULL));
  g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, NULL));
  if (!g_spawn_check_wait_status(status, NULL))
    g_error("command failed: %s: %s", cmdline, err);
  return g_steal_pointer(&out);
}

/* run() taking ownership of the command line. */
static char *runo(char *cmdline) {
  char *out = run(cmdline);
  g_free(cmdline);
  return out;
}

static void runf(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void runf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *cmd = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_free(run(cmd));
}

static void cleanup_namespaces(void) {
  g_autoptr(GDir) dir = g_dir_open(OAKUK_NET_NETNS_DIR, 0, NULL);
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
  for (const char *n; dir && (n = g_dir_read_name(dir)) != NULL;)
    if (g_str_has_prefix(n, prefix()))
      g_ptr_array_add(names, g_strdup(n));
  for (guint i = 0; i < names->len; i++) {
    g_autofree char *path = g_build_filename(OAKUK_NET_NETNS_DIR, names->pdata[i], NULL);
    umount2(path, MNT_DETACH);
    unlink(path);
  }
}

static gboolean netns_exists(const char *name) {
  g_autofree char *path = g_build_filename(OAKUK_NET_NETNS_DIR, name, NULL);
  return g_file_test(path, G_FILE_TEST_EXISTS);
}

/* A "host": a namespace with lo up. */
static void host_new(const char *name) {
  runf("ip netns add %s", name);
  runf("ip -n %s link set lo up", name);
}

/* Joins two hosts by a veth pair with the given /24 addresses. */
static void wire(const char *a, const char *a_ip, const char *b, const char *b_ip) {
  runf("ip -n %s link add w0 type veth peer name w1 netns %s", a, b);
  runf("ip -n %s addr add %s/24 dev w0", a, a_ip);
  runf("ip -n %s addr add %s/24 dev w1", b, b_ip);
  runf("ip -n %s link set w0 up", a);
  runf("ip -n %s link set w1 up", b);
}

static oakuk_net *node_new(const char *host, const char *subnet, const char *underlay) {
  oakuk_net_options o;
  oakuk_error *err = NULL;
  g_autofree char *path = g_build_filename(OAKUK_NET_NETNS_DIR, host, NULL);
  g_assert_cmpint(oakuk_net_options_init(&o, OAKUK_NET_OPTIONS_VERSION), ==, 0);
  o.node_subnet = subnet;
  o.underlay_ip = underlay;
  o.netns_path = path;
  oakuk_net *net = oakuk_net_new(&o, &err);
  g_assert_no_errno(net ? 0 : -1);
  g_assert_null(err);
  if (oakuk_net_setup_node(net, &err) != 0)
    g_error("setup_node in %s: %s", host, oakuk_error_message(err));
  return net;
}

#define OK(call)                                                                                             \
  do {                                                                                                       \
    oakuk_error *e_ = NULL;                                                                                  \
    int r_ = (call);                                                                                         \
    if (r_ != 0)                                                                                             \
      g_error("%s: %d %s", #call, r_, e_ ? oakuk_error_message(e_) : "");                                    \
  } while (0)
#define E (&e_)

static oakuk_net_instance_info *instance(oakuk_net *net, const char *name, int32_t mode) {
  oakuk_net_instance_info *info = NULL;
  OK(oakuk_net_instance_setup(net, name, NULL, mode, &info, E));
  g_assert_nonnull(info);
  return info;
}

typedef struct {
  const char *ns;
  int domain, type, proto;
  int fd;
} SockReq;

static gpointer sock_thread(gpointer data) {
  SockReq *r = data;
  g_autofree char *path = g_build_filename(OAKUK_NET_NETNS_DIR, r->ns, NULL);
  int nsfd = open(path, O_RDONLY | O_CLOEXEC);
  g_assert_cmpint(nsfd, >=, 0);
  g_assert_cmpint(setns(nsfd, CLONE_NEWNET), ==, 0);
  close(nsfd);
  r->fd = socket(r->domain, r->type | SOCK_CLOEXEC, r->proto);
  return NULL;
}

/* A socket that lives in namespace ns (made by a short-lived thread that entered it). */
static int socket_in(const char *ns, int type, int proto) {
  SockReq r = {ns, AF_INET, type, proto, -1};
  g_thread_join(g_thread_new("setns", sock_thread, &r));
  g_assert_cmpint(r.fd, >=, 0);
  return r.fd;
}

static struct sockaddr_in sin_of(const char *ip, guint port) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  g_assert_cmpint(inet_pton(AF_INET, ip, &sa.sin_addr), ==, 1);
  return sa;
}

/* TCP server in a namespace that answers every connection with its tag. */
typedef struct {
  int fd;
  char *tag;
  gint stop;
  GThread *thread;
} Server;

static gpointer server_main(gpointer data) {
  Server *s = data;
  while (!g_atomic_int_get(&s->stop)) {
    struct pollfd p = {s->fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0)
      continue;
    int c = accept(s->fd, NULL, NULL);
    if (c >= 0) {
      g_assert_cmpint(write(c, s->tag, strlen(s->tag)), ==, (gssize)strlen(s->tag));
      close(c);
    }
  }
  return NULL;
}

static Server *server_start(const char *ns, guint port, const char *tag) {
  Server *s = g_new0(Server, 1);
  int one = 1;
  struct sockaddr_in sa = sin_of("0.0.0.0", port);
  s->fd = socket_in(ns, SOCK_STREAM, 0);
  s->tag = g_strdup(tag);
  setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  g_assert_cmpint(bind(s->fd, (struct sockaddr *)&sa, sizeof sa), ==, 0);
  g_assert_cmpint(listen(s->fd, 64), ==, 0);
  s->thread = g_thread_new("server", server_main, s);
  return s;
}

static void server_stop(Server *s) {
  g_atomic_int_set(&s->stop, 1);
  g_thread_join(s->thread);
  close(s->fd);
  g_free(s->tag);
  g_free(s);
}

/* Connects from namespace ns to ip:port and returns what the server said, or NULL. */
static char *tcp_fetch(const char *ns, const char *ip, guint port, int timeout_ms) {
  int fd = socket_in(ns, SOCK_STREAM | SOCK_NONBLOCK, 0);
  struct sockaddr_in sa = sin_of(ip, port);
  char buf[256] = {0};
  gssize n = -1;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 || errno == EINPROGRESS) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN))
      n = read(fd, buf, sizeof buf - 1);
  }
  close(fd);
  return n > 0 ? g_strndup(buf, n) : NULL;
}

static void assert_fetch(const char *ns, const char *ip, guint port, const char *expect) {
  g_autofree char *got = tcp_fetch(ns, ip, port, 5000);
  if (g_strcmp0(got, expect) != 0)
    g_error("from %s to %s:%u: got \"%s\", expected \"%s\"", ns, ip, port, got ? got : "(nothing)", expect);
}

/* ------------------------------------------------------------------ guest responder */

/* A userspace "guest" on tap0: answers ARP for its IP, ICMP echo and UDP (echoes the payload). */
typedef struct {
  char *ns;
  guint8 mac[6];
  guint32 ip; /* network order */
  int fd;
  gint stop;
  gint answered;
  GThread *thread;
} Guest;

static guint16 csum(const void *data, size_t len, guint32 sum) {
  const guint8 *p = data;
  for (size_t i = 0; i + 1 < len; i += 2)
    sum += (guint32)(p[i] << 8 | p[i + 1]);
  if (len & 1)
    sum += (guint32)(p[len - 1] << 8);
  while (sum >> 16)
    sum = (sum & 0xffff) + (sum >> 16);
  return (guint16)~sum;
}

static void guest_frame(Guest *g, guint8 *f, gssize n) {
  guint16 type = (guint16)(f[12] << 8 | f[13]);
  guint8 src_mac[6];
  memcpy(src_mac, f + 6, 6);
  if (type == 0x0806 && n >= 42 && f[21] == 1 && memcmp(f + 38, &g->ip, 4) == 0) {
    /* ARP request for us: turn it into a reply. */
    guint8 *a = f + 14;
    a[7] = 2;
    memcpy(a + 18, a + 8, 10); /* target = requester */
    memcpy(a + 8, g->mac, 6);
    memcpy(a + 14, &g->ip, 4);
  } else if (type == 0x0800 && n >= 34 && memcmp(f + 30, &g->ip, 4) == 0) {
    guint8 *ip = f + 14;
    size_t ihl = (ip[0] & 0xf) * 4, tot = (size_t)(ip[2] << 8 | ip[3]);
    guint8 *l4 = ip + ihl, tmp[4];
    if ((gssize)(14 + tot) > n)
      return;
    if (ip[9] == 1 && l4[0] == 8) { /* ICMP echo request */
      l4[0] = 0;
      l4[2] = l4[3] = 0;
      guint16 c = csum(l4, tot - ihl, 0);
      l4[2] = c >> 8;
      l4[3] = c & 0xff;
    } else if (ip[9] == 17) { /* UDP: swap ports, no checksum */
      memcpy(tmp, l4, 2);
      memcpy(l4, l4 + 2, 2);
      memcpy(l4 + 2, tmp, 2);
      l4[6] = l4[7] = 0;
    } else {
      return;
    }
    memcpy(tmp, ip + 12, 4);
    memcpy(ip + 12, ip + 16, 4);
    memcpy(ip + 16, tmp, 4);
    ip[8] = 64;
    ip[10] = ip[11] = 0;
    guint16 c = csum(ip, ihl, 0);
    ip[10] = c >> 8;
    ip[11] = c & 0xff;
  } else {
    return;
  }
  memcpy(f, src_mac, 6);
  memcpy(f + 6, g->mac, 6);
  g_assert_cmpint(write(g->fd, f, n), ==, n);
  g_atomic_int_inc(&g->answered);
}

static gpointer guest_main(gpointer data) {
  Guest *g = data;
  guint8 frame[2048];
  while (!g_atomic_int_get(&g->stop)) {
    struct pollfd p = {g->fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0)
      continue;
    gssize n = read(g->fd, frame, sizeof frame);
    if (n > 14)
      guest_frame(g, frame, n);
  }
  return NULL;
}

static gpointer tap_open_thread(gpointer data) {
  Guest *g = data;
  g_autofree char *path = g_build_filename(OAKUK_NET_NETNS_DIR, g->ns, NULL);
  int nsfd = open(path, O_RDONLY | O_CLOEXEC);
  struct ifreq ifr = {0};
  g_assert_cmpint(setns(nsfd, CLONE_NEWNET), ==, 0);
  close(nsfd);
  g->fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  g_strlcpy(ifr.ifr_name, "tap0", IFNAMSIZ);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  g_assert_cmpint(ioctl(g->fd, TUNSETIFF, &ifr), ==, 0);
  return NULL;
}

static Guest *guest_start(const oakuk_net_instance_info *info) {
  Guest *g = g_new0(Guest, 1);
  unsigned int m[6];
  g->ns = g_strdup(oakuk_net_instance_info_name(info));
  g_assert_cmpint(sscanf(oakuk_net_instance_info_guest_mac(info), "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2],
                         &m[3], &m[4], &m[5]),
                  ==, 6);
  for (int i = 0; i < 6; i++)
    g->mac[i] = (guint8)m[i];
  g_assert_cmpint(inet_pton(AF_INET, oakuk_net_instance_info_guest_ip(info), &g->ip), ==, 1);
  g_thread_join(g_thread_new("tap", tap_open_thread, g));
  g->thread = g_thread_new("guest", guest_main, g);
  return g;
}

static void guest_stop(Guest *g) {
  g_atomic_int_set(&g->stop, 1);
  g_thread_join(g->thread);
  close(g->fd);
  g_free(g->ns);
  g_free(g);
}

static gboolean udp_echo(const char *ns, const char *ip) {
  int fd = socket_in(ns, SOCK_DGRAM, 0);
  struct sockaddr_in sa = sin_of(ip, 7777);
  char buf[64] = {0};
  gboolean ok = FALSE;
  for (int attempt = 0; attempt < 3 && !ok; attempt++) {
    g_assert_cmpint(sendto(fd, "oakuk-probe", 11, 0, (struct sockaddr *)&sa, sizeof sa), ==, 11);
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 1500) == 1 && recv(fd, buf, sizeof buf - 1, 0) == 11)
      ok = strcmp(buf, "oakuk-probe") == 0;
  }
  close(fd);
  return ok;
}

static gboolean icmp_echo(const char *ns, const char *ip) {
  int fd = socket_in(ns, SOCK_RAW, IPPROTO_ICMP);
  struct sockaddr_in sa = sin_of(ip, 0);
  guint8 req[16] = {8, 0, 0, 0, 0x12, 0x34, 0, 1, 'o', 'a', 'k', 'u', 'k', 0, 0, 0};
  guint16 c = csum(req, sizeof req, 0);
  gboolean ok = FALSE;
  req[2] = c >> 8;
  req[3] = c & 0xff;
  for (int attempt = 0; attempt < 3 && !ok; attempt++) {
    g_assert_cmpint(sendto(fd, req, sizeof req, 0, (struct sockaddr *)&sa, sizeof sa), ==, sizeof req);
    gint64 until = g_get_monotonic_time() + 1500000;
    while (!ok && g_get_monotonic_time() < until) {
      guint8 buf[256];
      struct pollfd p = {fd, POLLIN, 0};
      if (poll(&p, 1, 200) != 1)
        continue;
      gssize n = recv(fd, buf, sizeof buf, 0);
      size_t ihl = (buf[0] & 0xf) * 4;
      ok = n >= (gssize)(ihl + 8) && buf[ihl] == 0 && buf[ihl + 4] == 0x12 && buf[ihl + 5] == 0x34 &&
           memcmp(buf + 12, &sa.sin_addr, 4) == 0;
    }
  }
  close(fd);
  return ok;
}

static JsonObject *list_json(oakuk_net *net, JsonNode **keep) {
  oakuk_error *err = NULL;
  char *s = oakuk_net_list(net, &err);
  g_assert_null(err);
  *keep = json_from_string(s, NULL);
  oakuk_free(s);
  return json_node_get_object(*keep);
}

/* ------------------------------------------------------------------ tests */

static char *bridge_sys(const char *host, const char *file) {
  return g_strstrip(runo(g_strdup_printf("ip netns exec %s cat /sys/class/net/oakuk0/%s", host, file)));
}

static void test_two_instances(void) {
  host_new(P("h1"));
  oakuk_net *net = node_new(P("h1"), "10.18.3.0/24", NULL);
  /* The bridge's MAC is set (addr_assign_type 3), from the subnet: it must not follow the lowest
   * MAC of its ports, or every instance's cached gateway MAC breaks when a veth comes or goes. */
  g_autofree char *mac = bridge_sys(P("h1"), "address");
  g_autofree char *assign = bridge_sys(P("h1"), "addr_assign_type");
  g_assert_cmpstr(mac, ==, "0e:62:0a:12:03:00");
  g_assert_cmpstr(assign, ==, "3");
  oakuk_net_instance_info *a = instance(net, P("a.instance.0"), OAKUK_NET_CONTAINER);
  oakuk_net_instance_info *b = instance(net, P("b.instance.0"), OAKUK_NET_CONTAINER);
  g_autofree char *nspath = g_build_filename("/run/netns", P("a.instance.0"), NULL);
  g_assert_cmpstr(oakuk_net_instance_info_netns_path(a), ==, nspath);
  g_assert_true(netns_exists(P("a.instance.0")));
  g_assert_null(oakuk_net_instance_info_tap(a));
  g_assert_cmpstr(oakuk_net_instance_info_ip(a), !=, oakuk_net_instance_info_ip(b));
  g_assert_cmpstr(oakuk_net_instance_info_guest_gateway(a), ==, "10.18.3.1");
  g_assert_cmpuint(oakuk_net_instance_info_guest_prefix(a), ==, 24);
  g_autofree char *links = runo(g_strdup_printf("ip -n %s -o link show master oakuk0", P("h1")));
  g_assert_nonnull(strstr(links, oakuk_net_instance_info_host_ifname(a)));
  g_assert_cmpuint(strlen(oakuk_net_instance_info_host_ifname(a)), <=, 15);
  /* Same call again adopts instead of failing. */
  oakuk_net_instance_info *again = instance(net, P("a.instance.0"), OAKUK_NET_CONTAINER);
  g_assert_cmpstr(oakuk_net_instance_info_ip(again), ==, oakuk_net_instance_info_ip(a));
  oakuk_net_instance_info_unref(again);

  Server *s = server_start(P("a.instance.0"), 8080, "hello from a");
  assert_fetch(P("b.instance.0"), oakuk_net_instance_info_ip(a), 8080, "hello from a");
  server_stop(s);
  s = server_start(P("b.instance.0"), 8080, "hello from b");
  assert_fetch(P("a.instance.0"), oakuk_net_instance_info_ip(b), 8080, "hello from b");
  server_stop(s);

  OK(oakuk_net_instance_teardown(net, P("a.instance.0"), E));
  OK(oakuk_net_instance_teardown(net, P("a.instance.0"), E)); /* idempotent */
  g_autofree char *mac_after = bridge_sys(P("h1"), "address");
  g_assert_cmpstr(mac_after, ==, mac);
  g_assert_false(netns_exists(P("a.instance.0")));
  OK(oakuk_net_teardown_node(net, E));
  g_assert_false(netns_exists(P("b.instance.0")));
  oakuk_net_instance_info_unref(a);
  oakuk_net_instance_info_unref(b);
  oakuk_net_unref(net);
}

static void check_unikernel(int32_t mode) {
  host_new(P("h1"));
  oakuk_net *net = node_new(P("h1"), "10.18.3.0/24", NULL);
  oakuk_net_instance_info *u = instance(net, P("uk.instance.0"), mode);
  oakuk_net_instance_info *c = instance(net, P("client.instance.0"), OAKUK_NET_CONTAINER);
  g_assert_cmpstr(oakuk_net_instance_info_tap(u), ==, "tap0");
  if (mode == OAKUK_NET_UK_DIRECT) {
    g_assert_cmpstr(oakuk_net_instance_info_guest_ip(u), ==, oakuk_net_instance_info_ip(u));
    g_assert_cmpstr(oakuk_net_instance_info_guest_gateway(u), ==, "10.18.3.1");
    /* The guest owns the IP: the namespace's eth0 has none and carries the guest's MAC. */
    g_autofree char *addrs = runo(g_strdup_printf("ip -n %s -4 -o addr show dev eth0", P("uk.instance.0")));
    g_assert_cmpstr(addrs, ==, "");
    g_autofree char *eth = runo(g_strdup_printf("ip -n %s -o link show dev eth0", P("uk.instance.0")));
    g_assert_nonnull(strstr(eth, oakuk_net_instance_info_guest_mac(u)));
  } else {
    g_assert_cmpstr(oakuk_net_instance_info_guest_ip(u), ==, "192.168.1.2");
    g_assert_cmpuint(oakuk_net_instance_info_guest_prefix(u), ==, 30);
    g_assert_cmpstr(oakuk_net_instance_info_guest_gateway(u), ==, "192.168.1.1");
  }
  /* Nobody answers before the guest is attached. */
  g_assert_false(udp_echo(P("client.instance.0"), oakuk_net_instance_info_ip(u)));
  Guest *g = guest_start(u);
  g_assert_true(udp_echo(P("client.instance.0"), oakuk_net_instance_info_ip(u)));
  g_assert_true(icmp_echo(P("client.instance.0"), oakuk_net_instance_info_ip(u)));
  g_assert_cmpint(g_atomic_int_get(&g->answered), >=, 2);
  guest_stop(g);
  OK(oakuk_net_teardown_node(net, E));
  oakuk_net_instance_info_unref(u);
  oakuk_net_instance_info_unref(c);
  oakuk_net_unref(net);
}

static void test_uk_direct(void) {
  check_unikernel(OAKUK_NET_UK_DIRECT);
}

static void test_uk_nat(void) {
  check_unikernel(OAKUK_NET_UK_NAT);
}

static void test_ports(void) {
  host_new(P("h1"));
  host_new(P("other"));
  wire(P("h1"), "192.168.80.1", P("other"), "192.168.80.2");
  oakuk_net *net = node_new(P("h1"), "10.18.3.0/24", NULL);
  oakuk_net_instance_info *s = instance(net, P("web.instance.0"), OAKUK_NET_CONTAINER);
  oakuk_net_instance_info *t = instance(net, P("web2.instance.0"), OAKUK_NET_CONTAINER);
  Server *srv = server_start(P("web.instance.0"), 80, "web");
  OK(oakuk_net_port_map_add(net, P("web.instance.0"), "8080:80", E));
  OK(oakuk_net_port_map_add(net, P("web.instance.0"), "8080:80/tcp", E)); /* same mapping: no-op */
  assert_fetch(P("other"), "192.168.80.1", 8080, "web");
  assert_fetch(P("h1"), "192.168.80.1", 8080, "web");
  assert_fetch(P("h1"), "127.0.0.1", 8080, "web");
  assert_fetch(P("web2.instance.0"), "10.18.3.1", 8080, "web");
  /* Leaving the overlay is masqueraded: the other host has no route back to 10.18.3.0/24. */
  Server *outside = server_start(P("other"), 7070, "outside");
  assert_fetch(P("web2.instance.0"), "192.168.80.2", 7070, "outside");
  server_stop(outside);

  oakuk_error *err = NULL;
  g_assert_cmpint(oakuk_net_port_map_add(net, P("web2.instance.0"), "8080:81", &err), ==, OAKUK_EEXISTS);
  g_assert_nonnull(strstr(oakuk_error_message(err), P("web.instance.0")));
  g_assert_nonnull(strstr(oakuk_error_message(err), P("web2.instance.0")));
  oakuk_error_free(g_steal_pointer(&err));
  /* Same port over UDP is another mapping. */
  OK(oakuk_net_port_map_add(net, P("web2.instance.0"), "8080:80/udp", E));
  g_assert_cmpint(oakuk_net_port_map_remove(net, P("web2.instance.0"), "8080:80", &err), ==, OAKUK_ENOTFOUND);
  oakuk_error_free(g_steal_pointer(&err));

  OK(oakuk_net_port_map_remove(net, P("web.instance.0"), "8080:80", E));
  g_autofree char *gone = tcp_fetch(P("other"), "192.168.80.1", 8080, 1000);
  g_assert_null(gone);
  OK(oakuk_net_port_map_add(net, P("web.instance.0"), "9090:80", E));
  assert_fetch(P("other"), "192.168.80.1", 9090, "web");
  /* A mapping made behind the plumber's back: the kernel refuses ours, and the error names the
   * nftables operation that failed. */
  runf("ip netns exec %s nft add element ip oakuk ports '{ tcp . 7777 : 10.18.3.9 . 80 }'", P("h1"));
  g_assert_cmpint(oakuk_net_port_map_add(net, P("web.instance.0"), "7777:80", &err), !=, 0);
  g_assert_nonnull(strstr(oakuk_error_message(err), "add element ports { tcp . 7777 }"));
  g_assert_nonnull(strstr(oakuk_error_message(err), "exists"));
  oakuk_error_free(g_steal_pointer(&err));
  /* Teardown of the instance removes its mappings. */
  server_stop(srv);
  OK(oakuk_net_instance_teardown(net, P("web.instance.0"), E));
  g_autofree char *rules = runo(g_strdup_printf("ip netns exec %s nft list map ip oakuk ports", P("h1")));
  g_assert_null(strstr(rules, "9090"));
  g_assert_nonnull(strstr(rules, "8080"));
  OK(oakuk_net_teardown_node(net, E));
  oakuk_net_instance_info_unref(s);
  oakuk_net_instance_info_unref(t);
  oakuk_net_unref(net);
}

static void count_backends(const char *ns, const char *ip, int n, GHashTable *counts) {
  for (int i = 0; i < n; i++) {
    char *tag = tcp_fetch(ns, ip, 80, 5000);
    g_assert_nonnull(tag);
    g_hash_table_insert(counts, tag, GINT_TO_POINTER(GPOINTER_TO_INT(g_hash_table_lookup(counts, tag)) + 1));
  }
}

static void test_services(void) {
  host_new(P("h1"));
  oakuk_net *net = node_new(P("h1"), "10.18.3.0/24", NULL);
  const char *names[] = {P("be.instance.0"), P("be.instance.1"), P("be.instance.2")};
  const char *ips[3];
  oakuk_net_instance_info *infos[3];
  Server *servers[3];
  for (int i = 0; i < 3; i++) {
    infos[i] = instance(net, names[i], OAKUK_NET_CONTAINER);
    ips[i] = oakuk_net_instance_info_ip(infos[i]);
    servers[i] = server_start(names[i], 80, names[i]);
  }
  oakuk_net_instance_info *c = instance(net, P("fe.instance.0"), OAKUK_NET_CONTAINER);
  OK(oakuk_net_service_set(net, "10.30.0.10", 80, ips, 3, E));
  g_autoptr(GHashTable) counts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  count_backends(P("fe.instance.0"), "10.30.0.10", 30, counts);
  for (int i = 0; i < 3; i++)
    g_assert_cmpint(GPOINTER_TO_INT(g_hash_table_lookup(counts, names[i])), >=, 1);
  /* From the node itself too. */
  g_hash_table_remove_all(counts);
  count_backends(P("h1"), "10.30.0.10", 6, counts);
  g_assert_cmpuint(g_hash_table_size(counts), >=, 2);

  OK(oakuk_net_service_set(net, "10.30.0.10", 80, ips, 2, E));
  g_hash_table_remove_all(counts);
  count_backends(P("fe.instance.0"), "10.30.0.10", 12, counts);
  g_assert_false(g_hash_table_contains(counts, names[2]));
  g_assert_cmpuint(g_hash_table_size(counts), ==, 2);
  g_autoptr(JsonNode) root = NULL;
  JsonObject *l = list_json(net, &root);
  JsonObject *svc = json_array_get_object_element(json_object_get_array_member(l, "services"), 0);
  g_assert_cmpstr(json_object_get_string_member(svc, "ip"), ==, "10.30.0.10");
  g_assert_cmpint(json_object_get_int_member(svc, "port"), ==, 80);
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(svc, "backends")), ==, 2);

  OK(oakuk_net_service_remove(net, "10.30.0.10", E));
  g_autofree char *none = tcp_fetch(P("fe.instance.0"), "10.30.0.10", 80, 800);
  g_assert_null(none);
  for (int i = 0; i < 3; i++) {
    server_stop(servers[i]);
    oakuk_net_instance_info_unref(infos[i]);
  }
  OK(oakuk_net_teardown_node(net, E));
  oakuk_net_instance_info_unref(c);
  oakuk_net_unref(net);
}

static void test_vxlan(void) {
  host_new(P("ul"));
  host_new(P("ha"));
  host_new(P("hb"));
  runf("ip -n %s link add br0 type bridge", P("ul"));
  runf("ip -n %s link set br0 up", P("ul"));
  const char *hosts[] = {P("ha"), P("hb")}, *ul_ips[] = {"192.168.77.1", "192.168.77.2"};
  for (int i = 0; i < 2; i++) {
    runf("ip -n %s link add ul0 type veth peer name p%d netns %s", hosts[i], i, P("ul"));
    runf("ip -n %s link set p%d master br0 up", P("ul"), i);
    runf("ip -n %s addr add %s/24 dev ul0", hosts[i], ul_ips[i]);
    runf("ip -n %s link set ul0 up", hosts[i]);
  }
  oakuk_net *a = node_new(P("ha"), "10.18.3.0/24", "192.168.77.1");
  oakuk_net *b = node_new(P("hb"), "10.18.4.0/24", "192.168.77.2");
  OK(oakuk_net_peer_add(a, "192.168.77.2", "10.18.4.0/24", E));
  OK(oakuk_net_peer_add(b, "192.168.77.1", "10.18.3.0/24", E));
  OK(oakuk_net_peer_add(b, "192.168.77.1", "10.18.3.0/24", E)); /* idempotent */
  oakuk_net_instance_info *ia = instance(a, P("x.instance.0"), OAKUK_NET_CONTAINER);
  oakuk_net_instance_info *ib = instance(b, P("y.instance.0"), OAKUK_NET_CONTAINER);
  Server *s = server_start(P("y.instance.0"), 80, "node b");
  assert_fetch(P("x.instance.0"), oakuk_net_instance_info_ip(ib), 80, "node b");
  const char *backend = oakuk_net_instance_info_ip(ib);
  OK(oakuk_net_service_set(a, "10.30.0.20", 0, &backend, 1, E));
  assert_fetch(P("x.instance.0"), "10.30.0.20", 80, "node b");
  server_stop(s);
  s = server_start(P("x.instance.0"), 80, "node a");
  assert_fetch(P("y.instance.0"), oakuk_net_instance_info_ip(ia), 80, "node a");
  server_stop(s);

  g_autoptr(JsonNode) root = NULL;
  JsonObject *l = list_json(a, &root);
  JsonObject *peer = json_array_get_object_element(json_object_get_array_member(l, "peers"), 0);
  g_assert_cmpstr(json_object_get_string_member(peer, "underlay"), ==, "192.168.77.2");
  g_assert_cmpstr(json_object_get_string_member(peer, "subnet"), ==, "10.18.4.0/24");
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(l, "fdb")), ==, 2);
  OK(oakuk_net_peer_remove(a, "192.168.77.2", NULL, E));
  g_autofree char *fdb = runo(g_strdup_printf("bridge -n %s fdb show dev oakuk-vx", P("ha")));
  g_assert_null(strstr(fdb, "192.168.77.2"));
  g_autofree char *routes = runo(g_strdup_printf("ip -n %s route", P("ha")));
  g_assert_null(strstr(routes, "10.18.4.0"));
  g_autofree char *none = tcp_fetch(P("x.instance.0"), oakuk_net_instance_info_ip(ib), 80, 800);
  g_assert_null(none);
  OK(oakuk_net_teardown_node(a, E));
  OK(oakuk_net_teardown_node(b, E));
  oakuk_net_instance_info_unref(ia);
  oakuk_net_instance_info_unref(ib);
  oakuk_net_unref(a);
  oakuk_net_unref(b);
}

/* Everything of ours, as seen by the ip/nft/bridge tools, in host h. */
static void assert_clean(const char *h) {
  g_autofree char *c1 = g_strdup_printf("ip -n %s -o link", h);
  g_autofree char *c2 = g_strdup_printf("ip -n %s route", h);
  g_autofree char *c3 = g_strdup_printf("ip netns exec %s nft list tables", h);
  g_autofree char *c4 = g_strdup_printf("bridge -n %s fdb show", h);
  g_autofree char *links = run(c1);
  g_autofree char *routes = run(c2);
  g_autofree char *nft = run(c3);
  g_autofree char *fdb = run(c4);
  g_autofree char *ns = run("ip netns list");
  g_assert_null(strstr(links, "oakuk"));
  g_assert_null(strstr(routes, "10.18."));
  g_assert_null(strstr(routes, "10.30."));
  g_assert_null(strstr(nft, "oakuk"));
  g_assert_null(strstr(fdb, "192.168.77"));
  g_auto(GStrv) lines = g_strsplit(ns, "\n", -1);
  for (char **l = lines; *l; l++)
    g_assert_false(g_str_has_prefix(*l, prefix()) && strstr(*l, ".instance.") != NULL);
}

static void test_teardown_clean(void) {
  host_new(P("h1"));
  runf("ip netns exec %s nft add table ip other", P("h1"));
  runf("ip netns exec %s nft add chain ip other c { type nat hook postrouting priority 100 ; }", P("h1"));
  oakuk_net *net = node_new(P("h1"), "10.18.3.0/24", "192.168.77.1");
  oakuk_net_instance_info *i[3] = {instance(net, P("c.instance.0"), OAKUK_NET_CONTAINER),
                                   instance(net, P("d.instance.0"), OAKUK_NET_UK_DIRECT),
                                   instance(net, P("n.instance.0"), OAKUK_NET_UK_NAT)};
  OK(oakuk_net_port_map_add(net, P("d.instance.0"), "8080:80", E));
  const char *ips[] = {oakuk_net_instance_info_ip(i[0])};
  OK(oakuk_net_service_set(net, "10.30.0.5", 80, ips, 1, E));
  OK(oakuk_net_peer_add(net, "192.168.77.2", "10.18.4.0/24", E));
  OK(oakuk_net_teardown_node(net, E));
  assert_clean(P("h1"));
  g_autofree char *nft = runo(g_strdup_printf("ip netns exec %s nft list tables", P("h1")));
  g_assert_nonnull(strstr(nft, "table ip other"));
  g_autoptr(JsonNode) root = NULL;
  JsonObject *l = list_json(net, &root);
  g_assert_false(json_object_get_boolean_member(l, "bridge"));
  g_assert_false(json_object_get_boolean_member(l, "table"));
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(l, "netns")), ==, 0);
  for (int k = 0; k < 3; k++) {
    g_assert_false(netns_exists(oakuk_net_instance_info_name(i[k])));
    oakuk_net_instance_info_unref(i[k]);
  }
  oakuk_net_unref(net);
}

static void test_reconcile(void) {
  host_new(P("h1"));
  oakuk_net *net = node_new(P("h1"), "10.18.3.0/24", "192.168.77.1");
  oakuk_net_instance_info *keep = instance(net, P("keep.instance.0"), OAKUK_NET_UK_DIRECT);
  oakuk_net_instance_info_unref(instance(net, P("leak.instance.0"), OAKUK_NET_CONTAINER));
  oakuk_net_instance_info_unref(instance(net, P("leak.instance.1"), OAKUK_NET_UK_NAT));
  OK(oakuk_net_port_map_add(net, P("leak.instance.0"), "8080:80", E));
  OK(oakuk_net_port_map_add(net, P("keep.instance.0"), "8081:80", E));
  const char *ips[] = {"10.18.3.50"};
  OK(oakuk_net_service_set(net, "10.30.0.1", 0, ips, 1, E));
  OK(oakuk_net_service_set(net, "10.30.0.2", 0, ips, 1, E));
  OK(oakuk_net_peer_add(net, "192.168.77.2", "10.18.4.0/24", E));
  OK(oakuk_net_peer_add(net, "192.168.77.3", "10.18.5.0/24", E));
  /* The node "crashes": its object goes away without any teardown, and one instance lost its
   * veth on the way (only the namespace is left of it). */
  oakuk_net_unref(net);
  g_autofree char *lost_if = oakuk_net_host_ifname(P("leak.instance.1"));
  runf("ip -n %s link del %s", P("h1"), lost_if);
  g_assert_true(netns_exists(P("leak.instance.1")));

  net = node_new(P("h1"), "10.18.3.0/24", "192.168.77.1");
  g_autoptr(JsonNode) before = NULL;
  JsonObject *l = list_json(net, &before);
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(l, "instances")), ==, 2);
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(l, "netns")), ==, 3);
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(l, "ports")), ==, 2);
  /* Adoption: the same setup returns the same addresses. */
  oakuk_net_instance_info *again = instance(net, P("keep.instance.0"), OAKUK_NET_UK_DIRECT);
  g_assert_cmpstr(oakuk_net_instance_info_ip(again), ==, oakuk_net_instance_info_ip(keep));
  g_assert_cmpstr(oakuk_net_instance_info_guest_mac(again), ==, oakuk_net_instance_info_guest_mac(keep));
  oakuk_net_instance_info_unref(again);

  const char *keep_i[] = {P("keep.instance.0")}, *keep_s[] = {"10.30.0.2"}, *keep_p[] = {"192.168.77.3"};
  OK(oakuk_net_reconcile(net, keep_i, 1, keep_s, 1, keep_p, 1, E));
  g_autoptr(JsonNode) after = NULL;
  l = list_json(net, &after);
  JsonArray *inst = json_object_get_array_member(l, "instances");
  g_assert_cmpuint(json_array_get_length(inst), ==, 1);
  g_assert_cmpstr(json_object_get_string_member(json_array_get_object_element(inst, 0), "name"), ==,
                  P("keep.instance.0"));
  JsonArray *ports = json_object_get_array_member(l, "ports");
  g_assert_cmpuint(json_array_get_length(ports), ==, 1);
  g_assert_cmpint(json_object_get_int_member(json_array_get_object_element(ports, 0), "host"), ==, 8081);
  JsonArray *svc = json_object_get_array_member(l, "services");
  g_assert_cmpuint(json_array_get_length(svc), ==, 1);
  g_assert_cmpstr(json_object_get_string_member(json_array_get_object_element(svc, 0), "ip"), ==,
                  "10.30.0.2");
  JsonArray *peers = json_object_get_array_member(l, "peers");
  g_assert_cmpuint(json_array_get_length(peers), ==, 1);
  g_assert_cmpstr(json_object_get_string_member(json_array_get_object_element(peers, 0), "underlay"), ==,
                  "192.168.77.3");
  g_assert_false(netns_exists(P("leak.instance.0")));
  g_assert_false(netns_exists(P("leak.instance.1")));
  g_assert_true(netns_exists(P("keep.instance.0")));
  g_autofree char *fdb = runo(g_strdup_printf("bridge -n %s fdb show dev oakuk-vx", P("h1")));
  g_assert_null(strstr(fdb, "192.168.77.2"));
  g_assert_nonnull(strstr(fdb, "192.168.77.3"));
  OK(oakuk_net_teardown_node(net, E));
  assert_clean(P("h1"));
  oakuk_net_instance_info_unref(keep);
  oakuk_net_unref(net);
}

static void expect_fail(int r, oakuk_error *err, int code, const char *needle) {
  g_assert_cmpint(r, ==, code);
  g_assert_nonnull(err);
  if (strstr(oakuk_error_message(err), needle) == NULL)
    g_error("error \"%s\" does not mention \"%s\"", oakuk_error_message(err), needle);
  oakuk_error_free(err);
}

#define EXPECT_FAIL(call, code, needle)                                                                      \
  do {                                                                                                       \
    oakuk_error *err_ = NULL;                                                                                \
    int r_ = (call);                                                                                         \
    expect_fail(r_, err_, code, needle);                                                                     \
  } while (0)

static void test_invalid(void) {
  host_new(P("h1"));
  oakuk_net_options o = OAKUK_NET_OPTIONS_INIT;
  oakuk_error *err = NULL;
  o.node_subnet = "10.18.3.7/24";
  g_autofree char *hpath = g_build_filename("/run/netns", P("h1"), NULL);
  o.netns_path = hpath;
  g_assert_null(oakuk_net_new(&o, &err));
  expect_fail(OAKUK_EINVAL, err, OAKUK_EINVAL, "options.node_subnet");
  err = NULL;
  oakuk_net *net = node_new(P("h1"), "10.18.3.0/24", NULL);
  oakuk_net_instance_info_unref(instance(net, P("ok.instance.0"), OAKUK_NET_CONTAINER));
  OK(oakuk_net_port_map_add(net, P("ok.instance.0"), "8080:80", E));
  char *before = oakuk_net_list(net, NULL);

  g_autofree char *long_name = g_strnfill(120, 'x');
  EXPECT_FAIL(oakuk_net_instance_setup(net, long_name, NULL, OAKUK_NET_CONTAINER, NULL, &err_), OAKUK_EINVAL,
              "instance name");
  EXPECT_FAIL(
      oakuk_net_instance_setup(net, P("bad.instance.0"), "10.99.0.5", OAKUK_NET_CONTAINER, NULL, &err_),
      OAKUK_EINVAL, "10.99.0.5");
  EXPECT_FAIL(oakuk_net_instance_setup(net, P("bad.instance.0"), NULL, 7, NULL, &err_), OAKUK_EINVAL, "mode");
  EXPECT_FAIL(oakuk_net_instance_setup(net, P("ok.instance.0"), NULL, OAKUK_NET_UK_NAT, NULL, &err_),
              OAKUK_EEXISTS, "exists with mode container");
  EXPECT_FAIL(oakuk_net_port_map_add(net, P("ok.instance.0"), "8080", &err_), OAKUK_EINVAL, "HOST:GUEST");
  EXPECT_FAIL(oakuk_net_port_map_add(net, P("nobody.instance.0"), "9000:80", &err_), OAKUK_ENOTFOUND,
              P("nobody.instance.0"));
  oakuk_net_instance_info_unref(instance(net, P("ok.instance.1"), OAKUK_NET_CONTAINER));
  char *mid = oakuk_net_list(net, NULL);
  EXPECT_FAIL(oakuk_net_port_map_add(net, P("ok.instance.1"), "8080:80", &err_), OAKUK_EEXISTS,
              P("ok.instance.0"));
  const char *bad_backend[] = {"not-an-ip"};
  EXPECT_FAIL(oakuk_net_service_set(net, "10.30.0.1", 80, bad_backend, 1, &err_), OAKUK_EINVAL, "backend[0]");
  EXPECT_FAIL(oakuk_net_service_set(net, "10.18.3.77", 80, NULL, 0, &err_), OAKUK_EINVAL, "service CIDR");
  g_autofree const char **many = g_new0(const char *, OAKUK_NET_MAX_BACKENDS + 1);
  for (guint i = 0; i <= OAKUK_NET_MAX_BACKENDS; i++)
    many[i] = "10.18.3.2";
  EXPECT_FAIL(oakuk_net_service_set(net, "10.30.0.1", 80, many, OAKUK_NET_MAX_BACKENDS + 1, &err_),
              OAKUK_EINVAL, "at most");
  EXPECT_FAIL(oakuk_net_peer_add(net, "192.168.77.2", "10.18.4.0/33", &err_), OAKUK_EINVAL, "node_subnet");
  EXPECT_FAIL(oakuk_net_peer_add(net, "192.168.77.2", "10.18.4.0/24", &err_), OAKUK_ENOTFOUND, "oakuk-vx");
  char *after = oakuk_net_list(net, NULL);
  g_assert_cmpstr(mid, ==, after);
  g_assert_nonnull(strstr(before, "8080"));

  /* A name collision in the kernel: the error names the object and errno; nothing is left. */
  g_autofree char *host_if = oakuk_net_host_ifname(P("clash.instance.0"));
  runf("ip -n %s link add %s type bridge", P("h1"), host_if);
  int r = oakuk_net_instance_setup(net, P("clash.instance.0"), NULL, OAKUK_NET_CONTAINER, NULL, &err);
  g_autofree char *want =
      g_strdup_printf("create veth %s in netns %s: EEXIST", host_if, P("clash.instance.0"));
  g_assert_cmpint(oakuk_error_errno(err), ==, EEXIST);
  expect_fail(r, err, OAKUK_EEXISTS, want);
  err = NULL;
  g_assert_false(netns_exists(P("clash.instance.0")));
  runf("ip -n %s link del %s", P("h1"), host_if);
  /* The largest service fits one transaction, and reads back whole. */
  char *small = oakuk_net_list(net, NULL);
  OK(oakuk_net_service_set(net, "10.30.0.1", 80, many, OAKUK_NET_MAX_BACKENDS, E));
  char *big = oakuk_net_list(net, NULL);
  guint seen = 0;
  for (const char *p = big; (p = strstr(p, "\"10.18.3.2\"")) != NULL; p++)
    seen++;
  for (const char *p = small; (p = strstr(p, "\"10.18.3.2\"")) != NULL; p++)
    seen--;
  g_assert_cmpuint(seen, ==, OAKUK_NET_MAX_BACKENDS);
  oakuk_free(small);
  oakuk_free(big);
  OK(oakuk_net_teardown_node(net, E));
  oakuk_free(before);
  oakuk_free(mid);
  oakuk_free(after);
  oakuk_net_unref(net);
}

typedef struct {
  GMainLoop *loop;
  GThread *thread;
  int status;
  char *ip;
  int calls;
} AsyncState;

static void on_setup(int status, oakuk_net_instance_info *info, oakuk_error *error, void *data) {
  AsyncState *s = data;
  g_assert_true(g_thread_self() == s->thread);
  s->status = status;
  s->ip = info ? g_strdup(oakuk_net_instance_info_ip(info)) : NULL;
  s->calls++;
  g_main_loop_quit(s->loop);
}

static void on_done(int status, oakuk_error *error, void *data) {
  AsyncState *s = data;
  g_assert_true(g_thread_self() == s->thread);
  s->status = status;
  if (error)
    g_assert_cmpint(oakuk_error_code(error), ==, status);
  s->calls++;
  g_main_loop_quit(s->loop);
}

static void test_async(void) {
  host_new(P("h1"));
  oakuk_net *net = node_new(P("h1"), "10.18.3.0/24", NULL);
  AsyncState s = {g_main_loop_new(NULL, FALSE), g_thread_self(), -1, NULL, 0};
  oakuk_net_instance_setup_async(net, P("async.instance.0"), "10.18.3.77", OAKUK_NET_UK_DIRECT, on_setup, &s);
  g_assert_cmpint(s.calls, ==, 0); /* never called back synchronously */
  g_main_loop_run(s.loop);
  g_assert_cmpint(s.status, ==, 0);
  g_assert_cmpstr(s.ip, ==, "10.18.3.77");
  g_assert_true(netns_exists(P("async.instance.0")));
  oakuk_net_instance_setup_async(net, "bad/name", NULL, OAKUK_NET_CONTAINER, on_setup, &s);
  g_main_loop_run(s.loop);
  g_assert_cmpint(s.status, ==, OAKUK_EINVAL);
  oakuk_net_instance_teardown_async(net, P("async.instance.0"), on_done, &s);
  g_main_loop_run(s.loop);
  g_assert_cmpint(s.status, ==, 0);
  g_assert_false(netns_exists(P("async.instance.0")));
  const char *backend = "10.18.3.77";
  oakuk_net_service_set_async(net, "10.30.0.3", 80, &backend, 1, on_done, &s);
  g_main_loop_run(s.loop);
  g_assert_cmpint(s.status, ==, 0);
  oakuk_net_peer_add_async(net, "192.168.77.2", "10.18.4.0/24", on_done, &s);
  g_main_loop_run(s.loop);
  g_assert_cmpint(s.status, ==, OAKUK_ENOTFOUND); /* no underlay_ip, so no oakuk-vx */
  oakuk_net_setup_node_async(net, on_done, &s);   /* again: idempotent */
  g_main_loop_run(s.loop);
  g_assert_cmpint(s.status, ==, 0);
  oakuk_net_reconcile_async(net, NULL, 0, NULL, 0, NULL, 0, on_done, &s);
  g_main_loop_run(s.loop);
  g_assert_cmpint(s.status, ==, 0);
  g_assert_cmpint(s.calls, ==, 7);
  g_autoptr(JsonNode) root = NULL;
  JsonObject *l = list_json(net, &root);
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(l, "services")), ==, 0);
  OK(oakuk_net_teardown_node(net, E));
  g_free(s.ip);
  g_main_loop_unref(s.loop);
  oakuk_net_unref(net);
}

/* Runs body in a subprocess and always removes the test's namespaces afterwards. */
static void isolated(gconstpointer data) {
  void (*body)(void) = data;
  if (geteuid() != 0 || access("/dev/net/tun", R_OK | W_OK) != 0) {
    g_test_skip("needs root and /dev/net/tun");
    return;
  }
  if (g_test_subprocess()) {
    body();
    return;
  }
  cleanup_namespaces();
  g_test_trap_subprocess(NULL, 120 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_INHERIT_STDERR);
  cleanup_namespaces();
  g_test_trap_assert_passed();
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_data_func("/net/instances/two-containers-tcp", test_two_instances, isolated);
  g_test_add_data_func("/net/unikernel/direct-tap-eth0", test_uk_direct, isolated);
  g_test_add_data_func("/net/unikernel/nat-virbr0", test_uk_nat, isolated);
  g_test_add_data_func("/net/ports/host-localhost-remote", test_ports, isolated);
  g_test_add_data_func("/net/services/spread-and-update", test_services, isolated);
  g_test_add_data_func("/net/vxlan/cross-node", test_vxlan, isolated);
  g_test_add_data_func("/net/teardown/leaves-nothing", test_teardown_clean, isolated);
  g_test_add_data_func("/net/reconcile/leftovers", test_reconcile, isolated);
  g_test_add_data_func("/net/invalid/no-change", test_invalid, isolated);
  g_test_add_data_func("/net/async/main-context", test_async, isolated);
  return g_test_run();
}
