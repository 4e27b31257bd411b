/* net-plumb: creates and removes N unikernel network topologies (netns + veth on the node bridge +
 * tap0 + tc mirred redirects both ways + addresses + one port mapping) with liboakuk's net module,
 * and the same topology with ip/tc/iptables commands the way Oakestra's NetManager builds it.
 * Both run inside scratch "host" namespaces (one each, created and removed here); times are per
 * instance, medians over N. Needs root.
 *
 *   net-plumb [N]     (default 50)
 */
#include <oakuk/oakuk.h>

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char host_ours[64], host_ref[64];
static const char *firewall = "iptables";

static gboolean cmd(const char *first, ...) G_GNUC_NULL_TERMINATED;
static gboolean cmd(const char *first, ...) {
  GPtrArray *argv = g_ptr_array_new();
  va_list ap;
  va_start(ap, first);
  for (const char *a = first; a; a = va_arg(ap, const char *))
    g_ptr_array_add(argv, (char *)a);
  va_end(ap);
  g_ptr_array_add(argv, NULL);
  int status = 0;
  g_autofree char *err = NULL;
  gboolean ok =
      g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL,
                   NULL, NULL, &err, &status, NULL) &&
      g_spawn_check_wait_status(status, NULL);
  if (!ok)
    fprintf(stderr, "net-plumb: %s %s ... failed: %s", first, argv->len > 2 ? (char *)argv->pdata[1] : "",
            err ? err : "");
  g_ptr_array_free(argv, TRUE);
  return ok;
}

