/* A C program using only dsb.h: what a .NET P/Invoke caller does.
 * argv[1] = broker socket; the broker serves "exch01" with limit 3.
 * With argv[2] = "cooldown" the target has release_cooldown = "300ms". */
#include <dsb/dsb.h>
#include <stdio.h>
#include <string.h>

#define CHECK(cond)                                                      \
  do {                                                                   \
    if (!(cond)) {                                                       \
      fprintf(stderr, "%s:%d: CHECK(%s) failed; last error: %s\n", __FILE__, __LINE__, #cond, \
              dsb_last_error());                                         \
      return 1;                                                          \
    }                                                                    \
  } while (0)

/* Released slots cool for 300 ms; confirmed ones are free at once. */
static int Cooldown(const char* socket) {
  dsb_client* c = NULL;
  dsb_permit a, b, none;
  CHECK(dsb_connect(socket, "exch01", "c-test", 5000, &c) == DSB_OK);
  CHECK(dsb_try_acquire(c, &a) == DSB_OK);
  CHECK(dsb_try_acquire(c, &b) == DSB_OK);
  /* A refused connect: report it naming the permit, then release confirmed. */
  CHECK(dsb_report_refusal(c, &b, "53300 too many connections") == DSB_OK);
  CHECK(dsb_report_refusal(c, NULL, NULL) == DSB_OK);
  CHECK(dsb_report_refusal(NULL, &b, NULL) == DSB_E_INVALID_ARGUMENT);
  dsb_release_confirmed(c, &b);
  CHECK(b.word == 0);
  dsb_release_confirmed(c, &b); /* a cleared permit: no-op */
  CHECK(dsb_try_acquire(c, &b) == DSB_OK); /* free at once */
  dsb_release(c, &b);                      /* cools */
  CHECK(dsb_try_acquire(c, &none) == DSB_E_CAPACITY_EXHAUSTED);
  CHECK(dsb_acquire(c, 10000, NULL, &b) == DSB_OK); /* served when the cooldown ends */
  dsb_release_confirmed(c, &a);
  dsb_release_confirmed(c, &b);
  dsb_release_confirmed(NULL, &a);
  dsb_close(c);
  printf("c api cooldown: ok\n");
  return 0;
}

int main(int argc, char** argv) {
  dsb_client* c = NULL;
  dsb_permit a, b, none;
  dsb_cancel* cancel;
  CHECK(argc == 2 || argc == 3);
  if (argc == 3) {
    CHECK(strcmp(argv[2], "cooldown") == 0);
    return Cooldown(argv[1]);
  }
  CHECK(dsb_connect(argv[1], "nope", "c-test", 1000, &c) == DSB_E_UNKNOWN_TARGET);
  CHECK(c == NULL);
  CHECK(strstr(dsb_last_error(), "nope") != NULL);
  CHECK(dsb_connect(NULL, "exch01", NULL, 1000, &c) == DSB_E_INVALID_ARGUMENT);
  /* A broker user that is no user is refused, named; root (the broker) is
   * trusted whatever broker user is named. */
  CHECK(dsb_connect_ex(argv[1], "exch01", "c-test", "no-such-user-dsb9", 1000, &c) ==
        DSB_E_INVALID_ARGUMENT);
  CHECK(strstr(dsb_last_error(), "no-such-user-dsb9") != NULL);
  CHECK(dsb_connect_ex(argv[1], "exch01", "c-test", "0", 5000, &c) == DSB_OK);
  dsb_close(c);
  CHECK(dsb_connect(argv[1], "exch01", "c-test", 5000, &c) == DSB_OK);
  CHECK(dsb_acquire(c, 1000, NULL, &a) == DSB_OK);
  CHECK(dsb_try_acquire(c, &b) == DSB_OK);
  CHECK(dsb_try_acquire(c, &none) == DSB_E_CAPACITY_EXHAUSTED);
  CHECK(none.word == 0);
  CHECK(dsb_acquire(c, 10, NULL, &none) == DSB_E_TIMEOUT);
  CHECK(dsb_should_yield(c, &a) == 0);
  cancel = dsb_cancel_create();
  dsb_cancel_fire(cancel);
  CHECK(dsb_acquire(c, 1000, cancel, &none) == DSB_E_CANCELLED);
  dsb_cancel_destroy(cancel);
  CHECK(strcmp(dsb_strerror(DSB_E_TIMEOUT), "no slot became free before the deadline") == 0);
  dsb_release(c, &a);
  CHECK(a.word == 0);
  dsb_release(c, &a); /* a cleared permit: no-op */
  CHECK(dsb_try_acquire(c, &a) == DSB_OK);
  CHECK(dsb_report_session_limit(c, "MapiExceptionSessionLimit ec=1246") == DSB_OK);
  dsb_release(c, &a);
  dsb_release(c, &b);
  CHECK(dsb_acquire(NULL, 0, NULL, &a) == DSB_E_INVALID_ARGUMENT);
  dsb_close(c);
  dsb_close(NULL);
  printf("c api: ok\n");
  return 0;
}
