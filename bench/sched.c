/* bench/sched: decisions per second of oakuk_sched_select_node / _select_cluster over deterministic
 * pseudo-random candidate lists, side by side with a pure-Python reference (sched-reference.py)
 * deciding over the same JSON. Both must choose the same target, or the benchmark fails. */
#include <oakuk/oakuk.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef SCHED_REFERENCE
#define SCHED_REFERENCE "sched-reference.py"
#endif

/* The service every decision places: a unikernel (two kernels) preferred, a container otherwise. */
static const char service_json[] =
    "{\"microserviceID\":\"bench\",\"microservice_name\":\"web\",\"microservice_namespace\":\"bench\","
    "\"virtualization\":[\"unikernel\",\"container\"],\"arch\":[\"amd64\",\"arm64\"],"
    "\"code\":{\"unikernel\":\"http://img/web-amd64.tar.gz,http://img/web-arm64.tar.gz\","
    "\"container\":\"registry.local/web:1\"},\"memory\":512,\"vcpus\":2,\"emulation\":\"allow\"}";

static guint64 rng_state;

static guint32 rnd(guint32 bound) {
  rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
  return (guint32)((rng_state >> 33) % bound);
}

static const char *other_arch(const char *arch) {
  return strcmp(arch, "amd64") == 0 ? "arm64" : "amd64";
}

/* A node report: amd64 or arm64; KVM (with containers), TCG (maybe emulating the other arch), or
 * container-only. */
static char *node_json(size_t i) {
  const char *arch = rnd(10) < 7 ? "amd64" : "arm64";
  guint32 kind = rnd(10);
  int vcpus = 1 + (int)rnd(16);
  int memory = 256 + (int)rnd(32) * 512;
  double cpu = rnd(1000) / 10.0;
  char cpubuf[G_ASCII_DTOSTR_BUF_SIZE];
  g_ascii_formatd(cpubuf, sizeof cpubuf, "%.1f", cpu);
  g_autofree char *virt = NULL, *uk = NULL;
  if (kind < 4) {
    virt = g_strdup("\"container\",\"unikernel\"");
    uk = g_strdup(",\"unikernel\":{\"accel\":\"kvm\",\"qemu_version\":\"7.2.0\",\"emulated_archs\":[]}");
  } else if (kind < 7) {
    virt = g_strdup("\"unikernel\"");
    g_autofree char *emulated = rnd(2) ? g_strdup_printf("\"%s\"", other_arch(arch)) : g_strdup("");
    uk = g_strdup_printf(
        ",\"unikernel\":{\"accel\":\"tcg\",\"qemu_version\":\"7.2.0\",\"emulated_archs\":[%s]}", emulated);
  } else {
    virt = g_strdup("\"container\"");
    uk = g_strdup("");
  }
  return g_strdup_printf(
      "{\"id\":\"node-%05zu\",\"host\":\"host-%05zu\",\"ip\":\"10.18.%zu.1\",\"architecture\":\"%s\","
      "\"cpu_percent\":%s,\"vcpus\":%d,\"memory\":%d,\"memory_total\":%d,\"memory_percent\":"
      "50.0,\"virtualization\":[%s]%s,\"instances\":[]}",
      i, i, i % 256, arch, cpubuf, vcpus, memory, memory * 2, virt, uk);
}

static void append_per_arch(GString *s, const char *arch, bool *first) {
  static const char *const accels[] = {"\"kvm\"", "\"tcg\"", NULL};
  const char *accel = accels[rnd(3)];
  g_string_append_printf(
      s, "%s\"%s\":{\"cpu_percent\":%u.5,\"cpu_cores\":%u,\"memory\":40.0,\"memory_in_mb\":%u",
      *first ? "" : ",", arch, rnd(100), 1 + rnd(64), 256 + rnd(64) * 512);
  if (accel)
    g_string_append_printf(s, ",\"accel\":%s", accel);
  g_string_append_c(s, '}');
  *first = false;
}

