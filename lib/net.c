/* The net module: node bridge, instance namespaces, port mappings, service IPs and VXLAN peers.
 * Public calls validate their input on the caller's thread, then hand a job to the plumbing
 * thread the object owns (it setns()-es freely; the caller's threads never do). */
#include "net-private.h"

#include <errno.h>
#include <fcntl.h>
#include <json-glib/json-glib.h>
#include <linux/neighbour.h>
#include <linux/netfilter.h>
#include <linux/netfilter_ipv4.h>
#include <linux/rtnetlink.h>
#include <netlink/route/link.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>
#include <sched.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NAT_BRIDGE_IP 0xc0a80101u /* 192.168.1.1 */
#define NAT_GUEST_IP 0xc0a80102u  /* 192.168.1.2 */

typedef OakukNetInst Inst;
typedef OakukNetPort Port;
typedef OakukNetPeer Peer;

struct oakuk_net_instance_info {
  gint refcount;
  gint mode;
  guint32 guest_prefix;
  char *name, *netns_path, *host_ifname, *ip, *tap, *guest_ip, *guest_gateway, *guest_mac;
};

/* ---------------------------------------------------------------- jobs */

typedef struct Job Job;
typedef gboolean (*JobFn)(oakuk_net *net, Job *job, GError **error);

struct Job {
  JobFn fn;
  char *name, *ip, *spec, *subnet;
  gint mode;
  guint port;
  GPtrArray *list[3];
  oakuk_net_instance_info *info; /* out */
  char *json;                    /* out */
  /* completion */
  gboolean done;
  GMutex lock;
  GCond cond;
  GError *error;
  int errnum;
  GTask *task;
  oakuk_net_callback cb;
  oakuk_net_instance_callback icb;
  void *user_data;
};

static void job_free(Job *job) {
  g_free(job->name);
  g_free(job->ip);
  g_free(job->spec);
  g_free(job->subnet);
  for (int i = 0; i < 3; i++)
    if (job->list[i])
      g_ptr_array_unref(job->list[i]);
  if (job->info)
    oakuk_net_instance_info_unref(job->info);
  g_free(job->json);
  g_clear_error(&job->error);
  g_mutex_clear(&job->lock);
  g_cond_clear(&job->cond);
  g_free(job);
}

static Job *job_new(JobFn fn) {
  Job *job = g_new0(Job, 1);
  job->fn = fn;
  g_mutex_init(&job->lock);
  g_cond_init(&job->cond);
  return job;
}

static GPtrArray *strv_copy(const char *const *v, size_t n) {
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  for (size_t i = 0; i < n; i++)
    g_ptr_array_add(a, g_strdup(v[i]));
  return a;
}

static gboolean in_list(GPtrArray *a, const char *s) {
  for (guint i = 0; a && i < a->len; i++)
    if (g_strcmp0(a->pdata[i], s) == 0)
      return TRUE;
  return FALSE;
}

static int to_oakuk_error(GError *err, int errnum, oakuk_error **error) {
  int code = err->domain == OAKUK_ERROR && err->code > 0 ? -err->code : OAKUK_EGENERIC;
  if (error && *error == NULL)
    *error = oakuk_error_new_literal(code, errnum, NULL, err->message);
  return code;
}

static gpointer worker_main(gpointer data);

static void job_run(oakuk_net *net, Job *job) {
  (void)oakuk_net_take_errno();
  if (!job->fn(net, job, &job->error))
    job->errnum = oakuk_net_take_errno();
  if (job->task) {
    GTask *task = job->task;
    job->task = NULL;
    g_task_return_pointer(task, job, (GDestroyNotify)job_free);
    g_object_unref(task);
    return;
  }
  g_mutex_lock(&job->lock);
  job->done = TRUE;
  g_cond_signal(&job->cond);
  g_mutex_unlock(&job->lock);
}

/* Runs job on the plumbing thread and waits; returns 0 or the error code, frees job. */
static int job_sync(oakuk_net *net, Job *job, oakuk_net_instance_info **info, char **json,
                    oakuk_error **error) {
  g_async_queue_push(net->queue, job);
  g_mutex_lock(&job->lock);
  while (!job->done)
    g_cond_wait(&job->cond, &job->lock);
  g_mutex_unlock(&job->lock);
  int r = 0;
  if (job->error) {
    r = to_oakuk_error(job->error, job->errnum, error);
  } else {
    if (info)
      *info = g_steal_pointer(&job->info);
    if (json)
      *json = g_steal_pointer(&job->json);
  }
  job_free(job);
  return r;
}

static void job_async_done(GObject *src, GAsyncResult *res, gpointer data) {
  Job *job = g_task_propagate_pointer(G_TASK(res), NULL);
  oakuk_error *err = NULL;
  int status = job->error ? to_oakuk_error(job->error, job->errnum, &err) : 0;
  if (job->icb)
    job->icb(status, status == 0 ? job->info : NULL, err, job->user_data);
  else if (job->cb)
    job->cb(status, err, job->user_data);
  oakuk_error_free(err);
  job_free(job);
}

/* Queues job; the callback runs on the caller's thread-default main context. */
static void job_async(oakuk_net *net, Job *job) {
  job->task = g_task_new(NULL, NULL, job_async_done, NULL);
  g_task_set_source_tag(job->task, job_async);
  g_async_queue_push(net->queue, job);
}

/* A job whose input failed validation on the caller's thread: reports job->error. */
static gboolean job_prefailed(oakuk_net *net, Job *job, GError **error) {
  (void)net;
  GError *e = g_steal_pointer(&job->error);
  g_propagate_error(error, e);
  return FALSE;
}

/* ---------------------------------------------------------------- info */

static oakuk_net_instance_info *info_new(oakuk_net *net, const Inst *inst) {
  oakuk_net_instance_info *info = g_new0(oakuk_net_instance_info, 1);
  info->refcount = 1;
  info->mode = inst->mode;
  info->name = g_strdup(inst->name);
  info->netns_path = g_build_filename(OAKUK_NET_NETNS_DIR, inst->name, NULL);
  info->host_ifname = oakuk_net_host_ifname(inst->name);
  info->ip = oakuk_net_ip_str(inst->ip);
  if (inst->mode == OAKUK_NET_UK_NAT) {
    info->tap = g_strdup(OAKUK_NET_TAP);
    info->guest_ip = oakuk_net_ip_str(NAT_GUEST_IP);
    info->guest_prefix = 30;
    info->guest_gateway = oakuk_net_ip_str(NAT_BRIDGE_IP);
    info->guest_mac = g_strdup(OAKUK_NET_NAT_GUEST_MAC);
  } else {
    info->tap = inst->mode == OAKUK_NET_UK_DIRECT ? g_strdup(OAKUK_NET_TAP) : NULL;
    info->guest_ip = oakuk_net_ip_str(inst->ip);
    info->guest_prefix = net->subnet_prefix;
    info->guest_gateway = oakuk_net_ip_str(net->subnet + 1);
    info->guest_mac = oakuk_net_eth_mac(inst->name);
  }
  return info;
}

