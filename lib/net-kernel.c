/* Kernel layer of the net module: namespaces, netlink (libnl-route-3) and TUNSETIFF (nftables: net-nft.c).
 * Every function runs on the plumbing thread, which is allowed to setns(). */
#include "net-private.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_ether.h>
#include <linux/if_tun.h>
#include <linux/neighbour.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/tc_act/tc_mirred.h>
#include <netlink/route/act/mirred.h>
#include <netlink/route/addr.h>
#include <netlink/route/classifier.h>
#include <netlink/route/cls/u32.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/link/vxlan.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/route.h>
#include <netlink/route/tc.h>
#include <sched.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* libnl loses errno; map its codes back so errors read like the kernel's. */
static int nl_to_errno(int nlerr) {
  switch (abs(nlerr)) {
  case NLE_EXIST: return EEXIST;
  case NLE_OBJ_NOTFOUND: return ENOENT;
  case NLE_NODEV: return ENODEV;
  case NLE_INVAL: return EINVAL;
  case NLE_BUSY: return EBUSY;
  case NLE_NOMEM: return ENOMEM;
  case NLE_PERM: return EPERM;
  case NLE_NOACCESS: return EACCES;
  case NLE_OPNOTSUPP: return EOPNOTSUPP;
  case NLE_AGAIN: return EAGAIN;
  case NLE_RANGE: return ERANGE;
  case NLE_AF_NOSUPPORT: return EAFNOSUPPORT;
  case NLE_MSGSIZE: return EMSGSIZE;
  default: return EIO;
  }
}

/* errno of the last failure on this thread, for the public error's errno field. */
static __thread int last_errno;

int oakuk_net_take_errno(void) {
  int e = last_errno;
  last_errno = 0;
  return e;
}

static gboolean fail_v(GError **error, int errnum, const char *detail, const char *fmt, va_list ap) {
  g_autofree char *what = g_strdup_vprintf(fmt, ap);
  const char *ename = strerrorname_np(errnum);
  int code = errnum == EEXIST                       ? OAKUK_EEXISTS
             : errnum == ENOENT || errnum == ENODEV ? OAKUK_ENOTFOUND
             : errnum == EPERM || errnum == EACCES  ? OAKUK_EPERM
                                                    : OAKUK_EIO;
  GError *e = g_error_new(OAKUK_ERROR, -code, "%s: %s (%s)", what, ename ? ename : "E?", detail);
  g_propagate_error(error, e);
  last_errno = errnum;
  return FALSE;
}

gboolean oakuk_net_fail_nl(GError **error, int nlerr, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fail_v(error, nl_to_errno(nlerr), nl_geterror(nlerr), fmt, ap);
  va_end(ap);
  return FALSE;
}

gboolean oakuk_net_fail_errno(GError **error, int errnum, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fail_v(error, errnum, g_strerror(errnum), fmt, ap);
  va_end(ap);
  return FALSE;
}

gboolean oakuk_net_enter_ns(int fd, const char *what, GError **error) {
  if (setns(fd, CLONE_NEWNET) < 0)
    return oakuk_net_fail_errno(error, errno, "enter netns %s", what);
  return TRUE;
}

struct nl_sock *oakuk_net_nl_open(GError **error) {
  struct nl_sock *sk = nl_socket_alloc();
  int r = sk ? nl_connect(sk, NETLINK_ROUTE) : -NLE_NOMEM;
  if (r < 0) {
    nl_socket_free(sk);
    oakuk_net_fail_nl(error, r, "open rtnetlink socket");
    return NULL;
  }
  return sk;
}

/* Like iproute2: /run/netns is a shared mount point so namespaces show up in every mount ns. */
static gboolean netns_dir_ready(GError **error) {
  static gsize done = 0;
  if (g_once_init_enter(&done)) {
    if (g_mkdir_with_parents(OAKUK_NET_NETNS_DIR, 0755) == 0 &&
        mount("", OAKUK_NET_NETNS_DIR, "none", MS_SHARED | MS_REC, NULL) < 0 && errno == EINVAL) {
      if (mount(OAKUK_NET_NETNS_DIR, OAKUK_NET_NETNS_DIR, "none", MS_BIND | MS_REC, NULL) == 0)
        (void)mount("", OAKUK_NET_NETNS_DIR, "none", MS_SHARED | MS_REC, NULL);
    }
    g_once_init_leave(&done, 1);
  }
  if (!g_file_test(OAKUK_NET_NETNS_DIR, G_FILE_TEST_IS_DIR))
    return oakuk_net_fail_errno(error, ENOENT, "create %s", OAKUK_NET_NETNS_DIR);
  return TRUE;
}

