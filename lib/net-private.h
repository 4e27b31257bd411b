/* Internals of the net module: pure helpers (unit-tested) and the kernel layer that runs on the
 * plumbing thread. Not installed, not exported. */
#ifndef OAKUK_NET_PRIVATE_H
#define OAKUK_NET_PRIVATE_H

#include "oakuk-private.h"

#include <json-glib/json-glib.h>
#include <netlink/netlink.h>

G_BEGIN_DECLS

/* ---- pure helpers (net-util.c) ---- */
/* IPv4 addresses are host-order guint32. */
gboolean oakuk_net_parse_ip(const char *s, guint32 *out);
/* "a.b.c.d/n" with no host bits set; field names the option in the error. */
gboolean oakuk_net_parse_cidr(const char *s, const char *field, guint32 *net, guint *prefix, GError **error);
char *oakuk_net_ip_str(guint32 ip);
gboolean oakuk_net_in_cidr(guint32 ip, guint32 net, guint prefix);
/* "HOST:GUEST[/tcp|/udp]"; proto is "tcp" or "udp" (static). */
gboolean oakuk_net_parse_port_spec(const char *spec, guint *host, guint *guest, const char **proto,
                                   GError **error);
/* "oakuk-" + 6 hex digits of SHA-256(name). */
char *oakuk_net_host_ifname(const char *name);
/* eth0's MAC (02:6f:6b:…), from SHA-256(name). */
char *oakuk_net_eth_mac(const char *name);
/* The NAT layout's guest and gateway (virbr0) MACs: the same in every instance namespace, as
 * the guest's address is, so one saved guest (snapshot start) finds its ARP cache right wherever
 * it is restored. */
#define OAKUK_NET_NAT_GUEST_MAC "52:54:00:c0:a8:02"
#define OAKUK_NET_NAT_GATEWAY_MAC                                                                            \
  { 0x0e, 0x6e, 0xc0, 0xa8, 0x01, 0x01 }
/* oakuk-vx's MAC from the node's underlay IP: 0e:6b:a:b:c:d, so peers can derive it. */
void oakuk_net_vx_mac(guint32 underlay, guint8 mac[6]);
/* The node bridge's MAC from the node subnet: 0e:62:a:b:c:d. Set explicitly, it no longer follows
 * the lowest MAC among the bridge's ports, which changed (and broke every instance's cached
 * gateway MAC) whenever an instance's veth came or went. */
void oakuk_net_bridge_mac(guint32 subnet, guint8 mac[6]);
gboolean oakuk_net_vx_mac_to_ip(const guint8 mac[6], guint32 *underlay);
/* Instance names become /run/netns/<name> and nftables comments: 1..100 chars of
 * [A-Za-z0-9._-], not starting with '.'. */
gboolean oakuk_net_check_instance_name(const char *name, GError **error);
/* Host veth alias "oakuk:<mode>:<ip>:<name>" and its parser. */
char *oakuk_net_alias_format(gint mode, guint32 ip, const char *name);
gboolean oakuk_net_alias_parse(const char *alias, gint *mode, guint32 *ip, char **name);
const char *oakuk_net_mode_name(gint mode);
/* nftables chain name of a service IP: "svc_10_30_0_1". */
char *oakuk_net_service_chain(guint32 ip);

/* ---- kernel layer (net-kernel.c); runs on a thread that may setns() ---- */
#define OAKUK_NET_TAP "tap0"
#define OAKUK_NET_ETH "eth0"
#define OAKUK_NET_VX "oakuk-vx"
#define OAKUK_NET_NAT_BRIDGE "virbr0"
#define OAKUK_NET_NETNS_DIR "/run/netns"

