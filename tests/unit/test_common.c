/*
 * common: making outside text safe to print (cr_text_clean), the string
 * array free, and atomic files (nothing under the target's name until
 * commit; abort leaves nothing).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cleanroom/common.h"

static void test_clean_keeps_text(void **state) {
  (void)state;
  char out[64];
  assert_string_equal(cr_text_clean(out, sizeof out, "overlap_by_segment"), "overlap_by_segment");
  /* Valid UTF-8 and tabs stay as they are. */
  assert_string_equal(cr_text_clean(out, sizeof out, "Zürich\tКиїв 東京"), "Zürich\tКиїв 東京");
  assert_string_equal(cr_text_clean(out, sizeof out, NULL), "");
}

static void test_clean_escapes_controls(void **state) {
  (void)state;
  char out[64];
  /* A terminal title escape and a screen clear: no ESC or BEL survives. */
  assert_string_equal(cr_text_clean(out, sizeof out, "\x1b]0;pwned\x07\x1b[2J"),
                      "\\x1b]0;pwned\\x07\\x1b[2J");
  assert_string_equal(cr_text_clean(out, sizeof out, "a\r\nb\x7f"), "a\\x0d\\x0ab\\x7f");
  /* C1 controls (U+0080..U+009F, e.g. CSI U+009B) too. */
  assert_string_equal(cr_text_clean(out, sizeof out,
                                    "x\xc2\x9b"
                                    "2J"),
                      "x\\x9b2J");
  /* Bidirectional controls: "Acme\u202e..." must not print reversed. The
   * first and last of each range, and U+061C, U+200E, U+200F. */
  assert_string_equal(cr_text_clean(out, sizeof out, "Acme\xe2\x80\xaeliame"), "Acme\\u202eliame");
  assert_string_equal(cr_text_clean(out, sizeof out, "\xe2\x80\xaa\xe2\x81\xa6\xe2\x81\xa9"),
                      "\\u202a\\u2066\\u2069");
  assert_string_equal(cr_text_clean(out, sizeof out, "\xd8\x9c\xe2\x80\x8e\xe2\x80\x8f"),
                      "\\u061c\\u200e\\u200f");
  /* Their neighbours are ordinary text (U+202F, U+2065, U+061B). */
  assert_string_equal(cr_text_clean(out, sizeof out, "\xe2\x80\xaf\xe2\x81\xa5\xd8\x9b"),
                      "\xe2\x80\xaf\xe2\x81\xa5\xd8\x9b");
}

static void test_clean_replaces_invalid_utf8(void **state) {
  (void)state;
  char out[64];
  assert_string_equal(cr_text_clean(out, sizeof out, "bad\xff\xfename"),
                      "bad\xef\xbf\xbd\xef\xbf\xbdname");
  /* Overlong, surrogate, above U+10FFFF, truncated sequences. */
  assert_string_equal(cr_text_clean(out, sizeof out, "\xc0\xaf"), "\xef\xbf\xbd\xef\xbf\xbd");
  assert_string_equal(cr_text_clean(out, sizeof out, "\xed\xa0\x80"),
                      "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  assert_string_equal(cr_text_clean(out, sizeof out, "\xf4\x90\x80\x80"),
                      "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  assert_string_equal(cr_text_clean(out, sizeof out, "end\xe2\x82"), "end\xef\xbf\xbd\xef\xbf\xbd");
}

static void test_clean_truncates_on_boundary(void **state) {
  (void)state;
  char out[6];
  /* "ab" + "é" (2 bytes) + "é" would need 7 bytes with the NUL. */
  assert_string_equal(cr_text_clean(out, sizeof out, "ab\xc3\xa9\xc3\xa9"), "ab\xc3\xa9");
  char tiny[4];
  /* An escape is never cut in half. */
  assert_string_equal(cr_text_clean(tiny, sizeof tiny, "\x1b"), "");
}

static void test_atomic_file(void **state) {
  (void)state;
  char dir[] = "/tmp/cr_test_common_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[128];
  snprintf(path, sizeof path, "%s/out.csv", dir);
  cr_error err;
  cr_atomic_file f;
  assert_int_equal(cr_atomic_open(&f, path, 0600, &err), 0);
  assert_int_equal(cr_atomic_write(&f, "a,b\r\n", 5, &err), 0);
  /* Nothing under the target's name before the commit. */
  assert_int_equal(access(path, F_OK), -1);
  assert_int_equal(cr_atomic_commit(&f, &err), 0);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal((int)st.st_size, 5);
  assert_int_equal(st.st_mode & 0777, 0600);

  /* Abort: the target keeps its old contents, no temporary file remains. */
  assert_int_equal(cr_atomic_open(&f, path, 0600, &err), 0);
  assert_int_equal(cr_atomic_write(&f, "x", 1, &err), 0);
  cr_atomic_abort(&f);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal((int)st.st_size, 5);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 1", dir);
  assert_int_equal(system(cmd), 0);

  /* A directory that does not exist: a clear error naming the file. */
  char bad[160];
  snprintf(bad, sizeof bad, "%s/missing/out.csv", dir);
  assert_int_equal(cr_atomic_open(&f, bad, 0600, &err), CR_EIO);
  assert_non_null(strstr(err.msg, "missing/out.csv"));
  assert_int_equal(cr_file_write_atomic(bad, "x", 1, 0644, &err), CR_EIO);

  assert_int_equal(unlink(path), 0);
  assert_int_equal(rmdir(dir), 0);
}

static void test_strv_free(void **state) {
  (void)state;
  char **v = calloc(3, sizeof *v);
  assert_non_null(v);
  v[0] = strdup("a");
  v[1] = strdup("b");
  v[2] = NULL;
  cr_strv_free(v, 3); /* NULL entries are fine; ASan checks nothing leaks */
  cr_strv_free(NULL, 5);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_clean_keeps_text),
      cmocka_unit_test(test_clean_escapes_controls),
      cmocka_unit_test(test_clean_replaces_invalid_utf8),
      cmocka_unit_test(test_clean_truncates_on_boundary),
      cmocka_unit_test(test_atomic_file),
      cmocka_unit_test(test_strv_free),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