gboolean oakuk_net_ns_create(const char *name, int host_fd, OakukNetInside inside, gpointer data, int *ns_fd,
                             GError **error) {
  g_autofree char *path = g_build_filename(OAKUK_NET_NETNS_DIR, name, NULL);
  if (!netns_dir_ready(error))
    return FALSE;
  int fd = open(path, O_RDONLY | O_CREAT | O_EXCL, 0);
  if (fd < 0)
    return oakuk_net_fail_errno(error, errno, "create netns %s", name);
  close(fd);
  if (unshare(CLONE_NEWNET) < 0) {
    int e = errno;
    unlink(path);
    return oakuk_net_fail_errno(error, e, "create netns %s: unshare", name);
  }
  /* Still inside the new namespace: the caller's setup, then the bind mount that names it. */
  gboolean ok = inside == NULL || inside(data, error);
  *ns_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (ok && *ns_fd < 0)
    ok = oakuk_net_fail_errno(error, errno, "create netns %s: open", name);
  if (ok && mount("/proc/thread-self/ns/net", path, "none", MS_BIND, NULL) < 0)
    ok = oakuk_net_fail_errno(error, errno, "create netns %s: bind mount", name);
  if (setns(host_fd, CLONE_NEWNET) < 0)
    g_error("net: cannot return to the node namespace: %s", g_strerror(errno));
  if (!ok) {
    if (*ns_fd >= 0)
      close(*ns_fd);
    *ns_fd = -1;
    umount2(path, MNT_DETACH);
    unlink(path);
  }
  return ok;
}

gboolean oakuk_net_ns_delete(const char *name, GError **error) {
  g_autofree char *path = g_build_filename(OAKUK_NET_NETNS_DIR, name, NULL);
  if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
    return oakuk_net_fail_errno(error, errno, "delete netns %s: umount", name);
  if (unlink(path) < 0 && errno != ENOENT)
    return oakuk_net_fail_errno(error, errno, "delete netns %s", name);
  return TRUE;
}

int oakuk_net_ns_open(const char *name) {
  g_autofree char *path = g_build_filename(OAKUK_NET_NETNS_DIR, name, NULL);
  return open(path, O_RDONLY | O_CLOEXEC);
}

gboolean oakuk_net_sysctl(const char *path, const char *value, GError **error) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return oakuk_net_fail_errno(error, errno, "sysctl %s", path);
  gssize n = write(fd, value, strlen(value));
  int e = errno;
  close(fd);
  if (n < 0)
    return oakuk_net_fail_errno(error, e, "sysctl %s=%s", path, value);
  return TRUE;
}

int oakuk_net_ifindex(struct nl_sock *sk, const char *name) {
  struct rtnl_link *link = NULL;
  if (rtnl_link_get_kernel(sk, 0, name, &link) < 0)
    return 0;
  int idx = rtnl_link_get_ifindex(link);
  rtnl_link_put(link);
  return idx;
}

int oakuk_net_link_change(struct nl_sock *sk, int ifindex, struct rtnl_link *change) {
  struct rtnl_link *o = rtnl_link_alloc();
  rtnl_link_set_ifindex(o, ifindex);
  int r = rtnl_link_change(sk, o, change, 0);
  rtnl_link_put(o);
  rtnl_link_put(change);
  return r;
}

gboolean oakuk_net_link_up(struct nl_sock *sk, int ifindex, const char *alias, int master, GError **error) {
  struct rtnl_link *l = rtnl_link_alloc();
  rtnl_link_set_flags(l, IFF_UP);
  if (alias)
    rtnl_link_set_ifalias(l, alias);
  if (master > 0)
    rtnl_link_set_master(l, master);
  int r = oakuk_net_link_change(sk, ifindex, l);
  if (r < 0)
    return oakuk_net_fail_nl(error, r, "set link %d up", ifindex);
  return TRUE;
}

char *oakuk_net_link_alias(struct nl_sock *sk, const char *name) {
  struct rtnl_link *l = NULL;
  if (rtnl_link_get_kernel(sk, 0, name, &l) < 0)
    return NULL;
  char *alias = g_strdup(rtnl_link_get_ifalias(l));
  rtnl_link_put(l);
  return alias;
}

gboolean oakuk_net_link_set_alias(struct nl_sock *sk, const char *name, const char *alias, GError **error) {
  /* The kernel ignores IFLA_IFALIAS when creating a link; set it by name afterwards. */
  struct rtnl_link *l = rtnl_link_alloc();
  rtnl_link_set_name(l, name);
  rtnl_link_set_ifalias(l, alias);
  int r = rtnl_link_change(sk, l, l, 0);
  rtnl_link_put(l);
  if (r < 0)
    return oakuk_net_fail_nl(error, r, "set alias of %s", name);
  return TRUE;
}

