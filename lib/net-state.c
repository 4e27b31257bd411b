/* Reading what exists in the kernel with our naming: instances (host veth aliases), namespaces
 * (lo's label), nftables maps and chains, VXLAN peers and FDB entries; and the listing built from
 * them. Runs on the plumbing thread. */
#include "net-private.h"

#include <errno.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <netlink/route/link.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

typedef OakukNetInst Inst;
typedef OakukNetPort Port;
typedef OakukNetPeer Peer;

void oakuk_net_inst_free(gpointer p) {
  Inst *i = p;
  g_free(i->name);
  g_free(i);
}

void oakuk_net_port_free(gpointer p) {
  Port *x = p;
  g_free(x->instance);
  g_free(x);
}

GHashTable *oakuk_net_scan_ports(oakuk_net *net) {
  GHashTable *ports = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, oakuk_net_port_free);
  oakuk_nft_scan_ports(ports);
  return ports;
}

GHashTable *oakuk_net_scan_instances(oakuk_net *net, GError **error) {
  struct nl_cache *cache = NULL;
  int r = rtnl_link_alloc_cache(net->sk, AF_UNSPEC, &cache);
  if (r < 0) {
    oakuk_net_fail_nl(error, r, "list links");
    return NULL;
  }
  GHashTable *out = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, oakuk_net_inst_free);
  for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o)) {
    struct rtnl_link *l = (struct rtnl_link *)o;
    Inst inst = {0};
    const char *name = rtnl_link_get_name(l);
    if (!g_str_has_prefix(name, "oakuk-") ||
        !oakuk_net_alias_parse(rtnl_link_get_ifalias(l), &inst.mode, &inst.ip, &inst.name))
      continue;
    g_autofree char *expect = oakuk_net_host_ifname(inst.name);
    if (g_strcmp0(expect, name) != 0 || !oakuk_net_in_cidr(inst.ip, net->subnet, net->subnet_prefix)) {
      g_free(inst.name);
      continue;
    }
    g_hash_table_replace(out, inst.name, g_memdup2(&inst, sizeof inst));
  }
  nl_cache_free(cache);
  return out;
}

/* Whether /run/netns/<name> is an instance namespace of this node: its lo carries our label. */
gboolean oakuk_net_netns_is_ours(oakuk_net *net, const char *name) {
  int fd = oakuk_net_ns_open(name);
  if (fd < 0)
    return FALSE;
  gboolean ours = FALSE;
  if (setns(fd, CLONE_NEWNET) == 0) {
    struct nl_sock *sk = oakuk_net_nl_open(NULL);
    struct rtnl_link *l = NULL;
    if (sk && rtnl_link_get_kernel(sk, 1, NULL, &l) == 0) {
      ours = g_strcmp0(rtnl_link_get_ifalias(l), net->netns_label) == 0;
      rtnl_link_put(l);
    }
    if (sk)
      nl_socket_free(sk);
    if (setns(net->host_fd, CLONE_NEWNET) < 0)
      g_error("net: cannot return to the node namespace: %s", g_strerror(errno));
  }
  close(fd);
  return ours;
}

GPtrArray *oakuk_net_scan_netns(oakuk_net *net) {
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GDir) dir = g_dir_open(OAKUK_NET_NETNS_DIR, 0, NULL);
  for (const char *n; dir && (n = g_dir_read_name(dir)) != NULL;)
    if (oakuk_net_netns_is_ours(net, n))
      g_ptr_array_add(names, g_strdup(n));
  return names;
}

static guint32 addr_ip(struct nl_addr *a) {
  guint32 be = 0;
  if (a && nl_addr_get_family(a) == AF_INET && nl_addr_get_len(a) == 4)
    memcpy(&be, nl_addr_get_binary_addr(a), 4);
  return ntohl(be);
}

