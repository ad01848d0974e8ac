"""What the fleet scripts share (fleet.py, rolling_restart.py, redis_outage.py,
inbox_fleet.py, benches/inbox_load.py): failing with one clear line, free loopback ports,
waiting with a deadline (for a port, for a kefu node to be ready), starting a kefu node
and stopping it with SIGTERM; JSON requests as a signed-in console user, server-sent
event streams read on a thread, percentiles.

Not run by itself; the scripts import it from their own directory (Python puts a
script's directory first on its module path).
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
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


# --- HTTP with a console sign-in, and server-sent events (inbox_fleet.py, benches/inbox_load.py)


class Client:
    """JSON over one keep-alive connection to 127.0.0.1:`port`, as a signed-in console
    user when `cookie` is given (then with the CSRF header on writes) or with the admin
    `token`. Not thread-safe: one per thread. A dropped connection is opened again once."""

    def __init__(self, port, cookie=None, csrf=None, token=None, timeout=10.0):
        self.port, self.cookie, self.csrf, self.token, self.timeout = port, cookie, csrf, token, timeout
        self.conn = None

    def headers(self, method):
        h = {"content-type": "application/json"}
        if self.cookie:
            h["cookie"] = self.cookie
            if method not in ("GET", "HEAD") and self.csrf:
                h["x-csrf-token"] = self.csrf
        if self.token:
            h["authorization"] = f"Bearer {self.token}"
        return h

    def request(self, method, path, body=None):
        """(status, parsed JSON body or None); status 0 when the node could not be reached."""
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                self.conn.request(method, path, body=data, headers=self.headers(method))
                resp = self.conn.getresponse()
                raw = resp.read()
                try:
                    parsed = json.loads(raw) if raw else None
                except ValueError:
                    parsed = None
                return resp.status, parsed
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    return 0, None
        return 0, None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def login(port, name, password):
    """Signs `name` in to the console of the node on `port`: a `Client` carrying the
    session cookie and the CSRF token, or None when the sign-in was refused."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/console/api/login", body=json.dumps({"name": name, "password": password}),
                     headers={"content-type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            return None
        cookie = None
        for header, value in resp.getheaders():
            if header.lower() == "set-cookie" and value.startswith("kefu_session="):
                cookie = value.split(";", 1)[0]
        if not cookie:
            return None
        return Client(port, cookie=cookie, csrf=json.loads(body).get("csrf"))
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


class Event:
    """One server-sent event: its `name` (`message` when the stream named none), `data`
    (parsed JSON, or the raw text when it is not JSON), `id`, and `at`, the monotonic
    clock when its last line arrived."""

    __slots__ = ("name", "data", "id", "at")

    def __init__(self, name, data, id, at):
        self.name, self.data, self.id, self.at = name, data, id, at

    def __repr__(self):
        return f"Event({self.name!r}, {self.data!r}, id={self.id!r})"


class SseStream:
    """A server-sent events stream read by a thread of its own: `GET path` (or a `POST`
    with `body`) on 127.0.0.1:`port` with `headers`. Every event is kept in `events` (or,
    with `keep` false, only handed to `on_event(event)` from the reader thread) and
    `wait_event` waits for one. `names`, when given, are the only events parsed and kept
    (the others are skipped unread, which keeps a reader of a busy stream cheap).
    `status` is the HTTP status once the headers arrived, `ended` is set when the stream
    ended (the server closed it, an error, or `close()`)."""

    def __init__(self, port, path, headers=None, body=None, on_event=None, keep=True, names=None,
                 timeout=40.0):
        self.events = []
        self.status = None
        self.error = None
        self.on_event, self.keep, self.names = on_event, keep, names
        self.cond = threading.Condition()
        self.ended = threading.Event()
        self.opened = threading.Event()
        self.closing = False
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        method = "GET" if body is None else "POST"
        h = {"accept": "text/event-stream"}
        if body is not None:
            h["content-type"] = "application/json"
        h.update(headers or {})
        data = None if body is None else json.dumps(body).encode()
        self.thread = threading.Thread(target=self._run, args=(method, path, data, h), daemon=True)
        self.thread.start()

    def _run(self, method, path, data, headers):
        try:
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
            self.status = resp.status
            self.opened.set()
            if resp.status != 200:
                resp.read()
                return
            name, data_lines, event_id = None, [], None
            while True:
                line = resp.readline()
                if not line:
                    return
                line = line.rstrip(b"\r\n")
                if line:
                    if line.startswith(b":"):
                        continue
                    field, _, value = line.partition(b":")
                    if value.startswith(b" "):
                        value = value[1:]
                    if field == b"event":
                        name = value.decode()
                    elif field == b"data":
                        data_lines.append(value)
                    elif field == b"id":
                        event_id = value.decode()
                    continue
                if data_lines or name:
                    name = name or "message"
                    if self.names is None or name in self.names:
                        raw = b"\n".join(data_lines).decode()
                        try:
                            parsed = json.loads(raw)
                        except ValueError:
                            parsed = raw
                        event = Event(name, parsed, event_id, time.monotonic())
                        if self.on_event:
                            self.on_event(event)
                        if self.keep:
                            with self.cond:
                                self.events.append(event)
                                self.cond.notify_all()
                name, data_lines, event_id = None, [], None
        except Exception as e:  # a broken stream is reported by `error`, never raised in the thread
            if not self.closing:
                self.error = e
        finally:
            self.conn.close()
            self.opened.set()
            self.ended.set()
            with self.cond:
                self.cond.notify_all()

    def wait_event(self, predicate, deadline_s, start=0):
        """The first kept event from index `start` on for which `predicate(event)` holds,
        waiting up to `deadline_s` seconds for it; None if none came (or the stream ended)."""
        deadline = time.monotonic() + deadline_s
        with self.cond:
            i = start
            while True:
                while i < len(self.events):
                    if predicate(self.events[i]):
                        return self.events[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self.ended.is_set():
                    return None
                self.cond.wait(left)

    def close(self):
        """Ends the stream from this side (the socket is shut, as a closed browser tab does;
        the reader thread closes the connection)."""
        self.closing = True
        sock = self.conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.ended.wait(5)


def percentiles(values, points=(50, 90, 99)):
    """`{"p50": .., "p90": .., "p99": .., "max": ..}` of `values` (nearest rank, rounded to
    0.1), or None for none."""
    if not values:
        return None
    ordered = sorted(values)
    out = {}
    for p in points:
        rank = max(1, -(-p * len(ordered) // 100))
        out[f"p{p}"] = round(ordered[rank - 1], 1)
    out["max"] = round(ordered[-1], 1)
    return out


def add_users(kefu, users_file, names, role, password):
    """Adds `names` with `role` and `password` to `users_file` with `kefu users add`;
    returns the error output of the first that failed, or None."""
    pw = users_file + ".pw"
    with open(pw, "w") as f:
        f.write(password + "\n")
    try:
        for name in names:
            done = subprocess.run([kefu, "users", "add", name, "--role", role, "--users", users_file,
                                   "--password-file", pw], capture_output=True, text=True)
            if done.returncode:
                return f"kefu users add {name}: {done.stderr.strip()}"
        return None
    finally:
        os.remove(pw)


def write_console_key(path):
    """A console key file (32 random bytes, mode 0600) that several nodes share, so a
    cookie signed by one is good on the others."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))


def agent_reply(client, session, text):
    """An agent's answer through `client`: `POST /v1/sessions/{id}/reply` with `{"text"}`,
    or `{"message"}` for a server that still names the field so; (status, body)."""
    status, body = client.request("POST", f"/v1/sessions/{session}/reply", {"text": text})
    if status in (400, 422):
        status, body = client.request("POST", f"/v1/sessions/{session}/reply", {"message": text})
    return status, body


def last_line(path):
    """The last non-empty line of the file at `path` (a node's log: why it did not start)."""
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1] if lines else ""
    except OSError:
        return ""
