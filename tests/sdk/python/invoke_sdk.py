"""Service invocation with the official Dapr Python SDK and plain grpcio, through two real
sidecars: `invoke_method` over HTTP (the SDK's default) and over gRPC (`InvokeService`) to an
HTTP app, and transparent gRPC proxying (unary, server streaming, bidirectional streaming,
errors) to a gRPC app that serves a service the sidecar does not know.

This script runs both apps: the HTTP app on HTTP_APP_PORT (app id HTTP_APP) and the gRPC app on
GRPC_APP_PORT (app id GRPC_APP); the Rust test started their sidecars and the caller's sidecar
(DAPR_HTTP_PORT / DAPR_GRPC_PORT). Exits 1 on the first failed check.
"""

import json
import os
import queue
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from dapr.clients import DaprClient
from dapr.conf import settings

HTTP_APP = os.environ['HTTP_APP']
GRPC_APP = os.environ['GRPC_APP']
SIDECAR_GRPC = f"127.0.0.1:{os.environ['DAPR_GRPC_PORT']}"


def check(name, condition, detail=''):
    print(('ok   ' if condition else 'FAIL ') + name + (f': {detail}' if detail and not condition else ''), flush=True)
    if not condition:
        sys.exit(1)


class HttpApp(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self):
        length = int(self.headers.get('Content-Length', 0) or 0)
        body = self.rfile.read(length) if length else b''
        out = json.dumps({
            'method': self.command,
            'path': self.path,
            'body': body.decode(),
            'caller': self.headers.get('dapr-caller-app-id'),
            'content_type': self.headers.get('Content-Type'),
        }).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = _answer


def unary(request, context):
    if request == b'fail':
        context.abort(grpc.StatusCode.NOT_FOUND, 'no such thing')
    caller = dict(context.invocation_metadata()).get('dapr-caller-app-id', '')
    return request[::-1] + b'|' + caller.encode()


def server_stream(request, context):
    for i in range(int(request.decode())):
        yield f'item-{i}'.encode()


def bidi(request_iterator, context):
    for msg in request_iterator:
        yield b'echo:' + msg


def serve_grpc(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    identity = {'request_deserializer': None, 'response_serializer': None}
    handler = grpc.method_handlers_generic_handler('mecha.test.Echo', {
        'Unary': grpc.unary_unary_rpc_method_handler(unary, **identity),
        'ServerStream': grpc.unary_stream_rpc_method_handler(server_stream, **identity),
        'Bidi': grpc.stream_stream_rpc_method_handler(bidi, **identity),
    })
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f'127.0.0.1:{port}')
    server.start()
    return server


http_server = ThreadingHTTPServer(('127.0.0.1', int(os.environ['HTTP_APP_PORT'])), HttpApp)
threading.Thread(target=http_server.serve_forever, daemon=True).start()
grpc_server = serve_grpc(int(os.environ['GRPC_APP_PORT']))

channel = grpc.insecure_channel(SIDECAR_GRPC)
md = (('dapr-app-id', GRPC_APP),)
call_unary = channel.unary_unary('/mecha.test.Echo/Unary')

# Wait until both callees are registered and their apps answer.
deadline = time.time() + 30
while True:
    try:
        call_unary(b'ping', metadata=md, timeout=2)
        with DaprClient() as d:
            d.invoke_method(HTTP_APP, 'ready', data='', http_verb='GET')
        break
    except Exception as e:
        if time.time() > deadline:
            check('callees reachable', False, str(e))
        time.sleep(0.2)

with DaprClient() as d:
    r = d.invoke_method(HTTP_APP, 'orders/7', data=json.dumps({'qty': 2}), http_verb='POST',
                        content_type='application/json')
    v = json.loads(r.data)
    check('HTTP invoke_method reaches the app', v['method'] == 'POST' and v['path'] == '/orders/7', v)
    check('body and content type pass through', v['body'] == '{"qty": 2}' and v['content_type'] == 'application/json', v)
    check('callee sees the caller app id', v['caller'] == os.environ['CALLER_APP'], v)
    check('status 200 and JSON answer', r.status_code == 200 and r.content_type.startswith('application/json'), (r.status_code, r.content_type))
    r = d.invoke_method(HTTP_APP, 'search', data='', http_verb='GET', http_querystring=(('q', 'x y'),))
    check('query string passes through', json.loads(r.data)['path'] == '/search?q=x+y', r.data)

settings.DAPR_API_METHOD_INVOCATION_PROTOCOL = 'grpc'
with DaprClient() as d:
    r = d.invoke_method(HTTP_APP, 'over-grpc', data='via InvokeService', http_verb='PUT',
                        content_type='text/plain')
    v = json.loads(r.data)
    check('InvokeService maps to an HTTP call', v['method'] == 'PUT' and v['path'] == '/over-grpc', v)
    check('InvokeService body', v['body'] == 'via InvokeService', v)

# Transparent gRPC proxying.
r = call_unary(b'hello', metadata=md)
check('unary call proxied', r == b'olleh|' + os.environ['CALLER_APP'].encode(), r)
items = list(channel.unary_stream('/mecha.test.Echo/ServerStream')(b'5', metadata=md))
check('server stream proxied', items == [f'item-{i}'.encode() for i in range(5)], items)
echoes = list(channel.stream_stream('/mecha.test.Echo/Bidi')(iter([b'a', b'b', b'c']), metadata=md))
check('bidirectional stream proxied', echoes == [b'echo:a', b'echo:b', b'echo:c'], echoes)
# Ping-pong: each message is sent only after the echo of the previous one came back, so the
# proxy must pass messages on as they come (not wait for the end of the client's stream).
echoed = queue.Queue()


def ping_pong():
    for i in range(3):
        if i > 0:
            try:
                echoed.get(timeout=10)
            except queue.Empty:
                return
        yield f'p{i}'.encode()


pongs = []
try:
    for r in channel.stream_stream('/mecha.test.Echo/Bidi')(ping_pong(), metadata=md, timeout=30):
        pongs.append(r)
        echoed.put(r)
except grpc.RpcError as e:
    pongs.append(str(e.code()))
check('interactive bidirectional stream proxied', pongs == [b'echo:p0', b'echo:p1', b'echo:p2'], pongs)
try:
    call_unary(b'fail', metadata=md)
    check('app error propagates', False, 'no error')
except grpc.RpcError as e:
    check('app error code and message propagate', e.code() == grpc.StatusCode.NOT_FOUND and 'no such thing' in e.details(), (e.code(), e.details()))
try:
    call_unary(b'x')
    check('a call without dapr-app-id is refused', False, 'no error')
except grpc.RpcError as e:
    check('a call without dapr-app-id is UNIMPLEMENTED', e.code() == grpc.StatusCode.UNIMPLEMENTED, e.code())

grpc_server.stop(0)
http_server.shutdown()
print('all invocation checks passed', flush=True)
