"""The official Dapr Python SDK's pub/sub against a running sidecar: an HTTP app (this script)
answering `/dapr/subscribe`, `publish_event` and `publish_events` (bulk) over gRPC, and a
streaming subscription (`DaprClient.subscribe`) with success and retry answers.

Run by crates/mecha/tests/e2e/python_sdk.rs with DAPR_HTTP_PORT, DAPR_GRPC_PORT, APP_PORT (the
port the sidecar delivers to), PUBSUB (the component) and EXPECT_APP_ID.
Exits 1 on the first failed check.
"""

import json
import os
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dapr.clients import DaprClient

PUBSUB = os.environ.get('PUBSUB', 'pubsub')
APP_PORT = int(os.environ['APP_PORT'])
APP_ID = os.environ['EXPECT_APP_ID']
HTTP = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}"

received = []  # (path, content type, event)
lock = threading.Lock()


def check(name, condition, detail=''):
    print(('ok   ' if condition else 'FAIL ') + name + (f': {detail}' if detail and not condition else ''), flush=True)
    if not condition:
        sys.exit(1)


def fails(name, call, expected):
    try:
        call()
    except Exception as e:  # the SDK raises DaprGrpcError; match on the text
        check(name, expected in str(e), str(e))
        return
    check(name, False, 'no error raised')


class App(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _json(self, value):
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == '/dapr/subscribe':
            self._json([
                {'pubsubname': PUBSUB, 'topic': 'orders', 'route': '/orders'},
                {'pubsubname': PUBSUB, 'topic': 'bulk-topic', 'route': '/bulk'},
            ])
        else:
            self.send_response(404)
            self.end_headers()

    def do_POST(self):
        length = int(self.headers.get('Content-Length', 0))
        event = json.loads(self.rfile.read(length) or b'null')
        with lock:
            received.append((self.path, self.headers.get('Content-Type'), event))
        self._json({'status': 'SUCCESS'})


def at(path):
    with lock:
        return [e for (p, _, e) in received if p == path]


def wait_for(name, condition, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    check(name, False, f'timed out; received: {received}')


server = ThreadingHTTPServer(('127.0.0.1', APP_PORT), App)
threading.Thread(target=server.serve_forever, daemon=True).start()


def sidecar_ready():
    try:
        return urllib.request.urlopen(f'{HTTP}/v1.0/healthz', timeout=1).status == 204
    except Exception:
        return False


wait_for('sidecar ready with subscriptions', sidecar_ready, timeout=30)

with DaprClient() as d:
    # Single publish (gRPC PublishEvent) to a programmatic subscription of the HTTP app.
    d.publish_event(PUBSUB, 'orders', json.dumps({'orderId': 7}), data_content_type='application/json')
    wait_for('the app receives the published order', lambda: len(at('/orders')) == 1)
    ev = at('/orders')[0]
    check('data is the published JSON', ev['data'] == {'orderId': 7}, ev)
    check('source is the publishing app id', ev['source'] == APP_ID, ev)
    check('topic and pubsubname', ev['topic'] == 'orders' and ev['pubsubname'] == PUBSUB, ev)
    check('datacontenttype', ev['datacontenttype'] == 'application/json', ev)
    check('specversion and type', ev['specversion'] == '1.0' and ev['type'] == 'com.dapr.event.sent', ev)
    with lock:
        ct = [c for (p, c, _) in received if p == '/orders'][0]
    check('delivered as application/cloudevents+json', ct == 'application/cloudevents+json', ct)

    # Bulk publish (gRPC BulkPublishEvent).
    r = d.publish_events(PUBSUB, 'bulk-topic', [json.dumps({'n': i}) for i in range(5)],
                         data_content_type='application/json')
    check('bulk publish has no failed entries', len(r.failed_entries) == 0, r.failed_entries)
    wait_for('the app receives every bulk event', lambda: len(at('/bulk')) == 5)
    check('bulk events carry their data', sorted(e['data']['n'] for e in at('/bulk')) == list(range(5)))

    # Errors.
    fails('unknown pubsub', lambda: d.publish_event('no-such-pubsub', 't', 'x'), 'not found')

    # Streaming subscription: success, then a retry that comes back.
    sub = d.subscribe(pubsub_name=PUBSUB, topic='stream-topic')
    try:
        d.publish_event(PUBSUB, 'stream-topic', 'hello stream', data_content_type='text/plain')
        m = sub.next_message()
        check('streamed message topic', m.topic() == 'stream-topic', m.topic())
        check('streamed message data', m.data() in ('hello stream', b'hello stream'), repr(m.data()))
        sub.respond_success(m)

        d.publish_event(PUBSUB, 'stream-topic', json.dumps({'again': True}), data_content_type='application/json')
        m = sub.next_message()
        first_id = m.id()
        sub.respond_retry(m)
        m2 = sub.next_message()
        check('a retried message is delivered again', m2.id() == first_id, (first_id, m2.id()))
        check('json data decoded', m2.data() == {'again': True}, repr(m2.data()))
        sub.respond_success(m2)

        # The SDK's metadata object has no subscriptions; read the HTTP metadata API.
        md = json.load(urllib.request.urlopen(f'{HTTP}/v1.0/metadata', timeout=5))
        kinds = {s['topic']: s['type'] for s in md['subscriptions']}
        check('metadata lists programmatic and streaming subscriptions',
              kinds.get('orders') == 'PROGRAMMATIC' and kinds.get('stream-topic') == 'STREAMING', kinds)
    finally:
        sub.close()

server.shutdown()
print('all pub/sub checks passed', flush=True)