gboolean oakuk_net_link_del(struct nl_sock *sk, const char *name, GError **error) {
  struct rtnl_link *l = rtnl_link_alloc();
  rtnl_link_set_name(l, name);
  int r = rtnl_link_delete(sk, l);
  rtnl_link_put(l);
  if (r < 0 && r != -NLE_NODEV && r != -NLE_OBJ_NOTFOUND)
    return oakuk_net_fail_nl(error, r, "delete link %s", name);
  return TRUE;
}

gboolean oakuk_net_link_set_mac(struct nl_sock *sk, int ifindex, const guint8 mac[6], GError **error) {
  struct rtnl_link *l = rtnl_link_alloc();
  struct nl_addr *a = nl_addr_build(AF_LLC, mac, 6);
  rtnl_link_set_addr(l, a);
  nl_addr_put(a);
  int r = oakuk_net_link_change(sk, ifindex, l);
  if (r < 0)
    return oakuk_net_fail_nl(error, r, "set the MAC of link %d", ifindex);
  return TRUE;
}

gboolean oakuk_net_bridge_add(struct nl_sock *sk, const char *name, GError **error) {
  struct rtnl_link *l = rtnl_link_alloc();
  rtnl_link_set_type(l, "bridge");
  rtnl_link_set_name(l, name);
  rtnl_link_set_flags(l, IFF_UP);
  int r = rtnl_link_add(sk, l, NLM_F_CREATE);
  rtnl_link_put(l);
  if (r < 0)
    return oakuk_net_fail_nl(error, r, "create bridge %s", name);
  return TRUE;
}

static struct nl_addr *mac_addr(const char *mac) {
  struct nl_addr *a = NULL;
  if (nl_addr_parse(mac, AF_LLC, &a) < 0)
    return NULL;
  return a;
}

gboolean oakuk_net_veth_add(struct nl_sock *sk, const char *host, int master, const char *alias,
                            const char *peer_name, const char *peer_mac, int peer_ns_fd, const char *ns_name,
                            GError **error) {
  struct rtnl_link *l = rtnl_link_veth_alloc();
  struct rtnl_link *peer = rtnl_link_veth_get_peer(l);
  rtnl_link_set_name(l, host);
  rtnl_link_set_flags(l, IFF_UP);
  if (master > 0)
    rtnl_link_set_master(l, master);
  rtnl_link_set_ifalias(l, alias);
  /* The peer is brought up from inside its namespace: IFF_UP on a veth peer at creation fails
   * with ENOTCONN on recent kernels. */
  rtnl_link_set_name(peer, peer_name);
  struct nl_addr *mac = mac_addr(peer_mac);
  rtnl_link_set_addr(peer, mac);
  nl_addr_put(mac);
  rtnl_link_set_ns_fd(peer, peer_ns_fd);
  rtnl_link_put(peer);
  int r = rtnl_link_add(sk, l, NLM_F_CREATE | NLM_F_EXCL);
  rtnl_link_veth_release(l);
  if (r < 0)
    return oakuk_net_fail_nl(error, r, "create veth %s in netns %s", host, ns_name);
  if (!oakuk_net_link_set_alias(sk, host, alias, error)) {
    (void)oakuk_net_link_del(sk, host, NULL);
    return FALSE;
  }
  return TRUE;
}

gboolean oakuk_net_vxlan_add(struct nl_sock *sk, guint32 vni, guint32 port, guint32 local, GError **error) {
  struct rtnl_link *l = rtnl_link_vxlan_alloc();
  guint8 mac[6];
  guint32 be = htonl(local);
  oakuk_net_vx_mac(local, mac);
  struct nl_addr *la = nl_addr_build(AF_INET, &be, 4);
  struct nl_addr *ma = nl_addr_build(AF_LLC, mac, 6);
  rtnl_link_set_name(l, OAKUK_NET_VX);
  rtnl_link_vxlan_set_id(l, vni);
  rtnl_link_vxlan_set_port(l, port);
  rtnl_link_vxlan_set_local(l, la);
  rtnl_link_vxlan_set_learning(l, 0);
  rtnl_link_set_addr(l, ma);
  rtnl_link_set_flags(l, IFF_UP);
  int r = rtnl_link_add(sk, l, NLM_F_CREATE);
  nl_addr_put(la);
  nl_addr_put(ma);
  rtnl_link_put(l);
  if (r < 0)
    return oakuk_net_fail_nl(error, r, "create vxlan %s (vni %u)", OAKUK_NET_VX, vni);
  return TRUE;
}

