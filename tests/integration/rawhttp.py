"""Raw-socket HTTP/1.1 helpers for the gateway tests: every read bounded."""
import json
import socket
import time


class Response:
    def __init__(self, status, headers, body, raw_head):
        self.status = status
        self.headers = headers      # list of (lower name, value)
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        for k, v in self.headers:
            if k == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)


class Conn:
    """One client connection; read_response() parses one response."""

    def __init__(self, port, timeout=5.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.s.settimeout(timeout)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.s.sendall(data)

    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_head(self):
        while True:
            while b"\r\n\r\n" not in self.buf:
                self._fill()
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = []
            for l in lines[1:]:
                k, v = l.split(":", 1)
                headers.append((k.strip().lower(), v.strip()))
            if status != 100:
                return status, headers, head

    def read_response(self, head_only=False):
        status, headers, head = self.read_head()
        h = dict(headers)
        body = b""
        if head_only:
            return Response(status, headers, b"", head)
        if h.get("transfer-encoding") == "chunked":
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    self._line()
                    break
                body += self._exact(size)
                self._exact(2)
        elif "content-length" in h:
            body = self._exact(int(h["content-length"]))
        else:
            try:
                while True:
                    self._fill()
            except EOFError:
                pass
            body, self.buf = self.buf, b""
        return Response(status, headers, body, head)

    def iter_chunks(self):
        """After read_head() of a chunked response: yields (time, data) per
        chunk as it arrives; stops at the last chunk or at EOF (yields None)."""
        while True:
            try:
                size = int(self._line().split(b";")[0], 16)
            except EOFError:
                yield time.monotonic(), None
                return
            if size == 0:
                self._line()
                return
            data = self._exact(size)
            self._exact(2)
            yield time.monotonic(), data

    def closed(self, timeout=2.0):
        """True when the server closed the connection within timeout."""
        self.s.settimeout(timeout)
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.s.close()


def request(method, path, body=None, headers=None, host="gw"):
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host]
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    if body is not None:
        lines.append("Content-Type: application/json")
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def sse_events(body):
    """The data payloads of an SSE body, in order."""
    out = []
    for block in body.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                out.append(line[6:])
    return out
