/* `oakuk completion bash`: a bash completion script made from the command table and from each
 * command's own --help (its options, which of them take a value, and the words of its usage line),
 * so that it follows the commands instead of a copy of them. */
#include "client.h"

#include <stdio.h>
#include <string.h>

#define NO_ENTRY                                                                                             \
  { NULL, 0, 0, 0, NULL, NULL, NULL }

/* What a command's --help says: its options ("--url"), those with a value ("--url=URL") and the
 * parameters of its usage line ("create NAME --role ROLE | list | remove NAME"). */
typedef struct {
  GString *opts, *args;
  char *usage;
} Spec;

static char *command_help(const char *name, GError **error) {
  const char *argv[] = {"/proc/self/exe", name, "--help", NULL};
  g_auto(GStrv) env = g_environ_setenv(g_get_environ(), "LC_ALL", "C", TRUE);
  char *out = NULL;
  int status = 0;
  if (!g_spawn_sync(NULL, (char **)argv, env, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &out, NULL, &status,
                    error))
    return NULL;
  if (!g_spawn_check_wait_status(status, error)) {
    g_free(out);
    return NULL;
  }
  return out;
}

/* "  -o, --output=FORMAT   ..." and "  --url=URL  ...": the option names, and NAME=VALUE for those
 * that take a value. */
static void parse_option_line(const char *line, Spec *spec) {
  g_auto(GStrv) words = g_strsplit_set(line, " \t", -1);
  const char *short_name = NULL; /* "-o" of "-o, --output=FORMAT" */
  for (char **w = words; *w != NULL && **w == '-'; w++) {
    char *word = *w;
    gsize len = strlen(word);
    if (word[len - 1] == ',')
      word[len - 1] = '\0';
    char *eq = strchr(word, '=');
    g_autofree char *name = eq ? g_strndup(word, (gsize)(eq - word)) : g_strdup(word);
    g_string_append_printf(spec->opts, "%s%s", spec->opts->len ? " " : "", name);
    if (strlen(word) == 2)
      short_name = word;
    if (eq == NULL)
      continue;
    g_string_append_printf(spec->args, "%s%s", spec->args->len ? " " : "", word);
    if (short_name != NULL) /* the short form takes the value too */
      g_string_append_printf(spec->args, " %s%s", short_name, eq);
  }
}

static gboolean read_spec(const char *name, Spec *spec, GError **error) {
  g_autofree char *help = command_help(name, error);
  if (help == NULL)
    return FALSE;
  g_autofree char *prefix = g_strdup_printf("oakuk %s [", name);
  g_auto(GStrv) lines = g_strsplit(help, "\n", -1);
  for (char **l = lines; *l != NULL; l++) {
    const char *start = *l + strspn(*l, " ");
    if (g_str_has_prefix(start, prefix) && spec->usage == NULL) {
      const char *rest = strchr(start + strlen(prefix), ']');
      spec->usage = g_strdup(rest && rest[1] == ' ' ? rest + 2 : "");
    } else if (start != *l && *start == '-') {
      parse_option_line(start, spec);
    }
  }
  return TRUE;
}

