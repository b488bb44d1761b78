/* The command line: options, the config sections of every folder, and the
 * commands that do not run the gateway (check, cohort, migrate, ctl). */
#ifndef SY_CLI_H
#define SY_CLI_H

#include "proxy/config.h"

#include <stdbool.h>
#include <stddef.h>

#define SY_VERSION "0.1.0"

/* The config sections owned by folders other than proxy/. */
extern const sy_conf_section_t *const sy_cli_sections[];
extern const size_t sy_cli_nsections;

/* Loads and validates path; errors go to stderr. NULL on error. */
sy_config_t *sy_cli_load(const char *path);

/* `switchyard [run]`: the gateway itself, given by main (wiring). */
typedef int (*sy_cli_run_fn)(const char *config_path, bool takeover, int ready_fd);
/* Parses argv and runs the command; returns the exit status. */
int sy_cli_main(int argc, char **argv, sy_cli_run_fn run);

#endif
