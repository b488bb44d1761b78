/* `switchyard ctl`: a command-line client of the admin API. Runs in its own
 * process and may block (it is not on any loop). */
#ifndef SY_CTL_H
#define SY_CTL_H

/* argv[0] is "ctl". Returns the process exit code: 0 ok, 1 refused or failed,
 * 2 usage. */
int sy_ctl_main(int argc, char **argv, const char *config_path);

/* `switchyard cohort ROUTE USER --live`: asks the running gateway (the config's
 * admin address and token, as ctl does) for the bucket and decision of USER on
 * ROUTE with its live flags (GET /routes/{name}/cohort); USER "-" reads one user
 * per line from stdin. Prints the same line as the offline command, ending in
 * flags=live. Returns 0, 1 when the gateway refused or could not be reached, 2
 * on a bad config. */
int sy_ctl_cohort_live(const char *config_path, const char *route, const char *user);

/* Parses "25", "25%", "2.5%" (percent) or "2500bp" (basis points) into basis
 * points. Returns 0 or -1. */
int sy_ctl_parse_percent(const char *s, int *bp);

#endif