/* Peers are routes over oakuk-vx whose gateway's neighbour MAC encodes the peer's underlay IP. */
GArray *oakuk_net_scan_peers(oakuk_net *net, int vx) {
  GArray *out = g_array_new(FALSE, TRUE, sizeof(Peer));
  struct nl_cache *routes = NULL, *neigh = NULL;
  if (vx <= 0 || rtnl_route_alloc_cache(net->sk, AF_INET, 0, &routes) < 0)
    return out;
  if (rtnl_neigh_alloc_cache(net->sk, &neigh) < 0) {
    nl_cache_free(routes);
    return out;
  }
  for (struct nl_object *o = nl_cache_get_first(routes); o; o = nl_cache_get_next(o)) {
    struct rtnl_route *r = (struct rtnl_route *)o;
    if (rtnl_route_get_table(r) != RT_TABLE_MAIN || rtnl_route_get_nnexthops(r) != 1)
      continue;
    struct rtnl_nexthop *nh = rtnl_route_nexthop_n(r, 0);
    struct nl_addr *gwa = rtnl_route_nh_get_gateway(nh);
    if (rtnl_route_nh_get_ifindex(nh) != vx || gwa == NULL)
      continue;
    Peer p = {0, addr_ip(rtnl_route_get_dst(r)), addr_ip(gwa),
              (guint)nl_addr_get_prefixlen(rtnl_route_get_dst(r))};
    struct rtnl_neigh *n = rtnl_neigh_get(neigh, vx, gwa);
    struct nl_addr *ll = n ? rtnl_neigh_get_lladdr(n) : NULL;
    if (ll && nl_addr_get_len(ll) == 6)
      oakuk_net_vx_mac_to_ip(nl_addr_get_binary_addr(ll), &p.underlay);
    if (n)
      rtnl_neigh_put(n);
    g_array_append_val(out, p);
  }
  nl_cache_free(routes);
  nl_cache_free(neigh);
  return out;
}

/* Underlay IPs of the FDB entries on oakuk-vx (an AF_BRIDGE dump: AF_UNSPEC lists ARP only). */
GPtrArray *oakuk_net_scan_fdb(oakuk_net *net, int vx) {
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  struct nl_cache *neigh = NULL;
  struct ndmsg ndm = {.ndm_family = AF_BRIDGE};
  if (vx <= 0 || nl_cache_alloc_name("route/neigh", &neigh) < 0)
    return out;
  if (nl_send_simple(net->sk, RTM_GETNEIGH, NLM_F_DUMP, &ndm, sizeof ndm) >= 0 &&
      nl_cache_pickup(net->sk, neigh) >= 0) {
    for (struct nl_object *o = nl_cache_get_first(neigh); o; o = nl_cache_get_next(o)) {
      struct rtnl_neigh *n = (struct rtnl_neigh *)o;
      if (rtnl_neigh_get_family(n) == AF_BRIDGE && rtnl_neigh_get_ifindex(n) == vx && rtnl_neigh_get_dst(n))
        g_ptr_array_add(out, oakuk_net_ip_str(addr_ip(rtnl_neigh_get_dst(n))));
    }
  }
  nl_cache_free(neigh);
  return out;
}

GPtrArray *oakuk_net_scan_services(oakuk_net *net) {
  GPtrArray *ips = g_ptr_array_new_with_free_func(g_free);
  oakuk_nft_scan_services(ips);
  return ips;
}

static void list_services(oakuk_net *net, JsonBuilder *b) {
  g_autoptr(GPtrArray) ips = oakuk_net_scan_services(net);
  json_builder_set_member_name(b, "services");
  json_builder_begin_array(b);
  for (guint i = 0; i < ips->len; i++) {
    guint32 rr;
    if (!oakuk_net_parse_ip(ips->pdata[i], &rr))
      continue;
    g_autofree char *chain = oakuk_net_service_chain(rr);
    g_autoptr(GPtrArray) backends = g_ptr_array_new_with_free_func(g_free);
    guint port = 0;
    oakuk_nft_scan_service_chain(chain, &port, backends);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "ip");
    json_builder_add_string_value(b, ips->pdata[i]);
    json_builder_set_member_name(b, "backends");
    json_builder_begin_array(b);
    for (guint k = 0; k < backends->len; k++)
      if (backends->pdata[k] != NULL)
        json_builder_add_string_value(b, backends->pdata[k]);
    json_builder_end_array(b);
    json_builder_set_member_name(b, "port");
    json_builder_add_int_value(b, port);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
}

