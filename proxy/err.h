/* The small error vocabulary shared by every module.
 *
 * Functions return 0 on success or a negative sy_err_t. SY_EAGAIN means "not now,
 * call again when the fd/buffer is ready"; SY_EDECLINED means "not mine / nothing to
 * do", which is not a failure. Async callbacks receive `const char *err`: NULL on
 * success, otherwise a static string that may be compared by pointer. Callbacks that
 * answer a request carry a sy_err_t and a reason string for people (NULL or static,
 * or valid only during the call where the header says so); only handlers/ turn the
 * error into an HTTP status (sy_http_status_of). */
#ifndef SY_ERR_H
#define SY_ERR_H

typedef enum sy_err {
    SY_OK = 0,
    SY_EAGAIN = -1,
    SY_EDECLINED = -2,
    SY_ENOMEM = -3,
    SY_EINVAL = -4,
    SY_EIO = -5,
    SY_ELIMIT = -6,
    SY_ECLOSED = -7,
    SY_ENOTFOUND = -8,    /* the named thing (route, pool) does not exist */
    SY_ECONFLICT = -9,    /* a compare-and-set lost, or the state forbids it; try again */
    SY_EUNAVAILABLE = -10, /* a dependency (Redis, PostgreSQL) is away or saturated */
} sy_err_t;

#define SY_MUST_USE __attribute__((warn_unused_result))

#define SY_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

const char *sy_err_str(int err);

#endif
