/* An installed-tree consumer of the C ABI (dsb.h, libdsb): what a C program
 * or a .NET P/Invoke caller does. argv: socket target. Prints dsb_version(),
 * connects, acquires, releases and closes; exit 0 only if all of it worked. */
#include <dsb/dsb.h>
#include <dsb/version.h>
#include <stdio.h>
#include <string.h>

#define CHECK(cond)                                                                      \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      fprintf(stderr, "consumer.c:%d: CHECK(%s) failed; dsb_last_error: %s\n", __LINE__, \
              #cond, dsb_last_error());                                                  \
      return 1;                                                                          \
    }                                                                                    \
  } while (0)

int main(int argc, char** argv) {
  dsb_client* client = NULL;
  dsb_permit permit;
  CHECK(argc == 3);
  printf("dsb_version %s (built with %s)\n", dsb_version(), DSB_VERSION_STRING);
  CHECK(strcmp(dsb_version(), DSB_VERSION_STRING) == 0);
  CHECK(strcmp(dsb_strerror(DSB_E_CONFLICT), "peer or file disagrees") == 0);
  CHECK(dsb_connect(argv[1], argv[2], "install-consumer-c", 10000, &client) == DSB_OK);
  CHECK(dsb_acquire(client, 10000, NULL, &permit) == DSB_OK);
  CHECK(permit.word != 0);
  dsb_release(client, &permit);
  CHECK(permit.word == 0);
  dsb_close(client);
  printf("c consumer: connected, acquired, released, closed\n");
  return 0;
}
