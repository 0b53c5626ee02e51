"""A DNS server the tests control, for the gateway's DNS backends: UDP on
127.0.0.1, a thread of the test process, answering A queries from a dict
the test changes as it goes (IPv6 addresses in the list answer AAAA). Only what the gateway's
resolver (libevent's evdns) asks is handled; the question is echoed byte
for byte (evdns randomizes the case of the name and checks it).

    dns = DNSServer()            # dns.port
    dns.set("pool.ig.test", ["127.0.0.2", "127.0.0.3"])
    dns.set("pool.ig.test", None)      # NXDOMAIN
    dns.set("pool.ig.test", [])        # the name exists, no address: NODATA
    dns.mode = "drop"            # "answer" | "drop" (no reply) | "servfail"
                                 # | "drop_a", "drop_aaaa" (no reply to
                                 # A, AAAA queries)
    dns.delay = 0.3              # seconds before each reply
    dns.queries("pool.ig.test")  # A queries seen for the name
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
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

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
        self.sock.close()

    def _serve(self):
        while self.running:
            try:
                data, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                reply = self._answer(data)
            except (IndexError, struct.error, UnicodeDecodeError):
                continue
            if reply is None:
                continue
            if self.delay:
                time.sleep(self.delay)
            try:
                self.sock.sendto(reply, peer)
            except OSError:
                pass

    def _answer(self, q):
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
        head = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(answers),
                           0, 0)
        body = b"".join(struct.pack("!HHHIH", 0xC00C, qtype, 1, 1, len(a)) + a
                        for a in answers)
        return head + question + body
