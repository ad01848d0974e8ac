"""What the fleet scripts share (fleet.py, rolling_restart.py, redis_outage.py): failing
with one clear line, free loopback ports, waiting with a deadline (for a port, for a
kefu node to be ready), starting a kefu node and stopping it with SIGTERM.

Not run by itself; the scripts import it from their own directory (Python puts a
script's directory first on its module path).
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def failer(name):
    """A `fail(message)` that prints `NAME: FAILED: message` and exits with status 1."""

    def fail(message):
        print(f"{name}: FAILED: {message}", flush=True)
        sys.exit(1)

    return fail


def free_port():
    """A TCP port free on 127.0.0.1 now (the OS's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, deadline_s, step=0.05):
    """Whether `predicate()` became true within `deadline_s` seconds, asked every `step`."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def listening(port):
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_port(port, deadline_s):
    """Whether 127.0.0.1:`port` accepted a connection within `deadline_s` seconds."""
    return wait_for(lambda: listening(port), deadline_s)


def ready(port):
    """Whether the kefu node on 127.0.0.1:`port` answers `/readyz` with 200 (it binds its
    port before it has loaded its rules, and answers 503 `starting` until then)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def wait_ready(port, deadline_s):
    """Whether the kefu node on 127.0.0.1:`port` became ready within `deadline_s` seconds."""
    return wait_for(lambda: ready(port), deadline_s)


def start_kefu(args, log_path, **env):
    """Starts `args` (a `kefu serve` command line) with its stderr in `log_path` and `env`
    added to the environment; an admin token inherited from the caller's environment is
    dropped, so the node's admin routes answer the script from loopback."""
    environment = dict(os.environ, **env)
    environment.pop("KEFU_ADMIN_TOKEN", None)
    with open(log_path, "w") as err:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=environment)


def stop_within(proc, deadline_s):
    """SIGTERM, then whether `proc` ended within `deadline_s` seconds (killed if not)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=deadline_s)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        return False