OAKUK_API oakuk_net_instance_info *oakuk_net_instance_info_ref(oakuk_net_instance_info *info) {
  g_return_val_if_fail(info != NULL, NULL);
  g_atomic_int_inc(&info->refcount);
  return info;
}

OAKUK_API void oakuk_net_instance_info_unref(oakuk_net_instance_info *info) {
  if (info == NULL || !g_atomic_int_dec_and_test(&info->refcount))
    return;
  g_free(info->name);
  g_free(info->netns_path);
  g_free(info->host_ifname);
  g_free(info->ip);
  g_free(info->tap);
  g_free(info->guest_ip);
  g_free(info->guest_gateway);
  g_free(info->guest_mac);
  g_free(info);
}

#define INFO_GETTER(type, field, dflt)                                                                       \
  OAKUK_API type oakuk_net_instance_info_##field(const oakuk_net_instance_info *info) {                      \
    g_return_val_if_fail(info != NULL, dflt);                                                                \
    return info->field;                                                                                      \
  }
INFO_GETTER(const char *, name, NULL)
INFO_GETTER(int32_t, mode, -1)
INFO_GETTER(const char *, netns_path, NULL)
INFO_GETTER(const char *, host_ifname, NULL)
INFO_GETTER(const char *, ip, NULL)
INFO_GETTER(const char *, tap, NULL)
INFO_GETTER(const char *, guest_ip, NULL)
INFO_GETTER(uint32_t, guest_prefix, 0)
INFO_GETTER(const char *, guest_gateway, NULL)
INFO_GETTER(const char *, guest_mac, NULL)

/* ---------------------------------------------------------------- object */

OAKUK_API int oakuk_net_options_init(oakuk_net_options *opts, unsigned int version) {
  g_return_val_if_fail(opts != NULL, OAKUK_EINVAL);
  if (version != OAKUK_NET_OPTIONS_VERSION)
    return OAKUK_EINVAL;
  oakuk_net_options d = OAKUK_NET_OPTIONS_INIT;
  *opts = d;
  return OAKUK_OK;
}

static gboolean check_options(const oakuk_net_options *o, oakuk_net *net, GError **error) {
  const char *bridge = o->bridge ? o->bridge : "oakuk0";
  if (o->version != OAKUK_NET_OPTIONS_VERSION) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "options.version: %u is not %u", o->version,
                OAKUK_NET_OPTIONS_VERSION);
    return FALSE;
  }
  if (bridge[0] == '\0' || strlen(bridge) > 15 || strchr(bridge, '/') || strchr(bridge, ' ')) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "options.bridge: \"%s\" is not a valid interface name",
                bridge);
    return FALSE;
  }
  net->bridge = g_strdup(bridge);
  if (!oakuk_net_parse_cidr(o->node_subnet, "options.node_subnet", &net->subnet, &net->subnet_prefix,
                            error) ||
      !oakuk_net_parse_cidr(o->overlay_cidr ? o->overlay_cidr : "10.18.0.0/15", "options.overlay_cidr",
                            &net->overlay, &net->overlay_prefix, error) ||
      !oakuk_net_parse_cidr(o->service_cidr ? o->service_cidr : "10.30.0.0/16", "options.service_cidr",
                            &net->service, &net->service_prefix, error))
    return FALSE;
  if (net->subnet_prefix > 30 || net->subnet_prefix < 8) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "options.node_subnet: \"%s\" must be /8 to /30",
                o->node_subnet);
    return FALSE;
  }
  if (o->underlay_ip && !oakuk_net_parse_ip(o->underlay_ip, &net->underlay)) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "options.underlay_ip: \"%s\" is not an IPv4 address",
                o->underlay_ip);
    return FALSE;
  }
  if (o->vxlan_id == 0 || o->vxlan_id > 0xffffff || o->vxlan_port == 0 || o->vxlan_port > 65535) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "options.vxlan_id/vxlan_port: %u/%u out of range",
                o->vxlan_id, o->vxlan_port);
    return FALSE;
  }
  net->vni = o->vxlan_id;
  net->vport = o->vxlan_port;
  const char *path = o->netns_path ? o->netns_path : "/proc/thread-self/ns/net";
  net->host_fd = open(path, O_RDONLY | O_CLOEXEC);
  if (net->host_fd < 0)
    return oakuk_net_fail_errno(error, errno, "options.netns_path: open %s", path);
  return TRUE;
}

static void net_free(oakuk_net *net) {
  if (net->thread) {
    g_async_queue_push(net->queue, job_new(NULL));
    g_thread_join(net->thread);
  }
  if (net->queue)
    g_async_queue_unref(net->queue);
  if (net->host_fd >= 0)
    close(net->host_fd);
  g_free(net->bridge);
  g_free(net->netns_label);
  g_free(net);
}

OAKUK_API oakuk_net *oakuk_net_new(const oakuk_net_options *opts, oakuk_error **error) {
  g_return_val_if_fail(opts != NULL, NULL);
  GError *err = NULL;
  oakuk_net *net = g_new0(oakuk_net, 1);
  net->refcount = 1;
  net->host_fd = -1;
  (void)oakuk_net_take_errno();
  if (!check_options(opts, net, &err)) {
    to_oakuk_error(err, oakuk_net_take_errno(), error);
    g_error_free(err);
    net_free(net);
    return NULL;
  }
  g_autofree char *sub = oakuk_net_ip_str(net->subnet);
  /* Marks our instance namespaces (lo's alias). The node namespace's inode is part of it: other
   * nodes on this machine (tests, or several nodes in namespaces) may use the same subnet. */
  struct stat st;
  net->netns_label = g_strdup_printf("oakuk:%s/%u:%llu", sub, net->subnet_prefix,
                                     fstat(net->host_fd, &st) == 0 ? (unsigned long long)st.st_ino : 0ull);
  net->queue = g_async_queue_new();
  /* The thread reports its start-up (entering the node namespace) through the first job. */
  Job *start = job_new(NULL);
  g_async_queue_push(net->queue, start);
  net->thread = g_thread_new("oakuk-net", worker_main, net);
  g_mutex_lock(&start->lock);
  while (!start->done)
    g_cond_wait(&start->cond, &start->lock);
  g_mutex_unlock(&start->lock);
  if (start->error) {
    to_oakuk_error(start->error, start->errnum, error);
    job_free(start);
    g_thread_join(net->thread);
    net->thread = NULL;
    net_free(net);
    return NULL;
  }
  job_free(start);
  return net;
}

