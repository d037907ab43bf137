"""A chat-completions server of the tests' own on 127.0.0.1, with scripted replies (the HTTP judge's tests)."""

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOX_3 = re.compile(r"<Instruction>(.*)</Instruction>\n<Response>(.*)</Response>\n\nAfter examining", re.DOTALL)


def chat_reply(text) -> tuple[int, dict]:
    return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


class JudgeServer:
    """POST /v1/chat/completions answered by `respond(request_number, body) -> (status, payload)`: a dict is sent
    as JSON, a str as it is. Records every request and the most requests it held at once."""

    def __init__(self):
        self.respond = lambda number, body: chat_reply(body["messages"][0]["content"])
        self.delay_s = 0.0
        self.requests, self.headers, self.in_flight, self.max_in_flight = [], [], 0, 0
        self.lock = threading.Lock()
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/v1"

    def handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    number = len(server.requests)
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay_s(number) if callable(server.delay_s) else server.delay_s)
                    status, payload = (404, {"error": {"message": "no such route"}}) if \
                        self.path != "/v1/chat/completions" else server.respond(number, body)
                    data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (the timeout test)
                    pass
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def log_message(self, *args):  # quiet
                pass

        return Handler

    def judged(self) -> list[tuple[str, str]]:
        """(instruction, response) of every request, read back from its Box-3 prompt."""
        return [BOX_3.search(body["messages"][0]["content"]).groups() for body in self.requests]


def serving():
    """A started JudgeServer, and the function that stops it."""
    judge = JudgeServer()
    thread = threading.Thread(target=judge.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop():
        judge.http.shutdown()
        judge.http.server_close()

    return judge, stop
