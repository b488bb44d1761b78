/* `switchyard ctl top`: the dashboard's picture in a terminal, redrawn every
 * second with plain ANSI escapes (no curses): per route its state, cohort,
 * plan and legacy vs new side by side with the last minute as a sparkline;
 * the pools with their active colour, per-colour numbers and endpoints; the
 * newest events. Reads GET /status, /history and /events like the page.
 * Runs in the ctl process (blocking is fine there). */
#ifndef SY_TOP_H
#define SY_TOP_H

/* One admin request, as ctl makes them (handlers/ctl.c): the status (0 on a
 * transport error, said on stderr) and the body (*resp_body, caller-owned). */
typedef int (*sy_top_request_fn)(const char *addr, const char *token, const char *method, const char *path,
                                 const char *body, char **resp_body);

/* Until q, Ctrl-C or SIGTERM; the terminal is put back as it was (cursor,
 * screen, line mode). Returns the exit code: 0, or 1 when the first status
 * could not be read. */
int sy_top_run(const char *addr, const char *token, sy_top_request_fn request);

#endif