OAKUK_API oakuk_net *oakuk_net_ref(oakuk_net *net) {
  g_return_val_if_fail(net != NULL, NULL);
  g_atomic_int_inc(&net->refcount);
  return net;
}

OAKUK_API void oakuk_net_unref(oakuk_net *net) {
  if (net && g_atomic_int_dec_and_test(&net->refcount))
    net_free(net);
}

static gboolean worker_start(oakuk_net *net, GError **error) {
  if (!oakuk_net_enter_ns(net->host_fd, "of the node", error))
    return FALSE;
  net->sk = oakuk_net_nl_open(error);
  if (net->sk == NULL)
    return FALSE;
  net->instances = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, oakuk_net_inst_free);
  net->ports = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, oakuk_net_port_free);
  return TRUE;
}

static gpointer worker_main(gpointer data) {
  oakuk_net *net = data;
  Job *start = g_async_queue_pop(net->queue);
  gboolean ok = worker_start(net, &start->error);
  if (!ok)
    start->errnum = oakuk_net_take_errno();
  g_mutex_lock(&start->lock);
  start->done = TRUE;
  g_cond_signal(&start->cond);
  g_mutex_unlock(&start->lock);
  for (Job *job; ok && (job = g_async_queue_pop(net->queue)) != NULL;) {
    if (job->fn == NULL) {
      job_free(job);
      break;
    }
    job_run(net, job);
  }
  if (net->sk)
    nl_socket_free(net->sk);
  if (net->instances)
    g_hash_table_unref(net->instances);
  if (net->ports)
    g_hash_table_unref(net->ports);
  return NULL;
}

static gboolean ensure_loaded(oakuk_net *net, GError **error) {
  if (net->loaded)
    return TRUE;
  GHashTable *inst = oakuk_net_scan_instances(net, error);
  if (inst == NULL)
    return FALSE;
  g_hash_table_unref(net->instances);
  net->instances = inst;
  g_hash_table_unref(net->ports);
  net->ports = oakuk_net_scan_ports(net);
  net->loaded = TRUE;
  return TRUE;
}

/* ---------------------------------------------------------------- node */

/* table ip oakuk {
 *   map ports { type inet_proto . inet_service : ipv4_addr . inet_service; }   (kept on re-runs)
 *   map services { type ipv4_addr : verdict; }                                 (kept on re-runs)
 *   chain prerouting { type nat hook prerouting priority dstnat; policy accept;
 *     ip daddr vmap @services
 *     fib daddr type local dnat ip to meta l4proto . th dport map @ports }
 *   chain output { type nat hook output priority -100; policy accept; (the same two rules) }
 *   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
 *     ip saddr 127.0.0.0/8 oifname BRIDGE masquerade
 *     ct status dnat oifname BRIDGE ip saddr SUBNET masquerade
 *     ip saddr SUBNET ip daddr != SUBNET ip daddr != OVERLAY ip daddr != SERVICES oifname != BRIDGE masquerade }
 * } -- base chains are flushed and rewritten, in one transaction. */
static gboolean nft_base(oakuk_net *net, GError **error) {
  g_autoptr(OakukNft) t = oakuk_nft_new();
  oakuk_nft_add_table(t);
  oakuk_nft_add_maps(t);
  oakuk_nft_add_nat_chain(t, "prerouting", NF_INET_PRE_ROUTING, NF_IP_PRI_NAT_DST);
  oakuk_nft_add_nat_chain(t, "output", NF_INET_LOCAL_OUT, -100);
  oakuk_nft_add_nat_chain(t, "postrouting", NF_INET_POST_ROUTING, NF_IP_PRI_NAT_SRC);
  oakuk_nft_flush_chain(t, "prerouting");
  oakuk_nft_flush_chain(t, "output");
  oakuk_nft_flush_chain(t, "postrouting");
  oakuk_nft_node_rules(t, net->bridge, net->subnet, net->subnet_prefix, net->overlay, net->overlay_prefix,
                       net->service, net->service_prefix);
  if (!oakuk_nft_commit(t, error)) {
    g_prefix_error(error, "create nftables table ip oakuk: ");
    return FALSE;
  }
  return TRUE;
}

static gboolean op_setup_node(oakuk_net *net, Job *job, GError **error) {
  (void)job;
  /* Existing devices are adopted as they are (a changelink of a vxlan's endpoint is refused). */
  int br = oakuk_net_ifindex(net->sk, net->bridge);
  if (br <= 0 && !oakuk_net_bridge_add(net->sk, net->bridge, error))
    return FALSE;
  br = br > 0 ? br : oakuk_net_ifindex(net->sk, net->bridge);
  g_autofree char *fwd = g_strdup_printf("/proc/sys/net/ipv4/conf/%s/route_localnet", net->bridge);
  if (br <= 0 || !oakuk_net_addr_add(net->sk, br, net->subnet + 1, net->subnet_prefix, net->bridge, error) ||
      !oakuk_net_sysctl("/proc/sys/net/ipv4/ip_forward", "1", error) || !oakuk_net_sysctl(fwd, "1", error) ||
      !oakuk_net_route_add(net->sk, net->service, net->service_prefix, 0, br, FALSE, error))
    return br > 0 ? FALSE : oakuk_net_fail_errno(error, ENODEV, "bridge %s", net->bridge);
  guint8 mac[6];
  oakuk_net_bridge_mac(net->subnet, mac);
  if (!oakuk_net_link_set_mac(net->sk, br, mac, error) || !oakuk_net_link_up(net->sk, br, NULL, 0, error))
    return FALSE;
  int vx = oakuk_net_ifindex(net->sk, OAKUK_NET_VX);
  if (net->underlay && vx <= 0 && !oakuk_net_vxlan_add(net->sk, net->vni, net->vport, net->underlay, error))
    return FALSE;
  if (!nft_base(net, error))
    return FALSE;
  net->loaded = FALSE;
  return ensure_loaded(net, error);
}

OAKUK_API int oakuk_net_setup_node(oakuk_net *net, oakuk_error **error) {
  g_return_val_if_fail(net != NULL, OAKUK_EINVAL);
  return job_sync(net, job_new(op_setup_node), NULL, NULL, error);
}

OAKUK_API void oakuk_net_setup_node_async(oakuk_net *net, oakuk_net_callback cb, void *user_data) {
  g_return_if_fail(net != NULL);
  Job *job = job_new(op_setup_node);
  job->cb = cb;
  job->user_data = user_data;
  job_async(net, job);
}