static double ms_since(gint64 t0) {
  return (double)(g_get_monotonic_time() - t0) / 1000.0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Oakestra NetManager style: one command per kernel object, iptables for the port mapping. */
static gboolean ref_setup(int i) {
  char ns[64], veth[16], mac[32], port[16], dest[48];
  g_snprintf(ns, sizeof ns, "%s-i%d", host_ref, i);
  g_snprintf(veth, sizeof veth, "veth-r%d", i);
  g_snprintf(mac, sizeof mac, "02:00:00:00:%02x:%02x", i / 256, i % 256);
  g_snprintf(port, sizeof port, "%d", 20000 + i);
  g_snprintf(dest, sizeof dest, "10.19.%d.%d:80", 1 + i / 250, 2 + i % 250);
  return cmd("ip", "netns", "add", ns, NULL) &&
         cmd("ip", "-n", host_ref, "link", "add", veth, "type", "veth", "peer", "name", "eth0", NULL) &&
         cmd("ip", "-n", host_ref, "link", "set", "eth0", "netns", ns, NULL) &&
         cmd("ip", "-n", host_ref, "link", "set", veth, "master", "refbr0", NULL) &&
         cmd("ip", "-n", host_ref, "link", "set", veth, "up", NULL) &&
         cmd("ip", "-n", ns, "link", "set", "lo", "up", NULL) &&
         cmd("ip", "-n", ns, "link", "set", "eth0", "address", mac, NULL) &&
         cmd("ip", "-n", ns, "link", "set", "eth0", "up", NULL) &&
         cmd("ip", "-n", ns, "tuntap", "add", "tap0", "mode", "tap", NULL) &&
         cmd("ip", "-n", ns, "link", "set", "tap0", "up", NULL) &&
         cmd("tc", "-n", ns, "qdisc", "add", "dev", "eth0", "ingress", NULL) &&
         cmd("tc", "-n", ns, "filter", "add", "dev", "eth0", "parent", "ffff:", "protocol", "all", "u32",
             "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", "tap0", NULL) &&
         cmd("tc", "-n", ns, "qdisc", "add", "dev", "tap0", "ingress", NULL) &&
         cmd("tc", "-n", ns, "filter", "add", "dev", "tap0", "parent", "ffff:", "protocol", "all", "u32",
             "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", "eth0", NULL) &&
         cmd("ip", "netns", "exec", host_ref, firewall, "-t", "nat", "-A", "PREROUTING", "-p", "tcp",
             "--dport", port, "-j", "DNAT", "--to-destination", dest, NULL) &&
         cmd("ip", "netns", "exec", host_ref, firewall, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport",
             port, "-j", "DNAT", "--to-destination", dest, NULL);
}

static gboolean ref_teardown(int i) {
  char ns[64], veth[16], port[16], dest[48];
  g_snprintf(ns, sizeof ns, "%s-i%d", host_ref, i);
  g_snprintf(veth, sizeof veth, "veth-r%d", i);
  g_snprintf(port, sizeof port, "%d", 20000 + i);
  g_snprintf(dest, sizeof dest, "10.19.%d.%d:80", 1 + i / 250, 2 + i % 250);
  return cmd("ip", "netns", "exec", host_ref, firewall, "-t", "nat", "-D", "PREROUTING", "-p", "tcp",
             "--dport", port, "-j", "DNAT", "--to-destination", dest, NULL) &&
         cmd("ip", "netns", "exec", host_ref, firewall, "-t", "nat", "-D", "OUTPUT", "-p", "tcp", "--dport",
             port, "-j", "DNAT", "--to-destination", dest, NULL) &&
         cmd("ip", "-n", host_ref, "link", "del", veth, NULL) && cmd("ip", "netns", "del", ns, NULL);
}

static void instance_name(char *buf, size_t len, int i) {
  g_snprintf(buf, len, "%s-app.bench.instance.%d", host_ours, i);
}

static gboolean ours_setup(oakuk_net *net, int i) {
  char name[96], spec[32];
  oakuk_error *err = NULL;
  instance_name(name, sizeof name, i);
  g_snprintf(spec, sizeof spec, "%d:80", 20000 + i);
  if (oakuk_net_instance_setup(net, name, NULL, OAKUK_NET_UK_DIRECT, NULL, &err) != 0 ||
      oakuk_net_port_map_add(net, name, spec, &err) != 0) {
    fprintf(stderr, "net-plumb: %s\n", oakuk_error_message(err));
    oakuk_error_free(err);
    return FALSE;
  }
  return TRUE;
}

static gboolean ours_teardown(oakuk_net *net, int i) {
  char name[96];
  oakuk_error *err = NULL;
  instance_name(name, sizeof name, i);
  if (oakuk_net_instance_teardown(net, name, &err) != 0) {
    fprintf(stderr, "net-plumb: %s\n", oakuk_error_message(err));
    oakuk_error_free(err);
    return FALSE;
  }
  return TRUE;
}

static gboolean have_program(const char *name) {
  g_autofree char *p = g_find_program_in_path(name);
  return p != NULL;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 50;
  if (n < 1 || n > 2000) {
    fprintf(stderr, "usage: net-plumb [N (1-2000)]\n");
    return 2;
  }
  if (geteuid() != 0) {
    printf("net-plumb: skipped (needs root)\n");
    return 77;
  }
  if (!have_program("iptables"))
    firewall = "iptables-nft";
  if (!have_program(firewall)) {
    fprintf(stderr, "net-plumb: iptables is not installed (scripts/install-deps.sh)\n");
    return 1;
  }
  g_snprintf(host_ours, sizeof host_ours, "bnp%d-ours", (int)getpid());
  g_snprintf(host_ref, sizeof host_ref, "bnp%d-ref", (int)getpid());
  int rc = 1;
  double *su = g_new0(double, n), *sr = g_new0(double, n), *tu = g_new0(double, n), *tr = g_new0(double, n);
  oakuk_net *net = NULL;
  oakuk_error *err = NULL;
  g_autofree char *path = g_strdup_printf("/run/netns/%s", host_ours);
  if (!cmd("ip", "netns", "add", host_ours, NULL) || !cmd("ip", "netns", "add", host_ref, NULL) ||
      !cmd("ip", "-n", host_ref, "link", "add", "refbr0", "type", "bridge", NULL) ||
      !cmd("ip", "-n", host_ref, "addr", "add", "10.19.0.1/16", "dev", "refbr0", NULL) ||
      !cmd("ip", "-n", host_ref, "link", "set", "refbr0", "up", NULL))
    goto out;
  oakuk_net_options o = OAKUK_NET_OPTIONS_INIT;
  o.node_subnet = "10.18.0.0/20";
  o.netns_path = path;
  net = oakuk_net_new(&o, &err);
  if (net == NULL || oakuk_net_setup_node(net, &err) != 0) {
    fprintf(stderr, "net-plumb: %s\n", oakuk_error_message(err));
    goto out;
  }
  /* Phase by phase, with a pause between, so one side's deferred kernel work (namespace and mount
   * teardown of the reference's processes) is not billed to the other. */
  for (int i = 0; i < n; i++) {
    gint64 t0 = g_get_monotonic_time();
    if (!ours_setup(net, i))
      goto out;
    su[i] = ms_since(t0);
  }
  for (int i = 0; i < n; i++) {
    gint64 t0 = g_get_monotonic_time();
    if (!ours_teardown(net, i))
      goto out;
    tu[i] = ms_since(t0);
  }
  g_usleep(G_USEC_PER_SEC);
  for (int i = 0; i < n; i++) {
    gint64 t0 = g_get_monotonic_time();
    if (!ref_setup(i))
      goto out;
    sr[i] = ms_since(t0);
  }
  for (int i = 0; i < n; i++) {
    gint64 t0 = g_get_monotonic_time();
    if (!ref_teardown(i))
      goto out;
    tr[i] = ms_since(t0);
  }
  double mo = median(su, n), mr = median(sr, n), to = median(tu, n), tref = median(tr, n);
  printf(
      "net-plumb: %d unikernel topologies (netns, veth, tap0, 2 mirred redirects, port mapping); reference: "
      "ip/tc/%s commands\n",
      n, firewall);
  printf("net-plumb setup: ours %.1f ms, reference %.1f ms, ratio %.1fx\n", mo, mr, mr / mo);
  printf("net-plumb teardown: ours %.1f ms, reference %.1f ms, ratio %.1fx\n", to, tref, tref / to);
  rc = 0;
out:
  if (net) {
    if (oakuk_net_teardown_node(net, &err) != 0)
      fprintf(stderr, "net-plumb: teardown: %s\n", oakuk_error_message(err));
    oakuk_net_unref(net);
  }
  oakuk_error_free(err);
  /* Leftovers of a failed run: reference instance namespaces, then both hosts. */
  for (int i = 0; rc != 0 && i < n; i++) {
    char ns[64], p[96];
    g_snprintf(ns, sizeof ns, "%s-i%d", host_ref, i);
    g_snprintf(p, sizeof p, "/run/netns/%s", ns);
    if (access(p, F_OK) == 0)
      cmd("ip", "netns", "del", ns, NULL);
  }
  cmd("ip", "netns", "del", host_ours, NULL);
  cmd("ip", "netns", "del", host_ref, NULL);
  g_free(su);
  g_free(sr);
  g_free(tu);
  g_free(tr);
  return rc;
}
