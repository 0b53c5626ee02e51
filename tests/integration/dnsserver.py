"""A DNS server the tests control, for the gateway's DNS backends: UDP and
TCP on one port of 127.0.0.1, threads of the test process, answering A
queries from a dict the test changes as it goes (IPv6 addresses in the
list answer AAAA). Only what the gateway's resolver (c-ares) asks is
handled; the question is echoed byte for byte. A UDP answer longer than
512 bytes is cut to the records that fit, with TC set, as a server
without EDNS does; over TCP it is whole.

    dns = DNSServer()            # dns.port
    dns.set("pool.ig.test", ["127.0.0.2", "127.0.0.3"])
    dns.set("pool.ig.test", None)      # NXDOMAIN
    dns.set("pool.ig.test", [])        # the name exists, no address: NODATA
    dns.mode = "drop"            # "answer" | "drop" (no reply) | "servfail"
                                 # | "drop_a", "drop_aaaa" (no reply to
                                 # A, AAAA queries)
    dns.delay = 0.3              # seconds before each reply
    dns.queries("pool.ig.test")  # A queries seen for the name
    dns.tcp_queries              # queries that came over TCP
    dns.stop()
"""
import socket
import struct
import threading
import time

QTYPE_A = 1
QTYPE_AAAA = 28


class DNSServer:
    def __init__(self):
        self.records = {}
        self.mode = "answer"
        self.delay = 0.0
        self.counts = {}
        self.lock = threading.Lock()
        # one port free for both UDP and TCP
        for _ in range(100):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.sock.close()
                self.tcp.close()
        self.sock.settimeout(0.1)
        self.tcp.listen(16)
        self.tcp.settimeout(0.1)
        self.tcp_queries = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.tcp_thread = threading.Thread(target=self._serve_tcp,
                                           daemon=True)
        self.tcp_thread.start()

    def set(self, name, addrs):
        with self.lock:
            if addrs is None:
                self.records.pop(name.lower(), None)
            else:
                self.records[name.lower()] = list(addrs)

    def queries(self, name):
        with self.lock:
            return self.counts.get(name.lower(), 0)

    def stop(self):
        self.running = False
        self.thread.join(timeout=2)
        self.tcp_thread.join(timeout=2)
        self.sock.close()
        self.tcp.close()

    def _serve_tcp(self):
        while self.running:
            try:
                c, _ = self.tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(c,),
                             daemon=True).start()

    @staticmethod
    def _exact(c, n):
        data = b""
        while len(data) < n:
            chunk = c.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _tcp_conn(self, c):
        c.settimeout(5)
        try:
            while self.running:
                head = self._exact(c, 2)
                if head is None:
                    return
                q = self._exact(c, struct.unpack("!H", head)[0])
                if q is None:
                    return
                with self.lock:
                    self.tcp_queries += 1
                reply = self._reply(q, limit=None)
                if reply is not None:
                    c.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass
        finally:
            c.close()

    def _serve(self):
        while self.running:
            try:
                data, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self._reply(data)
            if reply is None:
                continue
            try:
                self.sock.sendto(reply, peer)
            except OSError:
                pass

    def _reply(self, q, limit=512):
        """The answer to Q after the delay; None: none (dropped, bad)."""
        try:
            reply = self._answer(q, limit)
        except (IndexError, struct.error, UnicodeDecodeError):
            return None
        if reply is not None and self.delay:
            time.sleep(self.delay)
        return reply

    def _answer(self, q, limit=512):
        qid, flags, qdcount = struct.unpack("!HHH", q[:6])
        if flags & 0x8000 or qdcount != 1:
            return None
        i, labels = 12, []
        while q[i] != 0:
            n = q[i]
            labels.append(q[i + 1:i + 1 + n].decode("ascii"))
            i += 1 + n
        qtype, qclass = struct.unpack("!HH", q[i + 1:i + 5])
        question = q[12:i + 5]
        name = ".".join(labels).lower()
        with self.lock:
            if qtype == QTYPE_A:
                self.counts[name] = self.counts.get(name, 0) + 1
            mode = self.mode
            addrs = self.records.get(name)
        if mode == "drop" or (mode == "drop_a" and qtype == QTYPE_A) or \
                (mode == "drop_aaaa" and qtype == QTYPE_AAAA):
            return None
        rcode, answers = 0, []
        if mode == "servfail":
            rcode = 2
        elif addrs is None:
            rcode = 3       # NXDOMAIN
        elif qtype == QTYPE_A:
            answers = [socket.inet_pton(socket.AF_INET, a)
                       for a in addrs if ":" not in a]
        elif qtype == QTYPE_AAAA:
            answers = [socket.inet_pton(socket.AF_INET6, a)
                       for a in addrs if ":" in a]
        rrs = [struct.pack("!HHHIH", 0xC00C, qtype, 1, 1, len(a)) + a
               for a in answers]
        tc = 0
        if limit is not None:
            room = limit - 12 - len(question)
            fit = 0
            while fit < len(rrs) and room >= len(rrs[fit]):
                room -= len(rrs[fit])
                fit += 1
            if fit < len(rrs):
                rrs, tc = rrs[:fit], 0x0200
        head = struct.pack("!HHHHHH", qid, 0x8180 | tc | rcode, 1, len(rrs),
                           0, 0)
        return head + question + b"".join(rrs)