/* ---------------------------------------------------------------- instances */

/* table ip oakuk { chain prerouting { type nat hook prerouting priority dstnat; policy accept;
 *   iifname eth0 ip daddr IP dnat to 192.168.1.2 }
 * chain postrouting { type nat hook postrouting priority srcnat; policy accept;
 *   oifname eth0 ip saddr 192.168.1.0/30 masquerade } } in the instance namespace */
static gboolean nat_rules(const char *name, guint32 ip, GError **error) {
  g_autoptr(OakukNft) t = oakuk_nft_new();
  oakuk_nft_add_table(t);
  oakuk_nft_add_nat_chain(t, "prerouting", NF_INET_PRE_ROUTING, NF_IP_PRI_NAT_DST);
  oakuk_nft_add_nat_chain(t, "postrouting", NF_INET_POST_ROUTING, NF_IP_PRI_NAT_SRC);
  oakuk_nft_instance_nat_rules(t, OAKUK_NET_ETH, ip, NAT_GUEST_IP, NAT_BRIDGE_IP & ~3u, 30);
  gboolean ok = oakuk_nft_commit(t, error);
  if (!ok)
    g_prefix_error(error, "create NAT rules in netns %s: ", name);
  return ok;
}

typedef struct {
  oakuk_net *net;
  const Inst *inst;
  struct nl_sock *sk; /* opened inside the instance namespace and bound to it */
  int tap;
} Inside;

/* Runs while the plumbing thread is inside the new namespace: what does not involve eth0. */
static gboolean setup_inside(gpointer data, GError **error) {
  Inside *in = data;
  const Inst *inst = in->inst;
  g_autoptr(GError) ignored = NULL;
  /* IPv4 only: links made from now on get no IPv6 (no link-local chatter with the guest's MAC). */
  (void)oakuk_net_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1", &ignored);
  in->sk = oakuk_net_nl_open(error);
  /* lo's alias marks the namespace as ours from its first moment (reconcile finds it even when
   * a crash left it without a veth). */
  if (in->sk == NULL || !oakuk_net_link_up(in->sk, 1, in->net->netns_label, 0, error))
    return FALSE;
  if (inst->mode == OAKUK_NET_CONTAINER)
    return TRUE;
  in->tap = oakuk_net_tap_create(OAKUK_NET_TAP, error);
  if (in->tap < 0)
    return FALSE;
  if (inst->mode == OAKUK_NET_UK_NAT) {
    int br;
    static const guint8 gateway_mac[6] = OAKUK_NET_NAT_GATEWAY_MAC;
    if (!oakuk_net_bridge_add(in->sk, OAKUK_NET_NAT_BRIDGE, error) ||
        (br = oakuk_net_ifindex(in->sk, OAKUK_NET_NAT_BRIDGE)) <= 0 ||
        !oakuk_net_link_set_mac(in->sk, br, gateway_mac, error) ||
        !oakuk_net_addr_add(in->sk, br, NAT_BRIDGE_IP, 30, OAKUK_NET_NAT_BRIDGE, error) ||
        !oakuk_net_link_up(in->sk, in->tap, NULL, br, error) ||
        !oakuk_net_sysctl("/proc/sys/net/ipv4/ip_forward", "1", error) ||
        !nat_rules(inst->name, inst->ip, error))
      return FALSE;
  }
  return TRUE;
}

/* After the veth exists: eth0 through the namespace's own socket, from the node namespace. */
static gboolean setup_eth0(Inside *in, GError **error) {
  oakuk_net *net = in->net;
  const Inst *inst = in->inst;
  struct nl_sock *sk = in->sk;
  int eth = oakuk_net_ifindex(sk, OAKUK_NET_ETH);
  if (eth <= 0)
    return oakuk_net_fail_errno(error, ENODEV, "find %s", OAKUK_NET_ETH);
  if (!oakuk_net_link_up(sk, eth, NULL, 0, error))
    return FALSE;
  if (inst->mode == OAKUK_NET_UK_DIRECT) {
    /* eth0 has no address, so only the guest answers ARP/IP for the instance IP. */
    return oakuk_net_redirect(sk, eth, in->tap, "eth0 -> tap0", error) &&
           oakuk_net_redirect(sk, in->tap, eth, "tap0 -> eth0", error);
  }
  return oakuk_net_addr_add(sk, eth, inst->ip, net->subnet_prefix, OAKUK_NET_ETH, error) &&
         oakuk_net_route_add(sk, 0, 0, net->subnet + 1, eth, FALSE, error);
}

static gboolean create_instance(oakuk_net *net, const Inst *inst, GError **error) {
  g_autofree char *host = oakuk_net_host_ifname(inst->name);
  g_autofree char *alias = oakuk_net_alias_format(inst->mode, inst->ip, inst->name);
  g_autofree char *mac = oakuk_net_eth_mac(inst->name);
  int br = oakuk_net_ifindex(net->sk, net->bridge);
  if (br <= 0)
    return oakuk_net_fail_errno(error, ENODEV, "bridge %s (run setup_node first)", net->bridge);
  Inside in = {net, inst, NULL, -1};
  int fd = -1;
  if (!oakuk_net_ns_create(inst->name, net->host_fd, setup_inside, &in, &fd, error)) {
    g_prefix_error(error, "set up netns %s: ", inst->name);
    if (in.sk)
      nl_socket_free(in.sk);
    return FALSE;
  }
  gboolean veth = oakuk_net_veth_add(net->sk, host, br, alias, OAKUK_NET_ETH, mac, fd, inst->name, error);
  gboolean ok = veth && setup_eth0(&in, error);
  if (veth && !ok)
    g_prefix_error(error, "set up netns %s: ", inst->name);
  close(fd);
  nl_socket_free(in.sk);
  if (!ok) {
    /* Only what this call made: a clashing link of that name is not ours to delete. */
    if (veth)
      (void)oakuk_net_link_del(net->sk, host, NULL);
    (void)oakuk_net_ns_delete(inst->name, NULL);
  }
  return ok;
}

static guint32 allocate_ip(oakuk_net *net) {
  guint32 size = 1u << (32 - net->subnet_prefix);
  g_autoptr(GHashTable) used = g_hash_table_new(g_direct_hash, g_direct_equal);
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, net->instances);
  while (g_hash_table_iter_next(&it, NULL, &v))
    g_hash_table_add(used, GUINT_TO_POINTER(((Inst *)v)->ip));
  for (guint32 off = 2; off < size - 1; off++)
    if (!g_hash_table_contains(used, GUINT_TO_POINTER(net->subnet + off)))
      return net->subnet + off;
  return 0;
}

