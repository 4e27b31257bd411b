#ifndef OAKUK_NET_H
#define OAKUK_NET_H

#include <oakuk/error.h>

OAKUK_BEGIN_DECLS

/* The node's network plumber (docs/architecture.md §12): bridge, per-instance netns/veth/tap, port mappings,
 * service IPs and VXLAN peers, made with netlink (libnl-route-3, and libnftnl for nftables) and
 * TUNSETIFF (no ip/iptables/nft processes). All kernel work runs on a thread the oakuk_net object
 * owns; the synchronous calls block until it is done, the _async ones call back on the caller's
 * thread-default GMainContext. */

typedef struct oakuk_net oakuk_net;
typedef struct oakuk_net_instance_info oakuk_net_instance_info;

typedef struct oakuk_net_options {
  unsigned int version;     /* OAKUK_NET_OPTIONS_VERSION */
  const char *bridge;       /* node bridge, default "oakuk0" (≤ 15 chars) */
  const char *node_subnet;  /* this node's instance subnet, e.g. "10.18.3.0/24" (required) */
  const char *overlay_cidr; /* all nodes' subnets, default "10.18.0.0/15"; not masqueraded */
  const char *service_cidr; /* service IPs, default "10.30.0.0/16" */
  const char *underlay_ip;  /* local VXLAN endpoint; NULL: no oakuk-vx device */
  uint32_t vxlan_id;        /* default 4242 */
  uint32_t vxlan_port;      /* default 4789 */
  const char *netns_path;   /* network namespace the node lives in (e.g. /run/netns/host-a);
                               NULL: the process's namespace when oakuk_net_new runs */
} oakuk_net_options;

#define OAKUK_NET_OPTIONS_VERSION 1
#define OAKUK_NET_OPTIONS_INIT                                                                               \
  { OAKUK_NET_OPTIONS_VERSION, "oakuk0", NULL, "10.18.0.0/15", "10.30.0.0/16", NULL, 4242, 4789, NULL }
/* Fills opts with defaults; returns OAKUK_EINVAL for an unknown version. */
OAKUK_API int oakuk_net_options_init(oakuk_net_options *opts, unsigned int version);

/* Instance network modes. */
#define OAKUK_NET_CONTAINER 0 /* eth0 carries the instance IP; runc joins the netns */
#define OAKUK_NET_UK_DIRECT 1 /* tap0 and eth0 joined by tc mirred; the guest owns eth0's IP+MAC */
#define OAKUK_NET_UK_NAT 2    /* virbr0 192.168.1.1/30 + tap0, guest 192.168.1.2, DNAT/SNAT */

/* Validates the options and starts the plumbing thread; touches nothing in the kernel yet. */
OAKUK_API oakuk_net *oakuk_net_new(const oakuk_net_options *opts, oakuk_error **error);
OAKUK_API oakuk_net *oakuk_net_ref(oakuk_net *net);
OAKUK_API void oakuk_net_unref(oakuk_net *net);

typedef void (*oakuk_net_callback)(int status, oakuk_error *error, void *user_data);
/* info and error are borrowed for the duration of the callback (ref info to keep it). */
typedef void (*oakuk_net_instance_callback)(int status, oakuk_net_instance_info *info, oakuk_error *error,
                                            void *user_data);

/* Bridge with the subnet's first address, forwarding, route_localnet, service route, nftables
 * table "oakuk" (NAT, port and service maps), oakuk-vx when underlay_ip is set. Idempotent; adopts
 * instances, port mappings, services and peers that already exist. */
OAKUK_API int oakuk_net_setup_node(oakuk_net *net, oakuk_error **error);
OAKUK_API void oakuk_net_setup_node_async(oakuk_net *net, oakuk_net_callback cb, void *user_data);
/* Removes every instance, the table, oakuk-vx and the bridge. */
OAKUK_API int oakuk_net_teardown_node(oakuk_net *net, oakuk_error **error);

/* Creates (or adopts, when it exists with the same mode and IP) netns /run/netns/<name>, the veth
 * pair and, for unikernels, tap0. ip NULL allocates the next free address of the subnet.
 * mode is one of OAKUK_NET_*. *out may be NULL. */
OAKUK_API int oakuk_net_instance_setup(oakuk_net *net, const char *name, const char *ip, int32_t mode,
                                       oakuk_net_instance_info **out, oakuk_error **error);
OAKUK_API void oakuk_net_instance_setup_async(oakuk_net *net, const char *name, const char *ip, int32_t mode,
                                              oakuk_net_instance_callback cb, void *user_data);
/* Removes the netns, veth, tap and the instance's port mappings; succeeds when nothing exists. */
OAKUK_API int oakuk_net_instance_teardown(oakuk_net *net, const char *name, oakuk_error **error);
OAKUK_API void oakuk_net_instance_teardown_async(oakuk_net *net, const char *name, oakuk_net_callback cb,
                                                 void *user_data);