static const char *const script[] = {
    "_oakuk_reply() {\n"
    "  local cur=$1 w cut=\"\"\n"
    "  shift\n"
    "  COMPREPLY=()\n"
    "  for w in \"$@\"; do [[ $w == \"$cur\"* ]] && COMPREPLY+=(\"$w\"); done\n"
    "  # bash replaces only what follows the last ':' of the word (COMP_WORDBREAKS): drop what precedes it\n"
    "  [[ $COMP_WORDBREAKS == *:* && $cur == *:* ]] && cut=${cur%\"${cur##*:}\"}\n"
    "  if [[ -n $cut ]]; then\n"
    "    for w in \"${!COMPREPLY[@]}\"; do COMPREPLY[w]=${COMPREPLY[w]#\"$cut\"}; done\n"
    "  fi\n"
    "}\n"
    "\n"
    "_oakuk_files() {\n"
    "  mapfile -t -O \"${#COMPREPLY[@]}\" COMPREPLY < <(compgen -f -- \"$1\")\n"
    "}\n"
    "\n"
    "_oakuk_contexts() {\n"
    "  \"${COMP_WORDS[0]:-oakuk}\" context list -o name 2>/dev/null\n"
    "}\n"
    "\n"
    "# The argument name of option $2 of command $1; nothing when it takes none.\n"
    "_oakuk_meta() {\n"
    "  local a list=\"--context=NAME\"\n"
    "  [[ -n $1 ]] && list+=\" ${_oakuk_args[$1]:-}\"\n"
    "  for a in $list; do\n"
    "    if [[ ${a%%=*} == \"$2\" ]]; then\n"
    "      echo \"${a#*=}\"\n"
    "      return\n"
    "    fi\n"
    "  done\n"
    "}\n"
    "\n"
    "# Completes the value $3 of option $2 of command $1.\n"
    "_oakuk_value() {\n"
    "  local meta\n"
    "  meta=$(_oakuk_meta \"$1\" \"$2\")\n"
    "  if [[ $2 == --context ]]; then\n"
    "    _oakuk_reply \"$3\" $(_oakuk_contexts)\n"
    "    return\n"
    "  fi\n"
    "  case $meta in\n"
    "  FORMAT) _oakuk_reply \"$3\" json yaml wide $([[ $1 == context ]] && echo name) ;;\n"
    "  *FILE* | *PATH* | *DIR*) COMPREPLY=() && _oakuk_files \"$3\" ;;\n"
    "  *) COMPREPLY=() ;;\n"
    "  esac\n"
    "}\n"
    "\n"
    "# Completes positional argument $2 of command $1 after the positional arguments $3...: the words\n"
    "# its usage line allows there (alternatives separated by \" | \", choices by \"|\", NAME... repeats).\n"
    "_oakuk_positional() {\n"
    "  local cmd=$1 cur=$2 lit='^[a-z][a-z0-9-]*(\\|[a-z][a-z0-9-]*)*$'\n"
    "  shift 2\n"
    "  local -a typed=(\"$@\") alts raw toks cands=()\n"
    "  local k=${#typed[@]} alt tok j ok files=\"\"\n"
    "  local usage=${_oakuk_usage[$cmd]:-}\n"
    "  mapfile -t alts <<<\"${usage// | /$'\\n'}\"\n"
    "  for alt in \"${alts[@]}\"; do\n"
    "    read -ra raw <<<\"$alt\"\n"
    "    toks=()\n"
    "    for ((j = 0; j < ${#raw[@]}; j++)); do\n"
    "      case ${raw[j]} in\n"
    "      \\[*) ;;\n"
    "      -*) [[ ${raw[j + 1]:-} == [A-Z]* ]] && ((j++)) ;;\n"
    "      *) toks+=(\"${raw[j]}\") ;;\n"
    "      esac\n"
    "    done\n"
    "    ok=1\n"
    "    for ((j = 0; j <= k; j++)); do\n"
    "      tok=${toks[j]:-}\n"
    "      [[ -z $tok && ${#toks[@]} -gt 0 && ${toks[-1]} == *... ]] && tok=${toks[-1]}\n"
    "      if [[ -z $tok ]]; then\n"
    "        ok=0\n"
    "        break\n"
    "      fi\n"
    "      if ((j < k)) && [[ $tok =~ $lit && \"|$tok|\" != *\"|${typed[j]}|\"* ]]; then\n"
    "        ok=0\n"
    "        break\n"
    "      fi\n"
    "    done\n"
    "    ((ok)) || continue\n"
    "    if [[ $tok =~ $lit ]]; then\n"
    "      cands+=(${tok//|/ })\n"
    "    elif [[ $cmd == context && $tok == NAME* ]]; then\n"
    "      cands+=($(_oakuk_contexts))\n"
    "    elif [[ $tok == *FILE* || $tok == *.json* || $tok == IMAGE* ]]; then\n"
    "      files=1\n"
    "    fi\n"
    "  done\n"
    "  _oakuk_reply \"$cur\" \"${cands[@]}\"\n"
    "  [[ -z $files ]] || _oakuk_files \"$cur\"\n"
    "}\n"
    "\n"
    "_oakuk() {\n"
    "  # The line up to the cursor, split on blanks only: '=' and ':' stay in their words.\n"
    "  local line=${COMP_LINE:0:COMP_POINT} cur=\"\" cmd=\"\" prev=\"\" w i\n"
    "  local -a words pos=()\n"
    "  read -ra words <<<\"$line\"\n"
    "  if [[ $line != *[[:space:]] && ${#words[@]} -gt 1 ]]; then\n"
    "    cur=${words[-1]}\n"
    "    unset 'words[-1]'\n"
    "  fi\n"
    "  for ((i = 1; i < ${#words[@]}; i++)); do\n"
    "    w=${words[i]}\n"
    "    if [[ -z $cmd ]]; then\n"
    "      case $w in\n"
    "      --context) ((i++)) ;;\n"
    "      -*) ;;\n"
    "      *) cmd=$w ;;\n"
    "      esac\n"
    "    elif [[ $w == -* ]]; then\n"
    "      [[ $w != *=* && -n $(_oakuk_meta \"$cmd\" \"$w\") ]] && ((i++))\n"
    "    else\n"
    "      pos+=(\"$w\")\n"
    "    fi\n"
    "  done\n"
    "  ((${#words[@]} > 1)) && prev=${words[-1]}\n"
    "  if [[ $cur == -*=* ]]; then\n"
    "    _oakuk_value \"$cmd\" \"${cur%%=*}\" \"${cur#*=}\"\n"
    "  elif [[ $prev == -* && $prev != *=* && -n $(_oakuk_meta \"$cmd\" \"$prev\") ]]; then\n"
    "    _oakuk_value \"$cmd\" \"$prev\" \"$cur\"\n"
    "  elif [[ -z $cmd ]]; then\n"
    "    _oakuk_reply \"$cur\" \"${_oakuk_commands[@]}\" --context --help --version\n"
    "  elif [[ $cur == -* ]]; then\n"
    "    _oakuk_reply \"$cur\" ${_oakuk_opts[$cmd]:-}\n"
    "  else\n"
    "    _oakuk_positional \"$cmd\" \"$cur\" \"${pos[@]}\"\n"
    "  fi\n"
    "}\n"
    "complete -F _oakuk oakuk\n"};