static Inst *find_ip_owner(oakuk_net *net, guint32 ip) {
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, net->instances);
  while (g_hash_table_iter_next(&it, NULL, &v))
    if (((Inst *)v)->ip == ip)
      return v;
  return NULL;
}

static gboolean teardown_instance(oakuk_net *net, const char *name, GError **error);

static gboolean op_instance_setup(oakuk_net *net, Job *job, GError **error) {
  if (!ensure_loaded(net, error))
    return FALSE;
  guint32 want = 0;
  if (job->ip)
    oakuk_net_parse_ip(job->ip, &want);
  Inst *have = g_hash_table_lookup(net->instances, job->name);
  g_autofree char *nspath = g_build_filename(OAKUK_NET_NETNS_DIR, job->name, NULL);
  if (have && !g_file_test(nspath, G_FILE_TEST_EXISTS)) {
    /* A veth whose namespace is gone (a crash half-way): clear it and start over. */
    if (!teardown_instance(net, job->name, error))
      return FALSE;
    have = NULL;
  }
  if (have && have->mode == job->mode && (want == 0 || want == have->ip)) {
    job->info = info_new(net, have);
    return TRUE;
  }
  if (have) {
    g_autofree char *hip = oakuk_net_ip_str(have->ip);
    g_set_error(error, OAKUK_ERROR, -OAKUK_EEXISTS, "instance %s: exists with mode %s and IP %s", job->name,
                oakuk_net_mode_name(have->mode), hip);
    return FALSE;
  }
  Inst *owner = want ? find_ip_owner(net, want) : NULL;
  if (owner) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_EEXISTS, "instance %s: IP %s is used by instance %s", job->name,
                job->ip, owner->name);
    return FALSE;
  }
  Inst inst = {job->name, want ? want : allocate_ip(net), job->mode};
  if (inst.ip == 0) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_ENOCAPACITY, "instance %s: no free IP in the node subnet",
                job->name);
    return FALSE;
  }
  if (!create_instance(net, &inst, error))
    return FALSE;
  Inst *copy = g_memdup2(&inst, sizeof inst);
  copy->name = g_strdup(job->name);
  g_hash_table_replace(net->instances, copy->name, copy);
  job->info = info_new(net, copy);
  return TRUE;
}

static gboolean port_delete(oakuk_net *net, const char *key, GError **error) {
  Port *p = g_hash_table_lookup(net->ports, key);
  if (p == NULL)
    return TRUE;
  g_autoptr(OakukNft) t = oakuk_nft_new();
  oakuk_nft_port_delete(t, g_strcmp0(p->proto, "udp") == 0, p->host);
  if (!oakuk_nft_commit(t, error)) {
    g_prefix_error(error, "remove port mapping %u/%s of %s: ", p->host, p->proto, p->instance);
    return FALSE;
  }
  g_hash_table_remove(net->ports, key);
  return TRUE;
}

static gboolean teardown_instance(oakuk_net *net, const char *name, GError **error) {
  g_autofree char *host = oakuk_net_host_ifname(name);
  g_autoptr(GPtrArray) keys = g_ptr_array_new_with_free_func(g_free);
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, net->ports);
  while (g_hash_table_iter_next(&it, &k, &v))
    if (g_strcmp0(((Port *)v)->instance, name) == 0)
      g_ptr_array_add(keys, g_strdup(k));
  for (guint i = 0; i < keys->len; i++)
    if (!port_delete(net, keys->pdata[i], error))
      return FALSE;
  gboolean known = g_hash_table_contains(net->instances, name);
  g_autofree char *alias = oakuk_net_link_alias(net->sk, host);
  g_autofree char *owner = NULL;
  gint mode;
  guint32 ip;
  /* The host end is deleted only when its alias says it is this instance's. */
  if (alias && oakuk_net_alias_parse(alias, &mode, &ip, &owner) && g_strcmp0(owner, name) == 0 &&
      !oakuk_net_link_del(net->sk, host, error))
    return FALSE;
  if ((known || oakuk_net_netns_is_ours(net, name)) && !oakuk_net_ns_delete(name, error))
    return FALSE;
  g_hash_table_remove(net->instances, name);
  return TRUE;
}

static gboolean op_instance_teardown(oakuk_net *net, Job *job, GError **error) {
  return ensure_loaded(net, error) && teardown_instance(net, job->name, error);
}

static Job *instance_setup_job(oakuk_net *net, const char *name, const char *ip, int32_t mode) {
  Job *job = job_new(op_instance_setup);
  GError *err = NULL;
  guint32 v;
  g_autofree char *sub = oakuk_net_ip_str(net->subnet);
  job->name = g_strdup(name);
  job->ip = g_strdup(ip);
  job->mode = mode;
  if (!oakuk_net_check_instance_name(name, &err))
    ;
  else if (oakuk_net_mode_name(mode) == NULL)
    g_set_error(&err, OAKUK_ERROR, -OAKUK_EINVAL,
                "instance %s: mode %d is not OAKUK_NET_CONTAINER, _UK_DIRECT or _UK_NAT", name, mode);
  else if (ip && !oakuk_net_parse_ip(ip, &v))
    g_set_error(&err, OAKUK_ERROR, -OAKUK_EINVAL, "instance %s: IP \"%s\" is not an IPv4 address", name, ip);
  else if (ip && (!oakuk_net_in_cidr(v, net->subnet, net->subnet_prefix) || v == net->subnet ||
                  v == net->subnet + 1 || v == (net->subnet | ~(0xffffffffu << (32 - net->subnet_prefix)))))
    g_set_error(&err, OAKUK_ERROR, -OAKUK_EINVAL,
                "instance %s: IP %s is not a host address of the node subnet %s/%u", name, ip, sub,
                net->subnet_prefix);
  if (err) {
    job->fn = job_prefailed;
    job->error = err;
  }
  return job;
}

OAKUK_API int oakuk_net_instance_setup(oakuk_net *net, const char *name, const char *ip, int32_t mode,
                                       oakuk_net_instance_info **out, oakuk_error **error) {
  g_return_val_if_fail(net != NULL, OAKUK_EINVAL);
  oakuk_net_instance_info *info = NULL;
  int r = job_sync(net, instance_setup_job(net, name, ip, mode), &info, NULL, error);
  if (out)
    *out = info;
  else
    oakuk_net_instance_info_unref(info);
  return r;
}