/* Sets error from a libnl code (negative NLE_*) or a negative errno (is_errno). Returns FALSE. */
gboolean oakuk_net_fail_nl(GError **error, int nlerr, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
gboolean oakuk_net_fail_errno(GError **error, int errnum, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

/* errno recorded by the last oakuk_net_fail_* on this thread; resets it. */
int oakuk_net_take_errno(void);

gboolean oakuk_net_enter_ns(int fd, const char *what, GError **error);
struct nl_sock *oakuk_net_nl_open(GError **error);
/* Creates /run/netns/<name> bound to a fresh namespace, runs inside() while the thread is in it,
 * returns to host_fd and hands back an fd of the new namespace. Removes it again on failure. */
typedef gboolean (*OakukNetInside)(gpointer data, GError **error);
gboolean oakuk_net_ns_create(const char *name, int host_fd, OakukNetInside inside, gpointer data, int *ns_fd,
                             GError **error);
/* Unmounts and unlinks /run/netns/<name>; TRUE when it did not exist. */
gboolean oakuk_net_ns_delete(const char *name, GError **error);
int oakuk_net_ns_open(const char *name);
gboolean oakuk_net_sysctl(const char *path, const char *value, GError **error);

int oakuk_net_ifindex(struct nl_sock *sk, const char *name);
struct rtnl_link;
/* Applies change (an rtnl_link with only what changes set; taken) to link ifindex: the netlink
 * result, < 0 on failure. */
int oakuk_net_link_change(struct nl_sock *sk, int ifindex, struct rtnl_link *change);
gboolean oakuk_net_link_up(struct nl_sock *sk, int ifindex, const char *alias, int master, GError **error);
gboolean oakuk_net_link_set_mac(struct nl_sock *sk, int ifindex, const guint8 mac[6], GError **error);
/* IFLA_IFALIAS of link name, NULL when it has none or does not exist. */
char *oakuk_net_link_alias(struct nl_sock *sk, const char *name);
gboolean oakuk_net_link_set_alias(struct nl_sock *sk, const char *name, const char *alias, GError **error);
gboolean oakuk_net_link_del(struct nl_sock *sk, const char *name, GError **error);
gboolean oakuk_net_bridge_add(struct nl_sock *sk, const char *name, GError **error);
gboolean oakuk_net_veth_add(struct nl_sock *sk, const char *host, int master, const char *alias,
                            const char *peer, const char *peer_mac, int peer_ns_fd, const char *ns_name,
                            GError **error);
gboolean oakuk_net_vxlan_add(struct nl_sock *sk, guint32 vni, guint32 port, guint32 local, GError **error);
gboolean oakuk_net_addr_add(struct nl_sock *sk, int ifindex, guint32 ip, guint prefix, const char *ifname,
                            GError **error);
/* dst/prefix 0/0 is the default route; gw 0 means a link route; onlink for gateways outside
 * every local subnet. */
gboolean oakuk_net_route_add(struct nl_sock *sk, guint32 dst, guint prefix, guint32 gw, int ifindex,
                             gboolean onlink, GError **error);
gboolean oakuk_net_route_del(struct nl_sock *sk, guint32 dst, guint prefix, int ifindex, GError **error);
gboolean oakuk_net_neigh_set(struct nl_sock *sk, int ifindex, guint32 ip, const guint8 mac[6], gboolean add,
                             GError **error);
gboolean oakuk_net_fdb_set(struct nl_sock *sk, int ifindex, const guint8 mac[6], guint32 dst, gboolean add,
                           GError **error);
/* Creates a persistent tap in the current namespace, brings it up and returns its ifindex. */
int oakuk_net_tap_create(const char *name, GError **error);
/* ingress qdisc on from + u32 match-all filter with mirred egress redirect to `to`. */
gboolean oakuk_net_redirect(struct nl_sock *sk, int from, int to, const char *what, GError **error);

/* ---- nftables over netlink (net-nft.c): the table "ip oakuk" in the current namespace ---- */
/* One transaction: what is added to it is applied by oakuk_nft_commit, all or nothing. */
typedef struct OakukNft OakukNft;
OakukNft *oakuk_nft_new(void);
void oakuk_nft_free(OakukNft *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(OakukNft, oakuk_nft_free)
gboolean oakuk_nft_commit(OakukNft *t, GError **error);
void oakuk_nft_add_table(OakukNft *t);
void oakuk_nft_delete_table(OakukNft *t);
/* A base chain of type nat with policy accept. */
void oakuk_nft_add_nat_chain(OakukNft *t, const char *name, int hook, int prio);
void oakuk_nft_add_chain(OakukNft *t, const char *name);
void oakuk_nft_flush_chain(OakukNft *t, const char *name);
void oakuk_nft_delete_chain(OakukNft *t, const char *name);
/* map ports { inet_proto . inet_service : ipv4_addr . inet_service } and
 * map services { ipv4_addr : verdict } */
void oakuk_nft_add_maps(OakukNft *t);
void oakuk_nft_port_add(OakukNft *t, gboolean udp, guint host, const char *comment, guint32 ip, guint guest);
void oakuk_nft_port_delete(OakukNft *t, gboolean udp, guint host);
void oakuk_nft_service_add(OakukNft *t, guint32 ip, const char *chain); /* ip : jump chain */
void oakuk_nft_service_delete(OakukNft *t, guint32 ip);
/* The node's rules in prerouting, output and postrouting (net.c: nft_base). */
void oakuk_nft_node_rules(OakukNft *t, const char *bridge, guint32 subnet, guint subnet_prefix,
                          guint32 overlay, guint overlay_prefix, guint32 service, guint service_prefix);
/* A NAT-mode instance namespace's DNAT of ip to guest and masquerade of guest_net, on eth. */
void oakuk_nft_instance_nat_rules(OakukNft *t, const char *eth, guint32 ip, guint32 guest, guint32 guest_net,
                                  guint guest_prefix);
/* A service chain's rule: round robin over backends, only port (tcp or udp) unless port is 0. */
void oakuk_nft_service_rule(OakukNft *t, const char *chain, guint port, const guint32 *backends, guint n);
/* Reading: whether the table exists; the ports map (into "tcp/8080" -> Port); the service IPs of
 * the services map; a service chain's port and backends (in round-robin order). */
gboolean oakuk_nft_has_table(void);
void oakuk_nft_scan_ports(GHashTable *ports);
void oakuk_nft_scan_services(GPtrArray *ips);
gboolean oakuk_nft_scan_service_chain(const char *chain, guint *port, GPtrArray *backends);

/* ---- shared by net.c (object, jobs, operations) and net-state.c (reading the kernel) ---- */
typedef struct {
  char *name;
  guint32 ip;
  gint mode;
} OakukNetInst;

typedef struct {
  char *instance;
  const char *proto;
  guint host, guest;
  guint32 ip;
} OakukNetPort;

/* A peer node: routes over oakuk-vx via its bridge address gw, reached at underlay. */
typedef struct {
  guint32 underlay, subnet, gw;
  guint prefix;
} OakukNetPeer;

struct oakuk_net {
  gint refcount;
  /* options, immutable after new() */
  char *bridge, *netns_label;
  guint32 subnet, overlay, service, underlay;
  guint subnet_prefix, overlay_prefix, service_prefix;
  guint32 vni, vport;
  int host_fd;
  GThread *thread;
  GAsyncQueue *queue;
  /* owned by the plumbing thread */
  struct nl_sock *sk;
  GHashTable *instances; /* name -> OakukNetInst */
  GHashTable *ports;     /* "tcp/8080" -> OakukNetPort */
  gboolean loaded;
};

void oakuk_net_inst_free(gpointer p);
void oakuk_net_port_free(gpointer p);
/* What the kernel holds, on the plumbing thread. */
GHashTable *oakuk_net_scan_instances(oakuk_net *net, GError **error); /* name -> OakukNetInst */
GHashTable *oakuk_net_scan_ports(oakuk_net *net);                     /* "tcp/8080" -> OakukNetPort */
GPtrArray *oakuk_net_scan_services(oakuk_net *net);                   /* service IPs */
GPtrArray *oakuk_net_scan_netns(oakuk_net *net);                      /* our /run/netns names */
gboolean oakuk_net_netns_is_ours(oakuk_net *net, const char *name);
GArray *oakuk_net_scan_peers(oakuk_net *net, int vx);  /* OakukNetPeer */
GPtrArray *oakuk_net_scan_fdb(oakuk_net *net, int vx); /* underlay IPs */
/* The document oakuk_net_list returns. */
char *oakuk_net_state_json(oakuk_net *net, GError **error);

G_END_DECLS

#endif