/* A cluster aggregate: container and/or unikernel nodes of one or both archs. */
static char *cluster_json(void) {
  guint32 kind = rnd(3); /* 0 container only, 1 unikernel only, 2 both */
  bool amd = rnd(4) != 0, arm = !amd || rnd(2);
  GString *s = g_string_new(NULL);
  g_string_append_printf(s,
                         "{\"cpu_percent\":%u.25,\"memory_percent\":40.0,\"cpu_cores\":%u,"
                         "\"cumulative_memory_in_mb\":%u,\"number_of_nodes\":4,\"active_nodes\":4,"
                         "\"virtualization\":[%s],\"arch\":[%s%s%s],\"aggregation_per_architecture\":{",
                         rnd(100), 4 + rnd(256), 1024 + rnd(256) * 512,
                         kind == 0   ? "\"docker\""
                         : kind == 1 ? "\"unikernel\""
                                     : "\"docker\",\"unikernel\"",
                         amd ? "\"amd64\"" : "", amd && arm ? "," : "", arm ? "\"arm64\"" : "");
  bool first = true;
  if (kind != 0 && amd)
    append_per_arch(s, "amd64", &first);
  if (kind != 0 && arm)
    append_per_arch(s, "arm64", &first);
  g_string_append(s, "},\"jobs\":[]}");
  return g_string_free(s, FALSE);
}

typedef struct {
  bool cluster;
  size_t n;
  GPtrArray *json;   /* char* per candidate */
  gpointer *objects; /* oakuk_node_report* / oakuk_cluster_aggregate* */
  char **ids;
} Input;

static Input *input_new(bool cluster, size_t n) {
  Input *in = g_new0(Input, 1);
  in->cluster = cluster;
  in->n = n;
  in->json = g_ptr_array_new_with_free_func(g_free);
  in->objects = g_new0(gpointer, n);
  in->ids = g_new0(char *, n + 1);
  rng_state = 0x5eed0000ULL + n + (cluster ? 7 : 0);
  for (size_t i = 0; i < n; i++) {
    char *text = cluster ? cluster_json() : node_json(i);
    oakuk_error *e = NULL;
    if (cluster) {
      oakuk_cluster_aggregate *agg = oakuk_cluster_aggregate_from_json(text, (size_t)-1, &e);
      in->ids[i] = g_strdup_printf("cluster-%05zu", i);
      if (agg)
        oakuk_cluster_aggregate_set_identity(agg, in->ids[i], in->ids[i]);
      in->objects[i] = agg;
    } else {
      in->objects[i] = oakuk_node_report_from_json(text, (size_t)-1, &e);
      in->ids[i] = g_strdup_printf("node-%05zu", i);
    }
    if (e != NULL) {
      fprintf(stderr, "bench-sched: generated candidate %zu does not parse: %s\n%s\n", i,
              oakuk_error_message(e), text);
      exit(1);
    }
    g_ptr_array_add(in->json, text);
  }
  return in;
}

static void input_free(Input *in) {
  for (size_t i = 0; i < in->n; i++) {
    if (in->cluster)
      oakuk_cluster_aggregate_unref(in->objects[i]);
    else
      oakuk_node_report_unref(in->objects[i]);
  }
  g_free(in->objects);
  g_strfreev(in->ids);
  g_ptr_array_unref(in->json);
  g_free(in);
}

/* Writes {"service":..., "candidates":[...]} for the reference; returns the file name. */
static char *write_input(const Input *in) {
  GString *s = g_string_new("{\"service\":");
  g_string_append(s, service_json);
  g_string_append(s, ",\"candidates\":[");
  for (size_t i = 0; i < in->n; i++) {
    if (in->cluster)
      g_string_append_printf(s, "%s{\"id\":\"%s\",\"name\":\"%s\",\"aggregate\":%s}", i ? "," : "",
                             in->ids[i], in->ids[i], (const char *)g_ptr_array_index(in->json, i));
    else
      g_string_append_printf(s, "%s%s", i ? "," : "", (const char *)g_ptr_array_index(in->json, i));
  }
  g_string_append(s, "]}");
  GError *err = NULL;
  char *path = NULL;
  int fd = g_file_open_tmp("bench-sched-XXXXXX.json", &path, &err);
  if (fd < 0 || !g_file_set_contents(path, s->str, (gssize)s->len, &err)) {
    fprintf(stderr, "bench-sched: temp file: %s\n", err->message);
    exit(1);
  }
  close(fd);
  g_string_free(s, TRUE);
  return path;
}

static int decide(const oakuk_microservice *ms, const Input *in, oakuk_placement **out) {
  if (in->cluster)
    return oakuk_sched_select_cluster(out, ms, (oakuk_cluster_aggregate *const *)in->objects, in->n, NULL,
                                      NULL, NULL, NULL);
  return oakuk_sched_select_node(out, ms, (oakuk_node_report *const *)in->objects, in->n, NULL, NULL, NULL,
                                 NULL);
}

/* CPU time of this process in microseconds: the machine may be busy with other work, and the
 * reference measures the same way (time.process_time). */