OAKUK_API void oakuk_net_instance_setup_async(oakuk_net *net, const char *name, const char *ip, int32_t mode,
                                              oakuk_net_instance_callback cb, void *user_data) {
  g_return_if_fail(net != NULL);
  Job *job = instance_setup_job(net, name, ip, mode);
  job->icb = cb;
  job->user_data = user_data;
  job_async(net, job);
}

static Job *instance_teardown_job(const char *name) {
  Job *job = job_new(op_instance_teardown);
  job->name = g_strdup(name);
  if (!oakuk_net_check_instance_name(name, &job->error))
    job->fn = job_prefailed;
  return job;
}

OAKUK_API int oakuk_net_instance_teardown(oakuk_net *net, const char *name, oakuk_error **error) {
  g_return_val_if_fail(net != NULL, OAKUK_EINVAL);
  return job_sync(net, instance_teardown_job(name), NULL, NULL, error);
}

OAKUK_API void oakuk_net_instance_teardown_async(oakuk_net *net, const char *name, oakuk_net_callback cb,
                                                 void *user_data) {
  g_return_if_fail(net != NULL);
  Job *job = instance_teardown_job(name);
  job->cb = cb;
  job->user_data = user_data;
  job_async(net, job);
}

/* ---------------------------------------------------------------- port mappings */

static gboolean op_port_add(oakuk_net *net, Job *job, GError **error) {
  guint host, guest;
  const char *proto;
  if (!ensure_loaded(net, error))
    return FALSE;
  oakuk_net_parse_port_spec(job->spec, &host, &guest, &proto, NULL);
  Inst *inst = g_hash_table_lookup(net->instances, job->name);
  if (inst == NULL) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_ENOTFOUND, "port mapping %s: unknown instance %s", job->spec,
                job->name);
    return FALSE;
  }
  g_autofree char *key = g_strdup_printf("%s/%u", proto, host);
  Port *have = g_hash_table_lookup(net->ports, key);
  if (have && g_strcmp0(have->instance, job->name) == 0 && have->guest == guest && have->ip == inst->ip)
    return TRUE;
  if (have) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_EEXISTS,
                "port mapping %s of instance %s: host port %u/%s is already mapped by instance %s", job->spec,
                job->name, host, proto, have->instance);
    return FALSE;
  }
  g_autoptr(OakukNft) t = oakuk_nft_new();
  oakuk_nft_port_add(t, g_strcmp0(proto, "udp") == 0, host, job->name, inst->ip, guest);
  if (!oakuk_nft_commit(t, error)) {
    g_prefix_error(error, "port mapping %s of instance %s: ", job->spec, job->name);
    return FALSE;
  }
  Port *p = g_new0(Port, 1);
  *p = (Port){g_strdup(job->name), proto, host, guest, inst->ip};
  g_hash_table_replace(net->ports, g_steal_pointer(&key), p);
  return TRUE;
}

static gboolean op_port_remove(oakuk_net *net, Job *job, GError **error) {
  guint host, guest;
  const char *proto;
  if (!ensure_loaded(net, error))
    return FALSE;
  oakuk_net_parse_port_spec(job->spec, &host, &guest, &proto, NULL);
  g_autofree char *key = g_strdup_printf("%s/%u", proto, host);
  Port *have = g_hash_table_lookup(net->ports, key);
  if (have == NULL || g_strcmp0(have->instance, job->name) != 0) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_ENOTFOUND, "port mapping %s: not mapped by instance %s", job->spec,
                job->name);
    return FALSE;
  }
  return port_delete(net, key, error);
}

static int port_job(oakuk_net *net, JobFn fn, const char *instance, const char *spec, oakuk_error **error) {
  guint h, g;
  const char *proto;
  GError *err = NULL;
  if (!oakuk_net_check_instance_name(instance, &err) ||
      !oakuk_net_parse_port_spec(spec, &h, &g, &proto, &err))
    return oakuk_propagate_gerror(error, err);
  Job *job = job_new(fn);
  job->name = g_strdup(instance);
  job->spec = g_strdup(spec);
  return job_sync(net, job, NULL, NULL, error);
}

OAKUK_API int oakuk_net_port_map_add(oakuk_net *net, const char *instance, const char *spec,
                                     oakuk_error **error) {
  g_return_val_if_fail(net != NULL, OAKUK_EINVAL);
  return port_job(net, op_port_add, instance, spec, error);
}

OAKUK_API int oakuk_net_port_map_remove(oakuk_net *net, const char *instance, const char *spec,
                                        oakuk_error **error) {
  g_return_val_if_fail(net != NULL, OAKUK_EINVAL);
  return port_job(net, op_port_remove, instance, spec, error);
}

/* ---------------------------------------------------------------- services */

static gboolean service_delete(oakuk_net *net, guint32 rr, GError **error) {
  g_autofree char *ip = oakuk_net_ip_str(rr);
  g_autofree char *chain = oakuk_net_service_chain(rr);
  /* "add" first makes the deletes valid when the service does not exist: one transaction. */
  g_autoptr(OakukNft) t = oakuk_nft_new();
  oakuk_nft_add_chain(t, chain);
  oakuk_nft_service_add(t, rr, chain);
  oakuk_nft_service_delete(t, rr);
  oakuk_nft_delete_chain(t, chain);
  if (!oakuk_nft_commit(t, error)) {
    g_prefix_error(error, "remove service %s: ", ip);
    return FALSE;
  }
  return TRUE;
}

static gboolean op_service_set(oakuk_net *net, Job *job, GError **error) {
  guint32 rr;
  oakuk_net_parse_ip(job->ip, &rr);
  GPtrArray *b = job->list[0];
  if (b->len == 0)
    return service_delete(net, rr, error);
  g_autofree char *chain = oakuk_net_service_chain(rr);
  g_autofree guint32 *backends = g_new0(guint32, b->len);
  for (guint i = 0; i < b->len; i++)
    oakuk_net_parse_ip(b->pdata[i], &backends[i]);
  /* chain CHAIN { [meta l4proto { tcp, udp } th dport PORT] dnat ip to numgen inc mod N map { 0 : B0, ... } }
   * and services { RR : jump CHAIN }: one transaction, readers see the old set or the new one. */
  g_autoptr(OakukNft) t = oakuk_nft_new();
  oakuk_nft_add_chain(t, chain);
  oakuk_nft_flush_chain(t, chain);
  oakuk_nft_service_rule(t, chain, job->port, backends, b->len);
  oakuk_nft_service_add(t, rr, chain);
  if (!oakuk_nft_commit(t, error)) {
    g_prefix_error(error, "set service %s: ", job->ip);
    return FALSE;
  }
  return TRUE;
}

