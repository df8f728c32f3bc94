"""Runs a server that cannot be told which address to listen on, reachable only on loopback.

Started by tests/support/oidc.rs as `unshare --user --map-root-user --net python3 netns_relay.py PORT CMD...`
in a network namespace of its own, whose one interface is loopback: whatever address CMD listens on, nothing
outside this machine can reach it. This script brings the namespace's loopback up, starts CMD, and relays each
connection accepted on file descriptor 3 (a socket the test bound to 127.0.0.1:PORT outside the namespace)
to 127.0.0.1:PORT inside it. It exits when CMD does.
"""

import fcntl
import os
import socket
import struct
import subprocess
import sys
import threading
import time

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def pipe(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def relay(client, port):
    deadline = time.monotonic() + 30
    while True:
        try:
            server = socket.create_connection(("127.0.0.1", port))
            break
        except OSError:
            if time.monotonic() > deadline:
                client.close()
                return
            time.sleep(0.05)
    threading.Thread(target=pipe, args=(server, client), daemon=True).start()
    pipe(client, server)


def main():
    port = int(sys.argv[1])
    loopback_up()
    child = subprocess.Popen(sys.argv[2:])
    threading.Thread(target=lambda: os._exit(child.wait()), daemon=True).start()
    listener = socket.socket(fileno=3)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=relay, args=(client, port), daemon=True).start()


main()
