/* Error codes and messages: one X-macro list in error.h builds both. */
#include "cleanroom/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *cr_strerror(int code) {
  switch (code) {
  case CR_OK:
    return "success";
#define CR__ERR_CASE(name, msg)                                                                    \
  case CR_##name:                                                                                  \
    return msg;
    CR_ERRNO_MAP(CR__ERR_CASE)
#undef CR__ERR_CASE
  default:
    return "unknown error";
  }
}

const char *cr_err_name(int code) {
  switch (code) {
  case CR_OK:
    return "OK";
#define CR__ERR_NAME(name, msg)                                                                    \
  case CR_##name:                                                                                  \
    return #name;
    CR_ERRNO_MAP(CR__ERR_NAME)
#undef CR__ERR_NAME
  default:
    return "EUNKNOWN";
  }
}

int(cr_error_set)(cr_error *err, int code, const char *fmt, ...) {
  if (err != NULL) {
    va_list ap;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return code;
}

void cr_error_clear(cr_error *err) {
  if (err != NULL) {
    err->code = 0;
    err->msg[0] = '\0';
  }
}

const char *cr_error_message(const cr_error *err, int code) {
  if (err != NULL && err->msg[0] != '\0')
    return err->msg;
  return cr_strerror(code);
}
