"""A gRPC app written with the official `dapr-ext-grpc` framework (`dapr.ext.grpc.App`) behind
a real sidecar: topic subscriptions without a route and with a CEL rule (the framework keys
handlers by the route path it registered, or an empty one), and `OnInvoke` through
`invoke_method` on the app's own id.

Run by crates/mecha/tests/e2e/python_sdk.rs with DAPR_HTTP_PORT, DAPR_GRPC_PORT, APP_PORT,
APP_ID and PUBSUB. Exits 1 on the first failed check.
"""

import json
import os
import sys
import threading
import time
import urllib.request

from dapr.clients import DaprClient
from dapr.ext.grpc import App, InvokeMethodRequest, Rule

PUBSUB = os.environ['PUBSUB']
APP_PORT = int(os.environ['APP_PORT'])
APP_ID = os.environ['APP_ID']
HTTP = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}"

received = []
lock = threading.Lock()


def check(name, condition, detail=''):
    print(('ok   ' if condition else 'FAIL ') + name + (f': {detail}' if detail and not condition else ''), flush=True)
    if not condition:
        sys.exit(1)


app = App()


@app.subscribe(pubsub_name=PUBSUB, topic='plain')
def plain(event):
    with lock:
        received.append(('plain', event.type, json.loads(event.data)))


@app.subscribe(pubsub_name=PUBSUB, topic='routed', rule=Rule('event.type == "special"', 1))
def special(event):
    with lock:
        received.append(('special', event.type, json.loads(event.data)))


@app.subscribe(pubsub_name=PUBSUB, topic='routed')
def routed_default(event):
    with lock:
        received.append(('routed-default', event.type, json.loads(event.data)))


@app.method(name='echo')
def echo(request: InvokeMethodRequest):
    return json.dumps({'got': request.text(), 'caller': dict(request.metadata).get('dapr-caller-app-id')})


threading.Thread(target=app.run, args=(APP_PORT,), daemon=True).start()


def wait_for(name, condition, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    check(name, False, f'timed out; received: {received}')


def ready():
    try:
        return urllib.request.urlopen(f'{HTTP}/v1.0/healthz', timeout=1).status == 204
    except Exception:
        return False


wait_for('sidecar ready with the app subscriptions', ready, timeout=30)


def got(kind):
    with lock:
        return [r for r in received if r[0] == kind]


with DaprClient() as d:
    d.publish_event(PUBSUB, 'plain', json.dumps({'n': 1}), data_content_type='application/json')
    wait_for('a subscription without a route reaches its handler', lambda: len(got('plain')) == 1)
    check('the handler sees the data', got('plain')[0][2] == {'n': 1}, got('plain'))

    ce = {'specversion': '1.0', 'id': 's-1', 'source': 'test', 'type': 'special',
          'datacontenttype': 'application/json', 'data': {'n': 2}}
    d.publish_event(PUBSUB, 'routed', json.dumps(ce), data_content_type='application/cloudevents+json')
    d.publish_event(PUBSUB, 'routed', json.dumps({'n': 3}), data_content_type='application/json')
    wait_for('the CEL rule and the default route reach their handlers',
             lambda: len(got('special')) == 1 and len(got('routed-default')) == 1)
    check('rule handler got the special event', got('special')[0][2] == {'n': 2}, got('special'))
    check('default handler got the other event', got('routed-default')[0][2] == {'n': 3}, got('routed-default'))

    r = d.invoke_method(APP_ID, 'echo', data='hello', http_verb='POST')
    v = json.loads(r.data)
    check('OnInvoke answers invoke_method', v['got'] == 'hello', v)
    check('OnInvoke sees the caller', v['caller'] in (APP_ID, [APP_ID]), v)

print('all gRPC app checks passed', flush=True)