static void list_instances(oakuk_net *net, JsonBuilder *b, GHashTable *inst) {
  json_builder_set_member_name(b, "instances");
  json_builder_begin_array(b);
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, inst);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    Inst *i = v;
    g_autofree char *ip = oakuk_net_ip_str(i->ip);
    g_autofree char *host = oakuk_net_host_ifname(i->name);
    g_autofree char *path = g_build_filename(OAKUK_NET_NETNS_DIR, i->name, NULL);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, i->name);
    json_builder_set_member_name(b, "ip");
    json_builder_add_string_value(b, ip);
    json_builder_set_member_name(b, "mode");
    json_builder_add_string_value(b, oakuk_net_mode_name(i->mode));
    json_builder_set_member_name(b, "host_ifname");
    json_builder_add_string_value(b, host);
    json_builder_set_member_name(b, "netns");
    json_builder_add_boolean_value(b, g_file_test(path, G_FILE_TEST_EXISTS));
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  (void)net;
}

static void list_ports(JsonBuilder *b, GHashTable *ports) {
  json_builder_set_member_name(b, "ports");
  json_builder_begin_array(b);
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, ports);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    Port *p = v;
    g_autofree char *ip = oakuk_net_ip_str(p->ip);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "instance");
    json_builder_add_string_value(b, p->instance);
    json_builder_set_member_name(b, "proto");
    json_builder_add_string_value(b, p->proto);
    json_builder_set_member_name(b, "host");
    json_builder_add_int_value(b, p->host);
    json_builder_set_member_name(b, "ip");
    json_builder_add_string_value(b, ip);
    json_builder_set_member_name(b, "guest");
    json_builder_add_int_value(b, p->guest);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
}

static void add_strings(JsonBuilder *b, const char *member, GPtrArray *a) {
  json_builder_set_member_name(b, member);
  json_builder_begin_array(b);
  for (guint i = 0; i < a->len; i++)
    json_builder_add_string_value(b, a->pdata[i]);
  json_builder_end_array(b);
}

char *oakuk_net_state_json(oakuk_net *net, GError **error) {
  g_autoptr(GHashTable) inst = oakuk_net_scan_instances(net, error);
  if (inst == NULL)
    return NULL;
  g_autoptr(GHashTable) ports = oakuk_net_scan_ports(net);
  g_autoptr(GPtrArray) spaces = oakuk_net_scan_netns(net);
  int vx = oakuk_net_ifindex(net->sk, OAKUK_NET_VX);
  g_autoptr(GArray) peers = oakuk_net_scan_peers(net, vx);
  g_autoptr(GPtrArray) fdb = oakuk_net_scan_fdb(net, vx);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "bridge");
  json_builder_add_boolean_value(b, oakuk_net_ifindex(net->sk, net->bridge) > 0);
  json_builder_set_member_name(b, "vxlan");
  json_builder_add_boolean_value(b, vx > 0);
  json_builder_set_member_name(b, "table");
  json_builder_add_boolean_value(b, oakuk_nft_has_table());
  list_instances(net, b, inst);
  add_strings(b, "netns", spaces);
  list_ports(b, ports);
  list_services(net, b);
  json_builder_set_member_name(b, "peers");
  json_builder_begin_array(b);
  for (guint i = 0; i < peers->len; i++) {
    Peer *p = &g_array_index(peers, Peer, i);
    g_autofree char *u = oakuk_net_ip_str(p->underlay);
    g_autofree char *sn = oakuk_net_ip_str(p->subnet);
    g_autofree char *cidr = g_strdup_printf("%s/%u", sn, p->prefix);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "underlay");
    json_builder_add_string_value(b, u);
    json_builder_set_member_name(b, "subnet");
    json_builder_add_string_value(b, cidr);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  add_strings(b, "fdb", fdb);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  return oakuk_json_node_to_string(root, FALSE);
}
