/* container-deploy: deploy -> RUNNING of a busybox container whose image is already cached, with
 * the container runtime, vs the same config.json and rootfs started by hand with `runc run -d`.
 * Starts its own docker-registry on 127.0.0.1 and pushes the image with the library; needs root. */
#include <oakuk/oakuk.h>

#include <gio/gio.h>
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROUNDS 10

static int32_t last_status = -1;

static void on_status(const char *instance, int32_t status, const char *detail, void *data) {
  last_status = status;
}

static void wait_for(int32_t status) {
  gint64 end = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
  while (last_status != status) {
    if (last_status == OAKUK_STATUS_FAILED || g_get_monotonic_time() > end) {
      fprintf(stderr, "container-deploy: waiting for %s, got %s\n", oakuk_status_name(status),
              oakuk_status_name(last_status));
      exit(1);
    }
    g_main_context_iteration(NULL, TRUE);
  }
}

static gboolean sh(const char *const *argv) {
  int st;
  return g_spawn_sync(NULL, (char **)argv, NULL,
                      G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL, NULL,
                      NULL, NULL, NULL, &st, NULL) &&
         g_spawn_check_wait_status(st, NULL);
}

int main(void) {
  if (getuid() != 0) {
    printf("container-deploy: skipped (needs root)\n");
    return 0;
  }
  g_autofree char *work = g_dir_make_tmp("oakuk-bench-ctr-XXXXXX", NULL);
  g_autoptr(GSocket) s =
      g_socket_new(G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, NULL);
  g_autoptr(GSocketAddress) a = g_inet_socket_address_new_from_string("127.0.0.1", 0);
  g_socket_bind(s, a, FALSE, NULL);
  g_autoptr(GSocketAddress) bound = g_socket_get_local_address(s, NULL);
  g_autofree char *addr =
      g_strdup_printf("127.0.0.1:%u", g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(bound)));
  g_socket_close(s, NULL);
  g_autofree char *cfg = g_build_filename(work, "registry.yml", NULL);
  g_autofree char *yml =
      g_strdup_printf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: "
                      "%s/registry\nhttp:\n  addr: %s\n",
                      work, addr);
  g_file_set_contents(cfg, yml, -1, NULL);
  const char *rargv[] = {"/usr/bin/docker-registry", "serve", cfg, NULL};
  GPid reg = 0;
  if (!g_spawn_async(NULL, (char **)rargv, NULL,
                     G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                     NULL, NULL, &reg, NULL))
    return 1;
  g_usleep(1000000);
  g_autofree char *rootfs = g_build_filename(work, "tree", NULL);
  g_autofree char *bin = g_build_filename(rootfs, "bin", NULL);
  g_mkdir_with_parents(bin, 0755);
  g_autofree char *bb = g_build_filename(bin, "busybox", NULL);
  const char *cp[] = {"cp", "/bin/busybox", bb, NULL};
  sh(cp);
  g_autofree char *shl = g_build_filename(bin, "sleep", NULL);
  symlink("busybox", shl);
  oakuk_error *err = NULL;
  int rc =
      oakuk_container_build_rootfs_image(rootfs, addr, "bench/busybox", "1", NULL, NULL, NULL, NULL, &err);
  if (rc) {
    fprintf(stderr, "container-deploy: push: %s\n", oakuk_error_message(err));
    kill(reg, SIGTERM);
    return 1;
  }
  g_autofree char *image = g_strdup_printf("%s/bench/busybox:1", addr);
  g_autofree char *state = g_build_filename(work, "state", NULL);
  oakuk_runtime *rt = oakuk_container_runtime_new(state, NULL, &err);
  if (!rt)
    return 1;
  oakuk_runtime_set_status_callback(rt, on_status, NULL);
  g_autofree char *refcfg = g_build_filename(work, "ref", "config.json", NULL);
  double ours = 0, ref = 0;
  for (int r = -1; r < ROUNDS; r++) { /* round -1 pulls and warms the cache */
    oakuk_instance_spec *spec = oakuk_instance_spec_new("bench.ctr.instance.0");
    oakuk_instance_spec_set_virt(spec, OAKUK_VIRT_CONTAINER);
    oakuk_instance_spec_set_image(spec, image);
    oakuk_instance_spec_add_arg(spec, "sleep");
    oakuk_instance_spec_add_arg(spec, "60");
    gint64 t0 = g_get_monotonic_time();
    if (oakuk_runtime_deploy(rt, spec, &err))
      return 1;
    wait_for(OAKUK_STATUS_RUNNING);
    gint64 t1 = g_get_monotonic_time();
    if (r >= 0)
      ours += (double)(t1 - t0) / 1000.0;
    if (r == -1) { /* the reference uses the very same config.json, rootfs = the cached image */
      g_autofree char *c =
          g_build_filename(state, "instances", "bench.ctr.instance.0", "bundle", "config.json", NULL);
      g_autofree char *text = NULL;
      g_file_get_contents(c, &text, NULL, NULL);
      g_autofree char *refdir = g_path_get_dirname(refcfg);
      g_mkdir_with_parents(refdir, 0755);
      g_autofree char *lower = g_build_filename(refdir, "rootfs", NULL);
      const char *cpr[] = {"cp", "-a", rootfs, lower, NULL};
      sh(cpr);
      GString *t = g_string_new(text);
      g_string_replace(t, "/oakuk/bench.ctr.instance.0", "/oakuk-bench-ref", 0);
      g_file_set_contents(refcfg, t->str, -1, NULL);
      g_string_free(t, TRUE);
    }
    oakuk_instance_spec_unref(spec);
    oakuk_runtime_undeploy(rt, "bench.ctr.instance.0", NULL);
    wait_for(OAKUK_STATUS_UNDEPLOYED);
    if (r < 0)
      continue;
    g_autofree char *refdir = g_path_get_dirname(refcfg);
    g_autofree char *root = g_build_filename(work, "refroot", NULL);
    const char *run[] = {"runc", "--root", root, "run", "-d", "--bundle", refdir, "bench-ref", NULL};
    gint64 r0 = g_get_monotonic_time();
    gboolean ok = sh(run);
    gint64 r1 = g_get_monotonic_time();
    const char *del[] = {"runc", "--root", root, "delete", "--force", "bench-ref", NULL};
    sh(del);
    if (!ok) {
      fprintf(stderr, "container-deploy: runc run failed\n");
      return 1;
    }
    ref += (double)(r1 - r0) / 1000.0;
  }
  oakuk_runtime_unref(rt);
  kill(reg, SIGTERM);
  waitpid(reg, NULL, 0);
  const char *rm[] = {"rm", "-rf", work, NULL};
  sh(rm);
  ours /= ROUNDS;
  ref /= ROUNDS;
  printf("container-deploy: ours %.1f ms, reference %.1f ms, ratio %.2f\n", ours, ref, ours / ref);
  return 0;
}
