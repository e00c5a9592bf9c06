"""dsb-simserver's line protocol for the Python test drivers (tests/windows/wine_e2e.py,
tests/broker/windows_broker_console.py): one request line on a new TCP connection and its reply
line. (The C++ side is tools/load/line_client.h.)"""

import socket


def line_call(endpoint, line, timeout=10):
    """Sends `line` + "\\n" to `endpoint` ((host, port)) and returns the reply up to its "\\n" (or
    whatever came before the server closed), decoded and stripped. Raises OSError when the
    connection fails or no byte comes within `timeout` seconds."""
    with socket.create_connection(endpoint, timeout=timeout) as s:
        s.sendall((line + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf.decode().strip()
