/* A stand-in for dsb-broker.exe in the MSI install test under Wine
 * (msi.sh wine-install): a service that reports RUNNING, writes its command
 * line to C:\dsb-svc-args.txt (so the test sees the arguments the SCM
 * passed), and stops on STOP or SHUTDOWN. Built with MinGW by the test. */
#include <windows.h>
#include <stdio.h>
static SERVICE_STATUS_HANDLE h;
static SERVICE_STATUS st;
static HANDLE stop_event;
static DWORD WINAPI Handler(DWORD c, DWORD t, LPVOID d, LPVOID x) {
  (void)t; (void)d; (void)x;
  if (c == SERVICE_CONTROL_STOP || c == SERVICE_CONTROL_SHUTDOWN) { SetEvent(stop_event); }
  return NO_ERROR;
}
static void WINAPI Main(DWORD argc, LPSTR* argv) {
  (void)argc; (void)argv;
  FILE* f = fopen("C:\\dsb-svc-args.txt", "w");
  if (f) { fprintf(f, "%s\n", GetCommandLineA()); fclose(f); }
  stop_event = CreateEventA(NULL, TRUE, FALSE, NULL);
  h = RegisterServiceCtrlHandlerExA("dsb-broker", Handler, NULL);
  st.dwServiceType = SERVICE_WIN32_OWN_PROCESS;
  st.dwCurrentState = SERVICE_RUNNING;
  st.dwControlsAccepted = SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN;
  SetServiceStatus(h, &st);
  WaitForSingleObject(stop_event, INFINITE);
  st.dwCurrentState = SERVICE_STOPPED;
  SetServiceStatus(h, &st);
}
int main(void) {
  SERVICE_TABLE_ENTRYA t[] = {{(LPSTR)"dsb-broker", Main}, {NULL, NULL}};
  return StartServiceCtrlDispatcherA(t) ? 0 : 1;
}
