/* A C program using only dsb.h and the shipped libdsb.so, whose log sink is
 * its own (not the static library's): dsb_set_log_callback must receive the
 * library's messages, and nothing may reach stderr.
 * argv[1] = broker socket serving "exch01"; argv[2] = seconds to wait.
 * Prints "connected" once registered, then each message the callback gets as
 * "log <level> <message>"; the test kills the broker (SIGKILL) and starts it
 * again. Exits 0 once the callback saw both "lost the connection" and
 * "re-registered" (then closes the client), 1 if not within argv[2] seconds. */
#define _POSIX_C_SOURCE 200809L
#include <dsb/dsb.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct seen {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int lost;
  int reregistered;
};

/* Runs on the library's thread; stdout is locked per call by stdio. */
static void OnLog(int32_t level, const char* message, void* context) {
  struct seen* s = (struct seen*)context;
  printf("log %d %s\n", (int)level, message);
  fflush(stdout);
  pthread_mutex_lock(&s->mu);
  if (strstr(message, "lost the connection") != NULL) s->lost = 1;
  if (strstr(message, "re-registered") != NULL) s->reregistered = 1;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

int main(int argc, char** argv) {
  static struct seen s = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
  dsb_client* c = NULL;
  struct timespec deadline;
  int done;
  if (argc != 3) {
    printf("usage: c_log_callback_prog SOCKET SECONDS\n");
    return 2;
  }
  dsb_set_log_callback(&OnLog, &s);
  if (dsb_connect(argv[1], "exch01", "c-log", 10000, &c) != DSB_OK) {
    printf("connect failed: %s\n", dsb_last_error());
    return 1;
  }
  printf("connected\n");
  fflush(stdout);
  /* pthread_cond_timedwait measures CLOCK_REALTIME by default. */
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += atoi(argv[2]);
  pthread_mutex_lock(&s.mu);
  while (!(s.lost && s.reregistered)) {
    if (pthread_cond_timedwait(&s.cv, &s.mu, &deadline) == ETIMEDOUT) break;
  }
  done = s.lost && s.reregistered;
  pthread_mutex_unlock(&s.mu);
  dsb_close(c);
  dsb_set_log_callback(NULL, NULL);
  printf("%s\n", done ? "done" : "timed out waiting for the loss and the re-registration");
  return done ? 0 : 1;
}
