"""An HTTP handler that relays every request to an upstream server: the base of the fault proxy in
tests/test_remote.py, in front of the S3 test server."""
import http.client
import http.server


class Relay(http.server.BaseHTTPRequestHandler):
    """Relays each request to `upstream` and its reply back; `intercept` may answer a request itself."""
    protocol_version = "HTTP/1.1"
    upstream: tuple = ()
    timeout_s = 30.0

    def log_message(self, *args):
        pass

    def intercept(self) -> bool:
        """Runs after the request's body was read; True: this request was answered here, not relayed."""
        return False

    def _relay(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.intercept():
            return
        conn = http.client.HTTPConnection(*self.upstream, timeout=self.timeout_s)
        conn.request(self.command, self.path, body=body, headers=dict(self.headers))
        reply = conn.getresponse()
        data = reply.read()
        self.send_response(reply.status)
        for k, v in reply.getheaders():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _relay