static void print_array_entry(const char *name, const char *value) {
  g_autofree char *q = g_shell_quote(value);
  printf("  [%s]=%s\n", name, q);
}

int oakuk_cmd_completion(int argc, char **argv) {
  GOptionEntry entries[] = {NO_ENTRY};
  if (!oak_parse("completion", "bash",
                 "Print a bash completion script for oakuk: source <(oakuk completion bash), or save it as "
                 "/etc/bash_completion.d/oakuk.",
                 entries, &argc, &argv))
    return OAKUK_CLI_USAGE;
  if (argc != 2 || strcmp(argv[1], "bash") != 0) {
    fprintf(stderr, "oakuk completion: %s\n",
            argc == 2 ? "only bash is supported" : "expected the shell: oakuk completion bash");
    return OAKUK_CLI_USAGE;
  }
  g_autoptr(GPtrArray) specs = g_ptr_array_new();
  g_autoptr(GString) names = g_string_new(NULL);
  for (size_t i = 0; oakuk_cli_command_name(i) != NULL; i++) {
    const char *name = oakuk_cli_command_name(i);
    Spec *spec = g_new0(Spec, 1);
    spec->opts = g_string_new(NULL);
    spec->args = g_string_new(NULL);
    g_autoptr(GError) error = NULL;
    if (!read_spec(name, spec, &error))
      fprintf(stderr, "oakuk completion: %s --help: %s; its options are left out\n", name, error->message);
    g_ptr_array_add(specs, spec);
    g_string_append_printf(names, "%s%s", names->len ? " " : "", name);
  }
  printf("# bash completion for oakuk, made by `oakuk completion bash` (oakuk %s)\n", OAKUK_CLI_VERSION);
  printf("_oakuk_commands=(%s)\n", names->str);
  static const char *const arrays[] = {"_oakuk_opts", "_oakuk_args", "_oakuk_usage"};
  for (size_t a = 0; a < G_N_ELEMENTS(arrays); a++) {
    printf("declare -gA %s=(\n", arrays[a]);
    for (guint i = 0; i < specs->len; i++) {
      Spec *spec = specs->pdata[i];
      const char *value = a == 0        ? spec->opts->str
                          : a == 1      ? spec->args->str
                          : spec->usage ? spec->usage
                                        : "";
      print_array_entry(oakuk_cli_command_name(i), value);
    }
    printf(")\n");
  }
  for (size_t i = 0; i < G_N_ELEMENTS(script); i++)
    fputs(script[i], stdout);
  for (guint i = 0; i < specs->len; i++) {
    Spec *spec = specs->pdata[i];
    g_string_free(spec->opts, TRUE);
    g_string_free(spec->args, TRUE);
    g_free(spec->usage);
    g_free(spec);
  }
  return OAKUK_CLI_OK;
}
