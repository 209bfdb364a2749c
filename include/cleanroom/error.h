/*
 * cleanroom — error codes and error detail.
 *
 * Every public function returns int: 0 on success, a negative CR_E* code on
 * failure. The list below is the single source of both the codes and
 * cr_strerror(). A cr_error carries a human message naming what was wrong
 * (file, line, field, JSON path) and what to do; it must never carry a match
 * key, a point or a secret.
 */
#ifndef CLEANROOM_ERROR_H
#define CLEANROOM_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CR_NODISCARD __attribute__((warn_unused_result))
#define CR_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CR_NODISCARD
#define CR_PRINTF(a, b)
#endif

/* XX(name, message) */
#define CR_ERRNO_MAP(XX)                                                                           \
  XX(EINVAL, "invalid argument")                                                                   \
  XX(ENOMEM, "out of memory")                                                                      \
  XX(EIO, "input/output error")                                                                    \
  XX(EUSAGE, "usage error")                                                                        \
  XX(ECONFIG, "configuration error")                                                               \
  XX(ETEMPLATE, "template error")                                                                  \
  XX(EDATA, "data error")                                                                          \
  XX(ECRYPTO, "cryptographic failure")                                                             \
  XX(EPROTO, "protocol error")                                                                     \
  XX(EREFUSED, "refused")                                                                          \
  XX(EPEER, "refused by the partner")                                                              \
  XX(ENET, "network error")                                                                        \
  XX(ETIMEDOUT, "timed out")                                                                       \
  XX(ETLS, "TLS error")                                                                            \
  XX(EAUTH, "peer authentication failed")                                                          \
  XX(EINTERNAL, "internal error")

enum {
  CR_OK = 0,
#define CR__ERR_ENUM(name, msg) CR_##name,
  CR__ERR_FIRST = -1000,
  CR_ERRNO_MAP(CR__ERR_ENUM)
#undef CR__ERR_ENUM
      CR__ERR_LAST
};

const char *cr_strerror(int code);
/* The symbolic name ("EPROTO") of a code, for logs and JSON. */
const char *cr_err_name(int code);

#define CR_ERROR_MSG_MAX 1024

typedef struct cr_error {
  int code;
  char msg[CR_ERROR_MSG_MAX];
} cr_error;

/* Sets err (if not NULL) and returns code, so callers can `return cr_error_set(...)`. */
int cr_error_set(cr_error *err, int code, const char *fmt, ...) CR_PRINTF(3, 4);
void cr_error_clear(cr_error *err);
/* Message of err, or cr_strerror(code) when err holds none. */
const char *cr_error_message(const cr_error *err, int code);

#ifdef __cplusplus
}
#endif
#endif