static struct nl_addr *ip_addr(guint32 ip, guint prefix) {
  guint32 be = htonl(ip);
  struct nl_addr *a = nl_addr_build(AF_INET, &be, 4);
  nl_addr_set_prefixlen(a, (int)prefix);
  return a;
}

gboolean oakuk_net_addr_add(struct nl_sock *sk, int ifindex, guint32 ip, guint prefix, const char *ifname,
                            GError **error) {
  struct rtnl_addr *a = rtnl_addr_alloc();
  struct nl_addr *local = ip_addr(ip, prefix);
  rtnl_addr_set_ifindex(a, ifindex);
  rtnl_addr_set_local(a, local);
  int r = rtnl_addr_add(sk, a, NLM_F_CREATE | NLM_F_REPLACE);
  nl_addr_put(local);
  rtnl_addr_put(a);
  if (r < 0) {
    g_autofree char *s = oakuk_net_ip_str(ip);
    return oakuk_net_fail_nl(error, r, "add address %s/%u to %s", s, prefix, ifname);
  }
  return TRUE;
}

static struct rtnl_route *route_new(guint32 dst, guint prefix, int ifindex) {
  struct rtnl_route *rt = rtnl_route_alloc();
  struct nl_addr *d = ip_addr(dst, prefix);
  rtnl_route_set_family(rt, AF_INET);
  rtnl_route_set_table(rt, RT_TABLE_MAIN);
  rtnl_route_set_dst(rt, d);
  nl_addr_put(d);
  (void)ifindex;
  return rt;
}

gboolean oakuk_net_route_add(struct nl_sock *sk, guint32 dst, guint prefix, guint32 gw, int ifindex,
                             gboolean onlink, GError **error) {
  struct rtnl_route *rt = route_new(dst, prefix, ifindex);
  struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
  rtnl_route_nh_set_ifindex(nh, ifindex);
  if (gw != 0) {
    struct nl_addr *g = ip_addr(gw, 32);
    rtnl_route_nh_set_gateway(nh, g);
    nl_addr_put(g);
    if (onlink)
      rtnl_route_nh_set_flags(nh, RTNH_F_ONLINK);
  } else {
    rtnl_route_set_scope(rt, RT_SCOPE_LINK);
  }
  rtnl_route_add_nexthop(rt, nh);
  int r = rtnl_route_add(sk, rt, NLM_F_CREATE | NLM_F_REPLACE);
  rtnl_route_put(rt);
  if (r < 0) {
    g_autofree char *s = oakuk_net_ip_str(dst);
    return oakuk_net_fail_nl(error, r, "add route %s/%u", s, prefix);
  }
  return TRUE;
}

gboolean oakuk_net_route_del(struct nl_sock *sk, guint32 dst, guint prefix, int ifindex, GError **error) {
  struct rtnl_route *rt = route_new(dst, prefix, ifindex);
  rtnl_route_set_scope(rt, RT_SCOPE_NOWHERE);
  int r = rtnl_route_delete(sk, rt, 0);
  rtnl_route_put(rt);
  if (r < 0 && r != -NLE_OBJ_NOTFOUND && r != -NLE_NODEV) {
    g_autofree char *s = oakuk_net_ip_str(dst);
    return oakuk_net_fail_nl(error, r, "delete route %s/%u", s, prefix);
  }
  return TRUE;
}

gboolean oakuk_net_neigh_set(struct nl_sock *sk, int ifindex, guint32 ip, const guint8 mac[6], gboolean add,
                             GError **error) {
  struct rtnl_neigh *n = rtnl_neigh_alloc();
  struct nl_addr *d = ip_addr(ip, 32);
  struct nl_addr *m = nl_addr_build(AF_LLC, mac, 6);
  rtnl_neigh_set_family(n, AF_INET);
  rtnl_neigh_set_ifindex(n, ifindex);
  rtnl_neigh_set_dst(n, d);
  rtnl_neigh_set_lladdr(n, m);
  rtnl_neigh_set_state(n, NUD_PERMANENT);
  int r = add ? rtnl_neigh_add(sk, n, NLM_F_CREATE | NLM_F_REPLACE) : rtnl_neigh_delete(sk, n, 0);
  nl_addr_put(d);
  nl_addr_put(m);
  rtnl_neigh_put(n);
  if (r < 0 && !(!add && (r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV))) {
    g_autofree char *s = oakuk_net_ip_str(ip);
    return oakuk_net_fail_nl(error, r, "%s neighbour %s on %s", add ? "add" : "delete", s, OAKUK_NET_VX);
  }
  return TRUE;
}