OAKUK_API oakuk_net_instance_info *oakuk_net_instance_info_ref(oakuk_net_instance_info *info);
OAKUK_API void oakuk_net_instance_info_unref(oakuk_net_instance_info *info);
OAKUK_API const char *oakuk_net_instance_info_name(const oakuk_net_instance_info *info);
OAKUK_API int32_t oakuk_net_instance_info_mode(const oakuk_net_instance_info *info);
/* "/run/netns/<name>" */
OAKUK_API const char *oakuk_net_instance_info_netns_path(const oakuk_net_instance_info *info);
/* Host end of the veth pair, "oakuk-xxxxxx". */
OAKUK_API const char *oakuk_net_instance_info_host_ifname(const oakuk_net_instance_info *info);
/* The instance IP (what other instances connect to). */
OAKUK_API const char *oakuk_net_instance_info_ip(const oakuk_net_instance_info *info);
/* "tap0" for unikernels, NULL for containers. */
OAKUK_API const char *oakuk_net_instance_info_tap(const oakuk_net_instance_info *info);
/* What the guest configures: IP, prefix length, gateway, MAC (for containers: eth0's). */
OAKUK_API const char *oakuk_net_instance_info_guest_ip(const oakuk_net_instance_info *info);
OAKUK_API uint32_t oakuk_net_instance_info_guest_prefix(const oakuk_net_instance_info *info);
OAKUK_API const char *oakuk_net_instance_info_guest_gateway(const oakuk_net_instance_info *info);
OAKUK_API const char *oakuk_net_instance_info_guest_mac(const oakuk_net_instance_info *info);

/* "HOST:GUEST[/tcp|/udp]" (tcp by default) to the instance's IP; a host port+proto mapped by any
 * instance is OAKUK_EEXISTS naming both owners. Reachable from other hosts, the node IP and
 * 127.0.0.1. */
OAKUK_API int oakuk_net_port_map_add(oakuk_net *net, const char *instance, const char *spec,
                                     oakuk_error **error);
/* Removes a mapping owned by instance (guest part of spec is ignored); OAKUK_ENOTFOUND if absent. */
OAKUK_API int oakuk_net_port_map_remove(oakuk_net *net, const char *instance, const char *spec,
                                        oakuk_error **error);

/* Service IP rr_ip (inside service_cidr): new connections (tcp/udp to port, or any port when 0)
 * are spread over backend IPs with numgen. Replaces the previous set atomically; n == 0 removes.
 * At most OAKUK_NET_MAX_BACKENDS backends (one nftables transaction holds them). */
#define OAKUK_NET_MAX_BACKENDS 1024
OAKUK_API int oakuk_net_service_set(oakuk_net *net, const char *rr_ip, uint32_t port,
                                    const char *const *backends, size_t n, oakuk_error **error);
OAKUK_API void oakuk_net_service_set_async(oakuk_net *net, const char *rr_ip, uint32_t port,
                                           const char *const *backends, size_t n, oakuk_net_callback cb,
                                           void *user_data);
OAKUK_API int oakuk_net_service_remove(oakuk_net *net, const char *rr_ip, oakuk_error **error);

/* A peer node: FDB (00:00:00:00:00:00 and its oakuk-vx MAC → underlay_ip), neighbour and an onlink
 * route of node_subnet via the peer bridge address over oakuk-vx. Needs underlay_ip set. */
OAKUK_API int oakuk_net_peer_add(oakuk_net *net, const char *underlay_ip, const char *node_subnet,
                                 oakuk_error **error);
OAKUK_API void oakuk_net_peer_add_async(oakuk_net *net, const char *underlay_ip, const char *node_subnet,
                                        oakuk_net_callback cb, void *user_data);
/* node_subnet may be NULL (found from the route). Succeeds when the peer is unknown. */
OAKUK_API int oakuk_net_peer_remove(oakuk_net *net, const char *underlay_ip, const char *node_subnet,
                                    oakuk_error **error);

/* Removes every instance (netns, veth, port mappings), service and peer of ours that is not in
 * the keep lists (instance names, service IPs, peer underlay IPs). */
OAKUK_API int oakuk_net_reconcile(oakuk_net *net, const char *const *instances, size_t n_instances,
                                  const char *const *services, size_t n_services, const char *const *peers,
                                  size_t n_peers, oakuk_error **error);
OAKUK_API void oakuk_net_reconcile_async(oakuk_net *net, const char *const *instances, size_t n_instances,
                                         const char *const *services, size_t n_services,
                                         const char *const *peers, size_t n_peers, oakuk_net_callback cb,
                                         void *user_data);

/* What exists in the kernel with our naming, as JSON (free with oakuk_free):
 * {"bridge":bool,"vxlan":bool,"table":bool,
 *  "instances":[{"name","ip","mode","host_ifname","netns":bool}],
 *  "netns":[names of /run/netns entries made by this node],
 *  "ports":[{"instance","proto","host","ip","guest"}],
 *  "services":[{"ip","port","backends":[...]}], "peers":[{"underlay","subnet"}],
 *  "fdb":[underlay IPs]} */
OAKUK_API char *oakuk_net_list(oakuk_net *net, oakuk_error **error);

OAKUK_END_DECLS

#endif