static double cpu_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Runs decisions for at least min_seconds of CPU time; returns microseconds per decision. */
static double time_ours(const oakuk_microservice *ms, const Input *in, double min_seconds, bool explain) {
  guint64 iterations = 0;
  double start = cpu_us(), now = start;
  do {
    for (int k = 0; k < 16; k++) {
      oakuk_placement *p = NULL;
      decide(ms, in, &p);
      for (size_t i = 0; explain && i < oakuk_placement_explanation_count(p); i++)
        if (oakuk_placement_explanation(p, i) == NULL)
          abort();
      oakuk_placement_unref(p);
    }
    iterations += 16;
    now = cpu_us();
  } while (now - start < min_seconds * 1e6);
  return (now - start) / (double)iterations;
}

/* Runs the reference; fills its chosen id and returns microseconds per decision. */
static double time_reference(const char *script, const char *path, const char *kind, size_t n,
                             char **chosen) {
  g_autofree char *python = g_find_program_in_path("python3");
  g_autofree char *iterations = g_strdup_printf("%zu", MAX((size_t)3, 100000 / n));
  if (python == NULL) {
    fprintf(stderr, "bench-sched: python3 not found in PATH\n");
    exit(1);
  }
  char *argv[] = {python, (char *)script, (char *)path, (char *)kind, iterations, NULL};
  g_autofree char *out = NULL, *err_text = NULL;
  int status = 0;
  GError *err = NULL;
  if (!g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err_text, &status, &err) ||
      !g_spawn_check_wait_status(status, &err)) {
    fprintf(stderr, "bench-sched: %s %s: %s\n%s", python, script, err->message, err_text ? err_text : "");
    exit(1);
  }
  double us = -1;
  g_auto(GStrv) lines = g_strsplit(out, "\n", -1);
  for (char **l = lines; *l; l++) {
    if (g_str_has_prefix(*l, "chosen "))
      *chosen = g_strdup(*l + 7);
    else if (g_str_has_prefix(*l, "us_per_decision "))
      us = g_ascii_strtod(*l + 16, NULL);
  }
  if (us <= 0 || *chosen == NULL) {
    fprintf(stderr, "bench-sched: unexpected output from %s:\n%s", script, out);
    exit(1);
  }
  return us;
}

static bool run(const oakuk_microservice *ms, const char *script, bool cluster, size_t n) {
  Input *in = input_new(cluster, n);
  oakuk_placement *p = NULL;
  decide(ms, in, &p);
  const char *ours_chosen = oakuk_placement_ok(p) ? oakuk_placement_target(p) : "-";
  double ours = time_ours(ms, in, 0.3, false);
  double explained = time_ours(ms, in, 0.2, true);
  g_autofree char *path = write_input(in);
  g_autofree char *ref_chosen = NULL;
  double ref = time_reference(script, path, cluster ? "cluster" : "node", n, &ref_chosen);
  g_unlink(path);
  const char *what = cluster ? "select_cluster" : "select_node";
  printf("sched %s n=%zu: ours %.1f us/decision (%.0f/s), reference %.1f us/decision, ratio %.1fx\n", what, n,
         ours, 1e6 / ours, ref, ref / ours);
  printf("# sched %s n=%zu: with the explanation formatted %.1f us/decision; chose %s (reference %s)\n", what,
         n, explained, ours_chosen, ref_chosen);
  bool same = strcmp(ours_chosen, ref_chosen) == 0;
  if (!same)
    fprintf(stderr, "bench-sched: %s n=%zu: liboakuk chose %s, the reference %s\n", what, n, ours_chosen,
            ref_chosen);
  oakuk_placement_unref(p);
  input_free(in);
  return same;
}

int main(int argc, char **argv) {
  const char *script = argc > 1 ? argv[1] : SCHED_REFERENCE;
  oakuk_error *e = NULL;
  oakuk_microservice *ms = oakuk_microservice_parse(service_json, (size_t)-1, &e);
  if (ms == NULL) {
    fprintf(stderr, "bench-sched: service: %s\n", oakuk_error_message(e));
    return 1;
  }
  static const size_t nodes[] = {100, 1000, 10000};
  static const size_t clusters[] = {10, 100, 1000};
  bool ok = true;
  for (size_t i = 0; i < G_N_ELEMENTS(nodes); i++)
    ok = run(ms, script, false, nodes[i]) && ok;
  for (size_t i = 0; i < G_N_ELEMENTS(clusters); i++)
    ok = run(ms, script, true, clusters[i]) && ok;
  oakuk_microservice_unref(ms);
  return ok ? 0 : 1;
}
