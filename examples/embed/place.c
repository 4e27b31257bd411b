/* place — decide where each microservice of a deployment descriptor would run.
 *
 *   place <descriptor.json> <nodes.json>
 *
 * nodes.json is a JSON array of node reports (the documents nodes publish on
 * nodes/<id>/information). Services are placed one after the other with reservations, so each sees
 * the resources the previous ones took. Exit status: 0 all placed, 1 some not placed, 2 bad input.
 *
 * This is how an orchestrator embeds liboakuk's scheduler: only <oakuk/oakuk.h> is needed;
 * json-glib merely splits the array into single report documents. */
#include <json-glib/json-glib.h>
#include <oakuk/oakuk.h>
#include <stdio.h>
#include <stdlib.h>

static void print_error(const char *what, oakuk_error *error) {
  size_t n = oakuk_error_item_count(error);
  if (n == 0)
    fprintf(stderr, "%s: %s\n", what, oakuk_error_message(error));
  for (size_t i = 0; i < n; i++)
    fprintf(stderr, "%s: %s\n", oakuk_error_item_path(error, i), oakuk_error_item_message(error, i));
  oakuk_error_free(error);
}

/* Reads the array of node reports; returns the number read or -1 (after printing why). */
static long load_nodes(const char *path, oakuk_node_report ***out) {
  GError *gerror = NULL;
  JsonParser *parser = json_parser_new();
  long count = -1;
  if (!json_parser_load_from_file(parser, path, &gerror)) {
    fprintf(stderr, "%s: %s\n", path, gerror->message);
    g_error_free(gerror);
    goto done;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (root == NULL || !JSON_NODE_HOLDS_ARRAY(root)) {
    fprintf(stderr, "%s: expected a JSON array of node reports\n", path);
    goto done;
  }
  JsonArray *array = json_node_get_array(root);
  guint n = json_array_get_length(array);
  *out = calloc(n + 1, sizeof **out);
  for (count = 0; count < (long)n; count++) {
    char *doc = json_to_string(json_array_get_element(array, (guint)count), FALSE);
    oakuk_error *error = NULL;
    (*out)[count] = oakuk_node_report_from_json(doc, (size_t)-1, &error);
    g_free(doc);
    if ((*out)[count] == NULL) {
      char *what = g_strdup_printf("%s: node [%ld]", path, count);
      print_error(what, error);
      g_free(what);
      for (long i = 0; i < count; i++)
        oakuk_node_report_unref((*out)[i]);
      free(*out);
      count = -1;
      break;
    }
  }
done:
  g_object_unref(parser);
  return count;
}

/* Places one service; prints its line; returns true when placed. */
static bool place(const oakuk_microservice *ms, oakuk_node_report **nodes, size_t n,
                  oakuk_reservations *res) {
  const char *name = oakuk_microservice_service_name(ms);
  if (name == NULL)
    name = oakuk_microservice_name(ms);
  char *key = oakuk_instance_name(name, 0);
  oakuk_placement *p = NULL;
  oakuk_error *error = NULL;
  int rc = oakuk_sched_select_node(&p, ms, nodes, n, res, key, NULL, &error);
  oakuk_free(key);
  if (p == NULL) {
    print_error(name, error);
    return false;
  }
  oakuk_error_free(error); /* set for OAKUK_ENOCAPACITY; the placement explains it */
  if (rc == 0) {
    const char *accel = oakuk_accel_name(oakuk_placement_accel(p));
    const char *arch = oakuk_placement_arch(p);
    if (arch == NULL) /* a container without arch[] runs in the node's own architecture */
      arch = oakuk_node_report_architecture(nodes[oakuk_placement_index(p)]);
    printf("%s: %s (%s %s%s%s)\n", name, oakuk_placement_target(p), oakuk_virt_name(oakuk_placement_virt(p)),
           arch, accel ? " via " : "", accel ? accel : "");
  } else {
    printf("%s: not placed (%s)\n", name, oakuk_instance_status_name(oakuk_placement_status(p)));
  }
  /* Why: one line per candidate node, chosen or not. */
  for (size_t i = 0; i < oakuk_placement_explanation_count(p); i++)
    printf("    %s\n", oakuk_placement_explanation(p, i));
  oakuk_placement_unref(p);
  return rc == 0;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s <descriptor.json> <nodes.json>\n", argv[0]);
    return 2;
  }
  oakuk_error *error = NULL;
  oakuk_descriptor *desc = oakuk_descriptor_parse_file(argv[1], &error);
  if (desc == NULL) {
    print_error(argv[1], error);
    return 2;
  }
  oakuk_node_report **nodes = NULL;
  long n = load_nodes(argv[2], &nodes);
  if (n < 0) {
    oakuk_descriptor_unref(desc);
    return 2;
  }

  oakuk_reservations *res = oakuk_reservations_new();
  bool all_placed = true;
  for (size_t a = 0; a < oakuk_descriptor_application_count(desc); a++) {
    oakuk_application *app = oakuk_descriptor_application(desc, a);
    for (size_t m = 0; m < oakuk_application_microservice_count(app); m++)
      all_placed &= place(oakuk_application_microservice(app, m), nodes, (size_t)n, res);
  }

  oakuk_reservations_unref(res);
  for (long i = 0; i < n; i++)
    oakuk_node_report_unref(nodes[i]);
  free(nodes);
  oakuk_descriptor_unref(desc);
  return all_placed ? 0 : 1;
}