gboolean oakuk_net_fdb_set(struct nl_sock *sk, int ifindex, const guint8 mac[6], guint32 dst, gboolean add,
                           GError **error) {
  struct rtnl_neigh *n = rtnl_neigh_alloc();
  struct nl_addr *d = ip_addr(dst, 32);
  struct nl_addr *m = nl_addr_build(AF_LLC, mac, 6);
  /* dst first: it would otherwise refuse an AF_INET address on an AF_BRIDGE entry. */
  rtnl_neigh_set_dst(n, d);
  rtnl_neigh_set_family(n, AF_BRIDGE);
  rtnl_neigh_set_ifindex(n, ifindex);
  rtnl_neigh_set_lladdr(n, m);
  rtnl_neigh_set_state(n, NUD_PERMANENT);
  rtnl_neigh_set_flags(n, NTF_SELF);
  int r = add ? rtnl_neigh_add(sk, n, NLM_F_CREATE | NLM_F_APPEND) : rtnl_neigh_delete(sk, n, 0);
  nl_addr_put(d);
  nl_addr_put(m);
  rtnl_neigh_put(n);
  if (r == -NLE_EXIST && add)
    return TRUE;
  if (r < 0 && !(!add && (r == -NLE_OBJ_NOTFOUND || r == -NLE_NODEV))) {
    g_autofree char *s = oakuk_net_ip_str(dst);
    return oakuk_net_fail_nl(error, r, "%s fdb entry %02x:%02x:%02x:%02x:%02x:%02x dst %s on %s",
                             add ? "add" : "delete", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], s,
                             OAKUK_NET_VX);
  }
  return TRUE;
}

int oakuk_net_tap_create(const char *name, GError **error) {
  struct ifreq ifr = {0};
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    oakuk_net_fail_errno(error, errno, "create tap %s: open /dev/net/tun", name);
    return -1;
  }
  g_strlcpy(ifr.ifr_name, name, IFNAMSIZ);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETPERSIST, 1) < 0) {
    int e = errno;
    close(fd);
    oakuk_net_fail_errno(error, e, "create tap %s", name);
    return -1;
  }
  close(fd);
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int idx = -1;
  if (s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) == 0 && ioctl(s, SIOCGIFINDEX, &ifr) == 0)
      idx = ifr.ifr_ifindex;
  }
  if (idx < 0)
    oakuk_net_fail_errno(error, errno, "set tap %s up", name);
  if (s >= 0)
    close(s);
  return idx;
}

gboolean oakuk_net_redirect(struct nl_sock *sk, int from, int to, const char *what, GError **error) {
  struct rtnl_qdisc *q = rtnl_qdisc_alloc();
  rtnl_tc_set_ifindex(TC_CAST(q), from);
  rtnl_tc_set_parent(TC_CAST(q), TC_H_INGRESS);
  rtnl_tc_set_handle(TC_CAST(q), TC_H_MAKE(TC_H_INGRESS, 0));
  rtnl_tc_set_kind(TC_CAST(q), "ingress");
  int r = rtnl_qdisc_add(sk, q, NLM_F_CREATE);
  rtnl_qdisc_put(q);
  if (r < 0 && r != -NLE_EXIST)
    return oakuk_net_fail_nl(error, r, "add ingress qdisc on %s", what);

  struct rtnl_cls *c = rtnl_cls_alloc();
  struct rtnl_act *a = rtnl_act_alloc();
  rtnl_tc_set_ifindex(TC_CAST(c), from);
  rtnl_tc_set_parent(TC_CAST(c), TC_H_MAKE(TC_H_INGRESS, 0));
  rtnl_tc_set_kind(TC_CAST(c), "u32");
  rtnl_cls_set_prio(c, 1);
  rtnl_cls_set_protocol(c, ETH_P_ALL);
  rtnl_u32_set_cls_terminal(c);
  rtnl_u32_add_key_uint32(c, 0, 0, 0, 0);
  rtnl_tc_set_kind(TC_CAST(a), "mirred");
  rtnl_mirred_set_action(a, TCA_EGRESS_REDIR);
  rtnl_mirred_set_policy(a, TC_ACT_STOLEN);
  rtnl_mirred_set_ifindex(a, (uint32_t)to);
  rtnl_u32_add_action(c, a);
  r = rtnl_cls_add(sk, c, NLM_F_CREATE | NLM_F_EXCL);
  rtnl_act_put(a);
  rtnl_cls_put(c);
  if (r < 0)
    return oakuk_net_fail_nl(error, r, "add mirred redirect %s", what);
  return TRUE;
}