static Job *service_job(oakuk_net *net, const char *rr_ip, uint32_t port, const char *const *backends,
                        size_t n) {
  Job *job = job_new(op_service_set);
  GError *err = NULL;
  guint32 v;
  job->ip = g_strdup(rr_ip);
  job->port = port;
  job->list[0] = strv_copy(backends, n);
  if (!oakuk_net_parse_ip(rr_ip, &v) || !oakuk_net_in_cidr(v, net->service, net->service_prefix))
    g_set_error(&err, OAKUK_ERROR, -OAKUK_EINVAL, "service IP \"%s\": not an address of the service CIDR",
                rr_ip ? rr_ip : "(null)");
  else if (port > 65535)
    g_set_error(&err, OAKUK_ERROR, -OAKUK_EINVAL, "service %s: port %u out of range", rr_ip, port);
  else if (n > OAKUK_NET_MAX_BACKENDS)
    g_set_error(&err, OAKUK_ERROR, -OAKUK_EINVAL, "service %s: %zu backends; at most %d", rr_ip, n,
                OAKUK_NET_MAX_BACKENDS);
  for (size_t i = 0; err == NULL && i < n; i++)
    if (!oakuk_net_parse_ip(backends[i], &v))
      g_set_error(&err, OAKUK_ERROR, -OAKUK_EINVAL, "service %s: backend[%zu] \"%s\" is not an IPv4 address",
                  rr_ip, i, backends[i] ? backends[i] : "(null)");
  if (err) {
    job->fn = job_prefailed;
    job->error = err;
  }
  return job;
}

OAKUK_API int oakuk_net_service_set(oakuk_net *net, const char *rr_ip, uint32_t port,
                                    const char *const *backends, size_t n, oakuk_error **error) {
  g_return_val_if_fail(net != NULL && (backends != NULL || n == 0), OAKUK_EINVAL);
  return job_sync(net, service_job(net, rr_ip, port, backends, n), NULL, NULL, error);
}

OAKUK_API void oakuk_net_service_set_async(oakuk_net *net, const char *rr_ip, uint32_t port,
                                           const char *const *backends, size_t n, oakuk_net_callback cb,
                                           void *user_data) {
  g_return_if_fail(net != NULL && (backends != NULL || n == 0));
  Job *job = service_job(net, rr_ip, port, backends, n);
  job->cb = cb;
  job->user_data = user_data;
  job_async(net, job);
}

OAKUK_API int oakuk_net_service_remove(oakuk_net *net, const char *rr_ip, oakuk_error **error) {
  g_return_val_if_fail(net != NULL, OAKUK_EINVAL);
  return job_sync(net, service_job(net, rr_ip, 0, NULL, 0), NULL, NULL, error);
}

/* ---------------------------------------------------------------- peers */

static gboolean peer_remove(oakuk_net *net, int vx, const Peer *p, GError **error) {
  guint8 mac[6], zero[6] = {0};
  oakuk_net_vx_mac(p->underlay, mac);
  return oakuk_net_route_del(net->sk, p->subnet, p->prefix, vx, error) &&
         oakuk_net_neigh_set(net->sk, vx, p->gw, mac, FALSE, error) &&
         oakuk_net_fdb_set(net->sk, vx, mac, p->underlay, FALSE, error) &&
         oakuk_net_fdb_set(net->sk, vx, zero, p->underlay, FALSE, error);
}

static int vx_index(oakuk_net *net, GError **error) {
  int vx = oakuk_net_ifindex(net->sk, OAKUK_NET_VX);
  if (vx <= 0)
    oakuk_net_fail_errno(error, ENODEV, "%s does not exist (set options.underlay_ip and run setup_node)",
                         OAKUK_NET_VX);
  return vx;
}

static gboolean op_peer_add(oakuk_net *net, Job *job, GError **error) {
  Peer p = {0};
  oakuk_net_parse_ip(job->ip, &p.underlay);
  oakuk_net_parse_cidr(job->subnet, "node_subnet", &p.subnet, &p.prefix, NULL);
  p.gw = p.subnet + 1;
  int vx = vx_index(net, error);
  guint8 mac[6], zero[6] = {0};
  oakuk_net_vx_mac(p.underlay, mac);
  if (vx <= 0 || !oakuk_net_fdb_set(net->sk, vx, zero, p.underlay, TRUE, error) ||
      !oakuk_net_fdb_set(net->sk, vx, mac, p.underlay, TRUE, error) ||
      !oakuk_net_neigh_set(net->sk, vx, p.gw, mac, TRUE, error) ||
      !oakuk_net_route_add(net->sk, p.subnet, p.prefix, p.gw, vx, TRUE, error)) {
    g_prefix_error(error, "peer %s (%s): ", job->ip, job->subnet);
    return FALSE;
  }
  return TRUE;
}

static gboolean op_peer_remove(oakuk_net *net, Job *job, GError **error) {
  guint32 underlay, subnet = 0;
  guint prefix = 0;
  oakuk_net_parse_ip(job->ip, &underlay);
  if (job->subnet)
    oakuk_net_parse_cidr(job->subnet, "node_subnet", &subnet, &prefix, NULL);
  int vx = oakuk_net_ifindex(net->sk, OAKUK_NET_VX);
  g_autoptr(GArray) peers = oakuk_net_scan_peers(net, vx);
  for (guint i = 0; i < peers->len; i++) {
    Peer *p = &g_array_index(peers, Peer, i);
    if (p->underlay == underlay && (job->subnet == NULL || (p->subnet == subnet && p->prefix == prefix)) &&
        !peer_remove(net, vx, p, error)) {
      g_prefix_error(error, "remove peer %s: ", job->ip);
      return FALSE;
    }
  }
  /* FDB entries without a route (a half-added peer) go too. */
  guint8 mac[6], zero[6] = {0};
  oakuk_net_vx_mac(underlay, mac);
  return vx <= 0 || (oakuk_net_fdb_set(net->sk, vx, mac, underlay, FALSE, error) &&
                     oakuk_net_fdb_set(net->sk, vx, zero, underlay, FALSE, error));
}

static Job *peer_job(oakuk_net *net, JobFn fn, const char *underlay_ip, const char *node_subnet) {
  Job *job = job_new(fn);
  GError *err = NULL;
  guint32 v, s;
  guint prefix;
  job->ip = g_strdup(underlay_ip);
  job->subnet = g_strdup(node_subnet);
  if (!oakuk_net_parse_ip(underlay_ip, &v))
    g_set_error(&err, OAKUK_ERROR, -OAKUK_EINVAL, "peer underlay IP \"%s\": not an IPv4 address",
                underlay_ip ? underlay_ip : "(null)");
  else if ((node_subnet || fn == op_peer_add) &&
           oakuk_net_parse_cidr(node_subnet, "peer node_subnet", &s, &prefix, &err) &&
           (prefix > 30 || s == net->subnet))
    g_set_error(&err, OAKUK_ERROR, -OAKUK_EINVAL,
                "peer node_subnet \"%s\": must be /30 or wider and not ours", node_subnet);
  if (err) {
    job->fn = job_prefailed;
    job->error = err;
  }
  return job;
}

OAKUK_API int oakuk_net_peer_add(oakuk_net *net, const char *underlay_ip, const char *node_subnet,
                                 oakuk_error **error) {
  g_return_val_if_fail(net != NULL, OAKUK_EINVAL);
  return job_sync(net, peer_job(net, op_peer_add, underlay_ip, node_subnet), NULL, NULL, error);
}

OAKUK_API void oakuk_net_peer_add_async(oakuk_net *net, const char *underlay_ip, const char *node_subnet,
                                        oakuk_net_callback cb, void *user_data) {
  g_return_if_fail(net != NULL);
  Job *job = peer_job(net, op_peer_add, underlay_ip, node_subnet);
  job->cb = cb;
  job->user_data = user_data;
  job_async(net, job);
}

OAKUK_API int oakuk_net_peer_remove(oakuk_net *net, const char *underlay_ip, const char *node_subnet,
                                    oakuk_error **error) {
  g_return_val_if_fail(net != NULL, OAKUK_EINVAL);
  return job_sync(net, peer_job(net, op_peer_remove, underlay_ip, node_subnet), NULL, NULL, error);
}

/* ---------------------------------------------------------------- reconcile, list, teardown */

static gboolean op_reconcile(oakuk_net *net, Job *job, GError **error) {
  net->loaded = FALSE;
  if (!ensure_loaded(net, error))
    return FALSE;
  g_autoptr(GPtrArray) doomed = g_ptr_array_new_with_free_func(g_free);
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, net->instances);
  while (g_hash_table_iter_next(&it, &k, NULL))
    if (!in_list(job->list[0], k))
      g_ptr_array_add(doomed, g_strdup(k));
  g_autoptr(GPtrArray) spaces = oakuk_net_scan_netns(net);
  for (guint i = 0; i < spaces->len; i++)
    if (!in_list(job->list[0], spaces->pdata[i]) && !in_list(doomed, spaces->pdata[i]))
      g_ptr_array_add(doomed, g_strdup(spaces->pdata[i]));
  for (guint i = 0; i < doomed->len; i++)
    if (!teardown_instance(net, doomed->pdata[i], error))
      return FALSE;
  g_ptr_array_set_size(doomed, 0);
  g_hash_table_iter_init(&it, net->ports);
  while (g_hash_table_iter_next(&it, &k, &v))
    if (!g_hash_table_contains(net->instances, ((Port *)v)->instance))
      g_ptr_array_add(doomed, g_strdup(k));
  for (guint i = 0; i < doomed->len; i++)
    if (!port_delete(net, doomed->pdata[i], error))
      return FALSE;
  g_autoptr(GPtrArray) services = oakuk_net_scan_services(net);
  for (guint i = 0; i < services->len; i++) {
    guint32 rr;
    if (!in_list(job->list[1], services->pdata[i]) && oakuk_net_parse_ip(services->pdata[i], &rr) &&
        !service_delete(net, rr, error))
      return FALSE;
  }
  int vx = oakuk_net_ifindex(net->sk, OAKUK_NET_VX);
  g_autoptr(GArray) peers = oakuk_net_scan_peers(net, vx);
  for (guint i = 0; i < peers->len; i++) {
    Peer *p = &g_array_index(peers, Peer, i);
    g_autofree char *u = oakuk_net_ip_str(p->underlay);
    if (!in_list(job->list[2], u) && !peer_remove(net, vx, p, error))
      return FALSE;
  }
  return TRUE;
}

static Job *reconcile_job(const char *const *instances, size_t n_instances, const char *const *services,
                          size_t n_services, const char *const *peers, size_t n_peers) {
  Job *job = job_new(op_reconcile);
  job->list[0] = strv_copy(instances, n_instances);
  job->list[1] = strv_copy(services, n_services);
  job->list[2] = strv_copy(peers, n_peers);
  return job;
}

OAKUK_API int oakuk_net_reconcile(oakuk_net *net, const char *const *instances, size_t n_instances,
                                  const char *const *services, size_t n_services, const char *const *peers,
                                  size_t n_peers, oakuk_error **error) {
  g_return_val_if_fail(net != NULL, OAKUK_EINVAL);
  return job_sync(net, reconcile_job(instances, n_instances, services, n_services, peers, n_peers), NULL,
                  NULL, error);
}

OAKUK_API void oakuk_net_reconcile_async(oakuk_net *net, const char *const *instances, size_t n_instances,
                                         const char *const *services, size_t n_services,
                                         const char *const *peers, size_t n_peers, oakuk_net_callback cb,
                                         void *user_data) {
  g_return_if_fail(net != NULL);
  Job *job = reconcile_job(instances, n_instances, services, n_services, peers, n_peers);
  job->cb = cb;
  job->user_data = user_data;
  job_async(net, job);
}

static gboolean op_teardown_node(oakuk_net *net, Job *job, GError **error) {
  if (!op_reconcile(net, job, error))
    return FALSE;
  g_autoptr(OakukNft) t = oakuk_nft_new();
  oakuk_nft_add_table(t);
  oakuk_nft_delete_table(t);
  if (!oakuk_nft_commit(t, error)) {
    g_prefix_error(error, "delete nftables table ip oakuk: ");
    return FALSE;
  }
  net->loaded = FALSE;
  return oakuk_net_link_del(net->sk, OAKUK_NET_VX, error) && oakuk_net_link_del(net->sk, net->bridge, error);
}

OAKUK_API int oakuk_net_teardown_node(oakuk_net *net, oakuk_error **error) {
  g_return_val_if_fail(net != NULL, OAKUK_EINVAL);
  Job *job = reconcile_job(NULL, 0, NULL, 0, NULL, 0);
  job->fn = op_teardown_node;
  return job_sync(net, job, NULL, NULL, error);
}

static gboolean op_list(oakuk_net *net, Job *job, GError **error) {
  job->json = oakuk_net_state_json(net, error);
  return job->json != NULL;
}

OAKUK_API char *oakuk_net_list(oakuk_net *net, oakuk_error **error) {
  g_return_val_if_fail(net != NULL, NULL);
  char *json = NULL;
  if (job_sync(net, job_new(op_list), NULL, &json, error) != 0)
    return NULL;
  return json;
}
